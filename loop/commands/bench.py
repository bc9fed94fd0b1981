"""`evalloop bench`: standard benchmarks through lm-eval (cached), optionally against a
second model on the same seeded subsets."""

from __future__ import annotations

import argparse

from loop.commands.common import add_common, print_json
from loop.core.errors import EvalloopError


def make_parser(subparsers) -> argparse.ArgumentParser:
    from loop.core.settings import DEFAULT_MODEL, BenchmarksSettings

    p = subparsers.add_parser("bench", help="ARC, HellaSwag, MMLU, TruthfulQA through lm-eval "
                              "(cached)")
    add_common(p, task=False)
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--tasks", nargs="+", default=None, help="lm-eval task names")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--limit", type=int, default=None, help="fixed seeded subset per task "
                      "([benchmarks] limit)")
    size.add_argument("--seconds", type=float, default=None, metavar="S",
                      help="size each task's seeded subset from a scoring-time budget as a "
                           "cycle does without a limit ([benchmarks] seconds, default "
                           f"{BenchmarksSettings().seconds:g}: evals/benchmark_sizing.py)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the item subsets (default evals.benchmarks.DEFAULT_SEED, "
                        "1234); a cycle uses [cycle] seed (0): with --seed 0 and its --limit "
                        "or --seconds, bench scores the cycle's items and shares their cache")
    p.add_argument("--benchmark-data", default=None, metavar="DIR",
                   help="local JSONL copies in the Hugging Face schemas (offline)")
    p.add_argument("--backend", default="evalloop", choices=["evalloop", "hf", "vllm"],
                   help="evalloop (our model class), hf (lm-eval's HFLM) or vllm (lm-eval's "
                        "VLLM: CUDA and `pip install 'evalloop[gpu]'`)")
    p.add_argument("--compare", default=None, metavar="OTHER",
                   help="a second model: print its values and the deltas (model - other)")
    return p


def run(args: argparse.Namespace) -> int:
    from evals.benchmarks import DEFAULT_SEED, format_table, to_json
    from loop.evaluation.benchmarks import run_benchmarks
    from evals.benchmark_sizing import size_items
    from evals.benchmark_tasks import DEFAULT_TASKS
    from loop.store.db import Store

    if args.limit is not None and args.limit < 1:
        raise EvalloopError(f"--limit must be a positive integer, got {args.limit}.")
    if args.seconds is not None and not args.seconds > 0:
        raise EvalloopError(f"--seconds must be positive, got {args.seconds:g}.")
    seed = DEFAULT_SEED if args.seed is None else args.seed
    if seed < 0:
        raise EvalloopError(f"--seed must be 0 or more, got {seed}.")
    tasks = args.tasks or DEFAULT_TASKS
    # --seconds: the counts a cycle scores without [benchmarks] limit (the same on every machine)
    limit = size_items(tasks, args.seconds) if args.seconds is not None else args.limit
    with Store(args.workspace) as store:
        results = run_benchmarks(store, args.model, tasks, limit, args.benchmark_data,
                                 args.backend, progress=not args.json, seed=seed)
        # The other model runs on the same seeded subsets, so the deltas are paired.
        other = run_benchmarks(store, args.compare, tasks, limit, args.benchmark_data,
                               args.backend, progress=not args.json,
                               seed=seed) if args.compare else None
    if args.json:
        print_json({"results": to_json(results), "compare": to_json(other)} if other is not None
                    else to_json(results))
    else:
        print(format_table(results, other))
    return 0
