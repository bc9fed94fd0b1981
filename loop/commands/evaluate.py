"""`evalloop eval`: generate and score a model on a task split; CI thresholds and a
JUnit report on request (exit 1 when a threshold is missed)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loop.commands.common import add_common, load_task_noting, print_json, protected_outputs


def make_parser(subparsers) -> argparse.ArgumentParser:
    from loop.core.settings import DEFAULT_MODEL

    p = subparsers.add_parser("eval", help="generate and score a model on a task split")
    add_common(p)
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="model name, directory, hub id or BASE+ADAPTER_DIR (default "
                        f"{DEFAULT_MODEL})")
    p.add_argument("--split", default="test", choices=["train", "dev", "test"])
    p.add_argument("--limit", type=int, default=None, help="first N examples of the split")
    p.add_argument("--min-pass-rate", type=float, default=None, metavar="X",
                   help="CI gate: exit 1 when the overall pass rate is below X (0..1)")
    p.add_argument("--min-category-pass-rate", action="append", default=[], metavar="CAT=X",
                   help="CI gate per category, repeatable: exit 1 when CAT's pass rate < X")
    p.add_argument("--junit", default=None, metavar="PATH",
                   help="write a JUnit XML report (one testcase per item) for CI systems")
    p.add_argument("--processes", type=int, default=None, metavar="N",
                   help="generate on N processes (GPUs, or CPU ranks), each a shard of the "
                        "items; default [generation] processes (docs/scale.md)")
    p.add_argument("--backend", default=None, choices=["auto", "hf", "vllm"],
                   help="generation engine: vllm needs CUDA and `pip install 'evalloop[gpu]'`; "
                        "auto picks it when both are there, else hf (default [generation] "
                        "backend)")
    p.add_argument("--shots", type=int, default=None, metavar="K",
                   help="show K train-pool rows as earlier turns (few-shot; default "
                        "[generation] shots)")
    p.add_argument("--shot-selection", default=None, choices=["random", "nearest"],
                   help="random: the same seeded rows for every item; nearest: each item's "
                        "nearest pool rows (default [generation] shot_selection)")
    p.add_argument("--prompt", default=None, metavar="NAME",
                   help="a [[prompts]] variant of the task (system prompt, wording, shots)")
    return p


def run(args: argparse.Namespace) -> int:
    from loop.core.paths import check_output_file
    from loop.evaluation import ci_report
    from loop.evaluation.evaluate import evaluate, format_summary, select
    from loop.evaluation.prompting import resolve_prompt
    from loop.models.backends import resolve_backend
    from loop.models.loading import parse_model_name
    from loop.store.db import Store

    task = load_task_noting(args)
    examples = select(task, args.split, args.limit)  # validate everything before the store
    resolve_backend(args.backend or task.settings.generation.backend)
    prompt = resolve_prompt(task, args.prompt, args.shots, args.shot_selection)
    thresholds = ci_report.parse_thresholds(args.min_pass_rate, args.min_category_pass_rate,
                                            {e.category for e in examples})
    if args.junit:
        check_output_file(Path(args.junit), protected_outputs(args, task), "--junit")
    parse_model_name(args.model)
    with Store(args.workspace) as store:
        summary = evaluate(store, task, args.model, split=args.split, limit=args.limit,
                           progress=not args.json, processes=args.processes,
                           backend=args.backend, prompt=prompt)
        if args.junit:
            from loop.exports import run_item_rows

            ci_report.write_junit(run_item_rows(store, summary.run_id), summary.task,
                                  summary.split, {"run_id": summary.run_id,
                                                  "model": summary.model,
                                                  "model_id": summary.model_id,
                                                  "suite_version": summary.suite_version,
                                                  "pass_rate": f"{summary.pass_rate:.4f}"},
                                  Path(args.junit))
    missed = ci_report.missed(thresholds, summary.pass_rate, summary.n, summary.per_category)
    if args.json:
        print_json({**summary.to_json(), **({"thresholds": {**thresholds.to_json(),
                                                              "missed": missed}}
                                              if thresholds else {})})
    else:
        print(format_summary(summary))
        print(f"\nstored in {Path(args.workspace) / 'evalloop.duckdb'} (run {summary.run_id})")
        if args.junit:
            print(f"JUnit report: {args.junit}")
    for line in missed:
        print(f"evalloop: threshold missed: {line}", file=sys.stderr)
    return ci_report.EXIT_BELOW_THRESHOLD if missed else 0
