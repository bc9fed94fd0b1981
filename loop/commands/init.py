"""`evalloop init DATA`: a task from a team's data as it is, checked on the base model.

    evalloop init tickets.csv --instruction "Classify the ticket." [--test held_out.parquet]
        [--input-col text] [--output-col label] [--out tickets] [--force] [--no-smoke]

Reads the data (CSV, TSV, JSONL, Parquet, a datasets folder), prints what it found (rows,
duplicates, answer kind and labels, the prompt text all rows share, split sizes), writes the task
TOML (loop/data/init_task.py) and scores the base model on SMOKE_ITEMS dev items, so the first
failures show within a minute. `make_parser(subparsers)` registers it; `run(args)` is the
handler.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

SMOKE_ITEMS = 10
SHOWN_FAILURES = 3
CLIP = 100  # characters of an input, reference or prediction shown


def add_arguments(p: argparse.ArgumentParser) -> None:
    from loop.core.settings import DEFAULT_MODEL

    p.add_argument("data", metavar="DATA", help="CSV, TSV, JSONL (.gz), Parquet or a datasets "
                   "folder (a DatasetDict's train, validation and test splits are used)")
    p.add_argument("--test", default=None, metavar="DATA",
                   help="the held-out split, if you have one (else drawn from DATA)")
    p.add_argument("--instruction", default=None, metavar="TEXT",
                   help="what the model is asked, for every row without an instruction")
    p.add_argument("--input-col", default=None, metavar="C", help="the column holding the "
                   "input (default: input, text, question, prompt... whichever is there)")
    p.add_argument("--output-col", default=None, metavar="C", help="the column holding the "
                   "reference answer (default: output, label, answer, target...)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where task.toml goes (default: ./<DATA's name>-task)")
    p.add_argument("--force", action="store_true", help="replace the files of an earlier init")
    p.add_argument("--model", default=None,
                   help=f"the base model, written as [cycle] base_model (default {DEFAULT_MODEL})")
    p.add_argument("--seed", type=int, default=0, help="the seed of the drawn splits")
    p.add_argument("--no-smoke", action="store_true",
                   help=f"skip the {SMOKE_ITEMS}-item evaluation of the base model")
    p.add_argument("--workspace", default=os.environ.get("EVALLOOP_WORKSPACE",
                                                         "evalloop-workspace"),
                   help="where the smoke evaluation is stored (default ./evalloop-workspace)")


def make_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("init", help="a task TOML from your data (CSV, Parquet, JSONL, "
                              "datasets), checked on the base model")
    add_arguments(p)
    return p


def run(args: argparse.Namespace) -> int:
    from loop.data.init_task import check_instruction, plan_task, write_task
    from loop.store.db import protected_paths

    check_instruction(args.instruction)
    data = Path(args.data)
    out = Path(args.out) if args.out else Path(f"{data.name.split('.')[0] or 'data'}-task")
    plan = plan_task(data, Path(args.test) if args.test else None, args.instruction,
                     args.input_col, args.output_col, model=args.model, seed=args.seed)
    for line in plan.summary.lines():
        print(line)
    if not args.instruction and plan.summary.shared_prompt == 0:
        print("note: the prompts share no text: if the model needs to be told what to do, "
              "give --instruction")
    toml = write_task(plan, out, args.force, protected_paths(Path(args.workspace)))
    print(f"wrote {toml}")
    if not args.no_smoke:
        smoke(toml, Path(args.workspace))
    print(f"next: evalloop cycle --task {toml}   then: evalloop app --workspace "
          f"{args.workspace}")
    return 0


def smoke(toml: Path, workspace: Path, n: int = SMOKE_ITEMS) -> None:
    """The base model on the first `n` dev items (test when there is no dev): the summary and
    the first failures with their signatures."""
    from loop.data.tasks import load_task
    from loop.evaluation.evaluate import evaluate, format_summary
    from loop.exports import run_item_rows
    from loop.store.db import Store

    task = load_task(toml)
    split = "dev" if task.splits.get("dev") else "test"
    model = task.settings.cycle.base_model
    print(f"\nsmoke evaluation: {model} on {min(n, len(task.split(split)))} {split} items")
    with Store(workspace) as store:
        summary = evaluate(store, task, model, split=split, limit=n, progress=False)
        failed = [r for r in run_item_rows(store, summary.run_id) if not r["passed"]]
    print(format_summary(summary))
    for row in failed[:SHOWN_FAILURES]:
        print(f"\n  input:      {_clip(row['input'] or row['instruction'])}"
              f"\n  reference:  {_clip(row['reference'])}"
              f"\n  prediction: {_clip(row['prediction'])}"
              f"\n  signatures: {', '.join(row['signatures']) or '-'}")


def _clip(text: str) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= CLIP else text[:CLIP - 3] + "..."
