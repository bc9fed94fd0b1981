"""`evalloop pairs`: preference pairs (DPO) from votes, corrections and failures."""

from __future__ import annotations

import argparse
from pathlib import Path

from loop.commands.common import add_common, load_task_noting, print_json, protected_outputs


def make_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("pairs", help="preference pairs (DPO) from votes, corrections and "
                              "failures, decontaminated, as JSONL + manifest")
    add_common(p)
    p.add_argument("--sources", nargs="+", default=None,
                   help="human judge correction failure (default: all)")
    p.add_argument("--out", default=None, help="directory (default WS/data/TASK/pairs)")
    return p


def run(args: argparse.Namespace) -> int:
    from loop.core.paths import check_output_dir
    from loop.targeted.pairs import SOURCES, build_pairs, format_result
    from loop.store.db import Store

    task = load_task_noting(args)
    if args.out:
        check_output_dir(Path(args.out), protected_outputs(args, task), [args.workspace], "--out")
    with Store(args.workspace) as store:
        result = build_pairs(store, task, sources=args.sources or SOURCES, out_dir=args.out)
    print_json(result.to_json()) if args.json else print(format_result(result))
    return 0
