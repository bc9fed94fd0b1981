"""`evalloop` command line: parse arguments, call library functions, map errors to exit codes.

Exit codes: 0 ok, 2 user error (bad task, data, model, config), 3 store error, 75 locked,
130 interrupted. Nightly cycles add their own (see `evalloop nightly --help`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from loop.errors import EvalloopError, StoreError

DEFAULT_WORKSPACE = "evalloop-workspace"


def _quiet_libraries() -> None:
    """Keep third-party chatter off the terminal; our own progress bars and tables remain."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, default=str, ensure_ascii=False))


# ---------------------------------------------------------------------------- commands

def cmd_eval(args: argparse.Namespace) -> int:
    from loop.evaluate import evaluate, format_summary
    from loop.store import Store
    from loop.tasks import load_task

    task = load_task(args.task)
    with Store(args.workspace) as store:
        summary = evaluate(store, task, args.model, split=args.split, limit=args.limit,
                           progress=not args.json)
    if args.json:
        _print_json(summary.to_json())
    else:
        print(format_summary(summary))
        print(f"\nstored in {Path(args.workspace) / 'evalloop.duckdb'} (run {summary.run_id})")
    return 0


# ---------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    from loop.models import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="evalloop", description="Evaluation-driven LoRA "
                                     "fine-tuning: evaluate, find failures, target, train, gate.")
    parser.add_argument("--verbose", "-v", action="store_true", help="show library logs")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, task: bool = True) -> None:
        if task:
            p.add_argument("--task", required=True, help="task TOML (see README: task format)")
        p.add_argument("--workspace", default=os.environ.get("EVALLOOP_WORKSPACE",
                                                             DEFAULT_WORKSPACE),
                       help="directory holding evalloop.duckdb, adapters and reports "
                            f"(default ./{DEFAULT_WORKSPACE})")
        p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("eval", help="generate and score a model on a task split")
    common(p)
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"model name, directory, hub id or BASE+ADAPTER_DIR (default {DEFAULT_MODEL})")
    p.add_argument("--split", default="test", choices=["train", "dev", "test"])
    p.add_argument("--limit", type=int, default=None, help="first N examples of the split")
    p.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        _quiet_libraries()
    try:
        return args.func(args)
    except EvalloopError as exc:
        kind = "store error" if isinstance(exc, StoreError) else "error"
        print(f"evalloop: {kind}: {exc}", file=sys.stderr)
        return 3 if isinstance(exc, StoreError) else exc.exit_code
    except KeyboardInterrupt:
        print("evalloop: interrupted; finished work is kept, rerun to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
