"""`evalloop failures`: the failures of the latest evaluation, by category and cluster."""

from __future__ import annotations

import argparse
import sys

from loop.commands.common import add_common, print_json


def make_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("failures", help="failures of the latest evaluation, by category and "
                              "cluster")
    add_common(p)
    p.add_argument("--model", default=None, help="default: the latest evaluated model")
    p.add_argument("--split", default="test", choices=["train", "dev", "test"])
    return p


def run(args: argparse.Namespace) -> int:
    from loop.failures.stage import failure_summary, format_failures, latest_run
    from loop.models.loading import fingerprint, parse_model_name
    from loop.store.db import Store
    from loop.data.tasks import load_task

    task = load_task(args.task)
    model_id = fingerprint(parse_model_name(args.model)) if args.model else None
    with Store(args.workspace, create=False) as store:
        run_id, note = latest_run(store, task.name, model_id, args.split)
        summary = failure_summary(store, run_id)
    if note:
        print(f"evalloop: note: {note}", file=sys.stderr)
    print_json(summary) if args.json else print(format_failures(summary))
    return 0
