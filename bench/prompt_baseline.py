"""Step one of the recipe, measured: the model prompted zero-shot against 1-, 4- and 8-shot
prompts (train-pool rows chosen at random or as the nearest by question), per task.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/prompt_baseline.py --limit 20 \
        [--tasks ../shared/real-tasks/*/task.toml] [--shots 1,4,8] [--split test] \
        [--model smollm2-135m-instruct] [--out prompt_baseline.json]

Every arm is `evaluate` with a PromptSetting (loop/evaluation/prompting.py) on the first
--limit items of the split, in a fresh workspace (nothing reused), the model loaded once.
Pass rate is the task's suite; "gen ex/s" is items over the summed generation time of their
batches (decode.py's per-item latency shares, prefix encodes included; embedding the pool for
nearest shots is not); "wall s" is the whole evaluate call. An arm whose prompts exceed the
model's context is reported as such.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from glob import glob
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from loop.core.openmp import wait_briefly  # noqa: E402

wait_briefly()  # before torch loads: how idle OpenMP threads wait

REAL_TASKS = Path(__file__).resolve().parents[2] / "shared/real-tasks"


def arms(shots: list[int]) -> list[tuple[int, str]]:
    return [(0, "random")] + [(k, sel) for sel in ("random", "nearest") for k in shots]


def measure(store, task, lm, model: str, split: str, limit: int, k: int,
            selection: str) -> dict:
    from loop.core.errors import TaskDataError
    from loop.evaluation.evaluate import evaluate, select
    from loop.evaluation.prompting import (PromptSetting, choose_shots, render_prompts,
                                           shot_embedder)
    from loop.store.runs import run_item_rows

    setting = PromptSetting(shots=k, selection=selection, seed=task.settings.generation.shot_seed)
    row = {"task": task.name, "arm": setting.label, "shots": k, "selection": selection}
    items = select(task, split, limit)
    try:
        shots = choose_shots(task, items, setting, shot_embedder(store, setting))
        prompts = render_prompts(lm.tokenizer, task, items, setting, shots)
        t0 = time.perf_counter()
        summary = evaluate(store, task, model, split, limit, progress=False, lm=lm,
                           prompt=setting)
        wall = time.perf_counter() - t0
    except TaskDataError as exc:
        return {**row, "error": str(exc).split(";")[0]}
    gen_s = sum(r["latency_s"] or 0.0 for r in run_item_rows(store, summary.run_id))
    tokens = [len(lm.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    return {**row, "n": summary.n, "pass_rate": summary.pass_rate,
            "examples_per_s": summary.n / gen_s if gen_s else None, "wall_s": wall,
            "prompt_tokens": sum(tokens) / len(tokens)}


def table(rows: list[dict]) -> str:
    lines = ["| task | prompt | n | pass rate | gen ex/s | wall s | prompt tokens |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['task']} | {r['arm']} | | {r['error']} | | | |")
            continue
        rate = f"{r['examples_per_s']:.2f}" if r["examples_per_s"] else "-"
        lines.append(f"| {r['task']} | {r['arm']} | {r['n']} | {r['pass_rate']:.1%} | {rate} | "
                     f"{r['wall_s']:.0f} | {r['prompt_tokens']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from loop.data.tasks import load_task
    from loop.models.loading import load_model
    from loop.store.db import Store

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=sorted(glob(str(REAL_TASKS / "*/task.toml"))))
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=20, help="first N items of each task")
    parser.add_argument("--shots", default="1,4,8")
    parser.add_argument("--workspace", default=None, help="default: a fresh temporary one")
    parser.add_argument("--out", default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)

    lm = load_model(args.model)
    workspace = Path(args.workspace or tempfile.mkdtemp(prefix="prompt-baseline-"))
    rows = []
    with Store(workspace) as store:
        for path in args.tasks:
            task = load_task(path)
            for k, selection in arms([int(s) for s in args.shots.split(",") if s]):
                row = measure(store, task, lm, args.model, args.split, args.limit, k, selection)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    print(f"{args.model}, first {args.limit} {args.split} items per task\n")
    print(table(rows))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
