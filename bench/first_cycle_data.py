"""First-cycle data from the base model: several random draws, answer-class-balanced draws and any
given datasets (e.g. the loop's own targeted data), each trained the same way and scored on the
same test items, in one run.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/first_cycle_data.py \
        --tasks ../shared/real-tasks/*/task.toml [--n 375] [--random-seeds 0 1] \
        [--balanced-power 0.5] [--data TASK=PATH ...] [--workspace /tmp/fcd]

Why: in the first cycle the base model fails nearly every dev item on format, so its failures
say little, and bench/targeted_vs_random.py measured targeting losing to random rows on one
task. This bench asks what a first cycle should train on, and how much of a difference between
two arms is just the draw: two random draws of the same size bound the noise that paired
per-item intervals do not show (they hold the trained models fixed).

Arms (all through the loop's curation: decontaminated against dev, test and benchmarks,
duplicates dropped; `loop.targeted.stage.random_pool_rows`):
  random:S     n pool rows drawn uniformly with seed S
  balanced:S   n pool rows drawn with answer classes in proportion to freq ** power (seed S)
  NAME         a given JSONL (`--data TASK=PATH`, e.g. a cycle's `cycles/<id>/data/<id>.jsonl`)
Each arm trains a LoRA adapter from the task's base model with the task's [training] settings
(`train_for_task`, cached by data hash: a rerun reuses finished arms) and is scored on the whole
test split. Printed: test pass rate with a 95% Wilson interval, and each arm minus random:S0
with its paired 95% interval and exact McNemar p.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from loop.core.openmp import wait_briefly  # noqa: E402

wait_briefly()  # before torch loads: how idle OpenMP threads wait

from targeted_vs_random import (  # noqa: E402
    Arm, _rate, _test_outcomes, _train, paired_difference, write_rows)


def run_task(task_path: Path, workspace: Path, n: int, seeds: list[int], power: float,
             given: dict[str, Path]) -> dict:
    from loop.data.tasks import load_task
    from loop.store.db import Store
    from loop.targeted.stage import random_pool_rows

    task = load_task(task_path)
    ws = workspace / task.name
    base = task.settings.cycle.base_model
    arms: dict[str, Path] = {}
    with Store(ws) as store:
        for seed in seeds:
            arms[f"random:{seed}"] = write_rows(ws / "data" / f"random-{seed}-{n}.jsonl",
                                                 random_pool_rows(store, task, n, seed=seed))
            if power < 1:
                arms[f"balanced:{seed}"] = write_rows(
                    ws / "data" / f"balanced-{power}-{seed}-{n}.jsonl",
                    random_pool_rows(store, task, n, seed=seed, power=power))
        arms.update(given)
        outcomes, out = {}, {"task": task.name, "arms": {}}
        for name, path in arms.items():
            t0 = time.perf_counter()
            model = _train(store, task, ws, Arm(name, base, set()), path,
                           f"fcd-{name}-{path.name}")
            outcomes[name] = _test_outcomes(store, task, model)
            rows = sum(1 for _ in path.open())
            out["arms"][name] = {"rows": rows, "test": outcomes[name],
                                 "seconds": time.perf_counter() - t0}
            print(f"{task.name:<16}{name:<16}{rows:>5} rows  test {_rate(outcomes[name])}",
                  flush=True)
    ref = f"random:{seeds[0]}"
    for name in arms:
        if name != ref:
            d = paired_difference(outcomes[ref], outcomes[name])
            out["arms"][name]["minus_" + ref] = d
            print(f"{task.name:<16}{name:<16} - {ref}: {d['diff']:+.1%} "
                  f"[{d['low']:+.1%}, {d['high']:+.1%}], McNemar p = {d['mcnemar_p']:.2g}",
                  flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", required=True)
    p.add_argument("--n", type=int, default=375, help="rows per arm (default: a cycle's 300 "
                   "targeted rows + 20%% replay)")
    p.add_argument("--random-seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--balanced-power", type=float, default=0.5,
                   help="answer-class exponent of the balanced arms; 1 = no balanced arm")
    p.add_argument("--data", nargs="*", default=[], metavar="TASK=PATH",
                   help="extra arms: a task's name and a training JSONL")
    p.add_argument("--workspace", default="/tmp/first-cycle-data")
    p.add_argument("--json", help="write every arm's outcomes here")
    args = p.parse_args()
    given: dict[str, dict[str, Path]] = {}
    for item in args.data:
        task_name, _, path = item.partition("=")
        if not path or not Path(path).is_file():
            p.error(f"--data wants TASK=PATH with an existing file, got {item!r}")
        given.setdefault(task_name, {})[f"data:{Path(path).stem}"] = Path(path)
    from loop.data.tasks import load_task

    results = []
    for task_path in args.tasks:
        name = load_task(Path(task_path)).name
        results.append(run_task(Path(task_path), Path(args.workspace), args.n,
                                args.random_seeds, args.balanced_power, given.get(name, {})))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
