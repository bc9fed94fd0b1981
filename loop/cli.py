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
    from loop.evaluate import evaluate, format_summary, select
    from loop.models import parse_model_name
    from loop.store import Store
    from loop.tasks import load_task

    task = load_task(args.task)
    select(task, args.split, args.limit)  # validate everything before touching the store
    parse_model_name(args.model)
    with Store(args.workspace) as store:
        summary = evaluate(store, task, args.model, split=args.split, limit=args.limit,
                           progress=not args.json)
    if args.json:
        _print_json(summary.to_json())
    else:
        print(format_summary(summary))
        print(f"\nstored in {Path(args.workspace) / 'evalloop.duckdb'} (run {summary.run_id})")
    return 0


def cmd_failures(args: argparse.Namespace) -> int:
    from loop.failures_stage import failure_summary, format_failures, latest_run
    from loop.models import fingerprint, parse_model_name
    from loop.store import Store
    from loop.tasks import load_task

    task = load_task(args.task)
    model_id = fingerprint(parse_model_name(args.model)) if args.model else None
    with Store(args.workspace) as store:
        summary = failure_summary(store, latest_run(store, task.name, model_id, args.split))
    _print_json(summary) if args.json else print(format_failures(summary))
    return 0


def _print_cycle(summary: dict) -> None:
    champ, cand = summary["champion"], summary["candidate"]
    if summary.get("already_finished"):
        print(f"cycle {summary['cycle_id']} already finished on these inputs (use --force to run "
              "a new one); its summary:")
    print(f"\ntask {summary['task']}, cycle {summary['cycle_id']}")
    print(f"champion : {champ['name']}\ncandidate: {cand['name']}\n")
    print(f"{'test pass rate':<24}{'champion':>10}{'candidate':>11}{'change':>9}")
    for cat, before in champ["test"]["per_category"].items():
        after = cand["test"]["per_category"].get(cat, 0.0)
        print(f"{cat:<24}{before:>10.1%}{after:>11.1%}{after - before:>+9.1%}")
    b, a = champ["test"]["pass_rate"], cand["test"]["pass_rate"]
    print(f"{'overall':<24}{b:>10.1%}{a:>11.1%}{a - b:>+9.1%}")
    for name, delta in summary["benchmark_deltas"].items():
        print(f"benchmark {name:<30}{delta:>+9.3f}")
    gate = summary["gate"]
    print(f"\ngate: {'PROMOTED' if gate['promote'] else 'kept the champion'} "
          f"(McNemar p = {gate['p_value']:.3g})")
    for reason in gate["reasons"]:
        print(f"  [{'ok' if reason['passed'] else 'NO'}] {reason['check']}: {reason['detail']}")
    print(f"\nreport: {summary['report']}")


def cmd_cycle(args: argparse.Namespace) -> int:
    from loop.cycle import run_cycle

    summary = run_cycle(args.task, args.workspace, force=args.force, progress=not args.json)
    _print_json(summary) if args.json else _print_cycle(summary)
    return 0


def cmd_nightly(args: argparse.Namespace) -> int:
    import time

    from loop import nightly
    from loop.cycle import run_cycle

    workspace = Path(args.workspace)
    with nightly.exclusive_lock(workspace):
        log_path = nightly.attach_log_file(workspace)
        logging.getLogger("loop").info("nightly cycle for %s", args.task)
        deadline = time.monotonic() + 60 * args.max_minutes if args.max_minutes else None
        try:
            summary = run_cycle(args.task, workspace, force=True, progress=False,
                                deadline=deadline)
        except nightly.BudgetExceeded:
            raise
        except EvalloopError as exc:
            logging.getLogger("loop").error("cycle failed: %s", exc)
            print(f"evalloop: nightly cycle failed: {exc} (log: {log_path})", file=sys.stderr)
            return nightly.EXIT_FAILED
        logging.getLogger("loop").info("cycle %s done: promote=%s", summary["cycle_id"],
                                       summary["gate"]["promote"])
    _print_json(summary) if args.json else _print_cycle(summary)
    print(f"log: {log_path}")
    return nightly.EXIT_PROMOTED if summary["gate"]["promote"] else nightly.EXIT_KEPT


def cmd_demo(args: argparse.Namespace) -> int:
    from loop.cycle import run_cycle

    task = Path(__file__).resolve().parents[1] / "datasets" / "demo" / "task.toml"
    print(f"evalloop demo: one full cycle of the embedded SmolLM2-135M-Instruct on {task}")
    summary = run_cycle(task, args.workspace, force=args.force, progress=True)
    _print_cycle(summary)
    db = Path(args.workspace).resolve() / "evalloop.duckdb"
    print(f"database: {db}")
    print(f"open the review app: .venv/bin/evalloop app --workspace {args.workspace}")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from loop import runstate
    from loop.models import fingerprint, parse_model_name
    from loop.store import Store
    from loop.tasks import load_task

    task = load_task(args.task)
    champion = runstate.Champion(fingerprint(parse_model_name(args.model)), args.model)
    with Store(args.workspace) as store:
        runstate.set_champion(store, task.name, champion, None, "promoted by hand")
    print(f"champion of {task.name} is now {args.model} ({champion.model_id})")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from loop import runstate
    from loop.errors import ConfigError
    from loop.store import Store
    from loop.tasks import load_task

    task = load_task(args.task)
    with Store(args.workspace) as store:
        history = runstate.champion_history(store, task.name)
        if not history:
            raise ConfigError(f"Task '{task.name}' has no champion history to roll back.")
        previous = history[-2] if len(history) > 1 else None
        if previous is None:
            from loop.cycle import CycleConfig
            from loop.models import fingerprint, parse_model_name

            base = CycleConfig.from_section(task.config.section("cycle")).base_model
            previous = {"model_id": fingerprint(parse_model_name(base)), "model_name": base}
        champion = runstate.Champion(previous["model_id"], previous["model_name"])
        runstate.set_champion(store, task.name, champion, None, "rollback")
    print(f"champion of {task.name} rolled back to {champion.model_name}")
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

    p = sub.add_parser("failures", help="failures of the latest evaluation, by category and "
                       "cluster")
    common(p)
    p.add_argument("--model", default=None, help="default: the latest evaluated model")
    p.add_argument("--split", default="test", choices=["train", "dev", "test"])
    p.set_defaults(func=cmd_failures)

    p = sub.add_parser("cycle", help="run or resume one evaluate-target-train-gate cycle")
    common(p)
    p.add_argument("--force", action="store_true", help="run again even if finished")
    p.set_defaults(func=cmd_cycle)

    p = sub.add_parser("nightly", help="one cycle under a lock, with a time budget and a log; "
                       "exit 0 promoted, 10 kept, 20 failed, 75 locked, 124 over budget")
    common(p)
    p.add_argument("--max-minutes", type=float, default=None, help="time budget")
    p.set_defaults(func=cmd_nightly)

    p = sub.add_parser("demo", help="one full cycle of the embedded model on the demo task")
    common(p, task=False)
    p.add_argument("--force", action="store_true", help="run a new cycle even if one finished")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("promote", help="make a model the task's champion by hand")
    common(p)
    p.add_argument("--model", required=True)
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("rollback", help="restore the previous champion")
    common(p)
    p.set_defaults(func=cmd_rollback)
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
