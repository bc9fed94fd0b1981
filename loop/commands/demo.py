"""`evalloop demo`: one full cycle of the embedded model on the demo task."""

from __future__ import annotations

import argparse
from pathlib import Path

from loop.commands.common import add_common
from loop.commands.cycle import print_cycle


def make_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("demo", help="one full cycle of the embedded model on the demo task")
    add_common(p, task=False)
    p.add_argument("--force", action="store_true", help="run a new cycle even if one finished")
    p.add_argument("--prepare-only", action="store_true",
                   help="print the demo task's path and stop (outside a checkout the task is "
                        "generated into WORKSPACE/demo-task/ first)")
    return p


def run(args: argparse.Namespace) -> int:
    from loop.cycle.run import run_cycle

    from loop.data.demo_task import demo_task

    task = demo_task(Path(args.workspace))
    if args.prepare_only:
        print(task)
        return 0
    print(f"evalloop demo: one full cycle of the embedded SmolLM2-135M-Instruct on {task}")
    summary = run_cycle(task, args.workspace, force=args.force, progress=True)
    print_cycle(summary)
    db = Path(args.workspace).resolve() / "evalloop.duckdb"
    print(f"database: {db}")
    print(f"open the review app: .venv/bin/evalloop app --workspace {args.workspace}")
    return 0
