"""Does targeting beat random data? The loop's cycles vs the same number of random pool rows,
same base model, same training settings, chained for several cycles, on each task, in one run.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/targeted_vs_random.py \
        --tasks ../shared/real-tasks/*/task.toml [--cycles 2] [--workspace /tmp/tvr] \
        [--json results.json]

Per task, in a fresh workspace:
  targeted  cycle c is exactly `evalloop cycle --task T` (evaluate the champion on dev, failures,
            targeted data, train, evaluate, arena, benchmarks, gate, report); its stage times
            are printed. Cycle c+1 starts from cycle c's candidate, promoted or not, so both
            arms chain the same way (the gate's decision is printed).
  random    as many rows as cycle c's dataset holds, drawn at random from the pool rows this arm
            has not trained on yet and decontaminated by the same curation rules
            (`loop.targeted.random_pool_rows`), trained from this arm's previous model with the
            task's [training] settings and the same dev split, then evaluated on test.

Printed per task and cycle: test pass rates of base, random and targeted with 95% Wilson
intervals, the paired difference targeted - random with its 95% interval (per-item differences
on the same test items) and the exact McNemar p, and the wall time of each arm.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from loop.core.openmp import wait_briefly  # noqa: E402

wait_briefly()  # before torch loads: how idle OpenMP threads wait


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 0.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference(a: dict[str, bool], b: dict[str, bool]) -> dict:
    """b - a on the items both scored: mean, 95% interval (normal approximation of the per-item
    differences) and the exact McNemar p."""
    from loop.cycle.gate import mcnemar_p

    ids = sorted(set(a) & set(b))
    diffs = [int(b[i]) - int(a[i]) for i in ids]
    n = len(diffs)
    mean = sum(diffs) / n if n else 0.0
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1) if n > 1 else 0.0
    half = 1.96 * math.sqrt(var / n) if n else 0.0
    return {"n": n, "diff": mean, "low": mean - half, "high": mean + half,
            "mcnemar_p": mcnemar_p([a[i] for i in ids], [b[i] for i in ids]),
            "only_b": sum(d > 0 for d in diffs), "only_a": sum(d < 0 for d in diffs)}


@dataclass
class Arm:
    name: str
    model: str
    used: set  # pool row ids this arm has trained on


def _test_outcomes(store, task, model: str) -> dict[str, bool]:
    from loop.evaluation.evaluate import evaluate

    return evaluate(store, task, model, "test", progress=False).outcomes


def _train(store, task, workspace: Path, arm: Arm, data_path: Path, data_hash: str) -> str:
    from loop.models.loading import parse_model_name
    from loop.train.sft import train_for_task

    result = train_for_task(store, task, workspace, model=arm.model, data_path=data_path,
                            dataset_hash=data_hash, progress=False)
    return parse_model_name(arm.model).with_adapter(result.adapter_dir).name


def _targeted_cycle(task_path: Path, workspace: Path, arm: Arm, cycle: int) -> dict:
    """One `evalloop cycle`; the next one starts from its candidate even when the gate kept the
    champion (the bench compares data, not promotion)."""
    from loop.cycle import runstate
    from loop.cycle.run import run_cycle
    from loop.models.loading import fingerprint, parse_model_name
    from loop.store import cycles
    from loop.store.db import Store
    from loop.data.tasks import load_task

    with Store(workspace) as store:  # a rerun of the bench reuses the cycles already done
        done = cycles.finished_cycles(store, load_task(task_path).name)
    reused = len(done) >= cycle
    summary = done[cycle - 1]["summary"] if reused else run_cycle(task_path, workspace,
                                                                  progress=False)
    with Store(workspace) as store:
        ev = cycles.stage_result(store, summary["cycle_id"], "eval_candidate")
        data = cycles.stage_result(store, summary["cycle_id"], "targeted")
        if not summary["gate"]["promote"] and not reused:
            name = summary["candidate"]["name"]
            runstate.set_champion(store, summary["task"], runstate.Champion(
                fingerprint(parse_model_name(name)), name), summary["cycle_id"],
                "bench: chained without promotion")
    arm.model = summary["candidate"]["name"]
    return {"test": ev["candidate_test"]["outcomes"], "base_test": ev["champion_test"]["outcomes"],
            "dev_pass_rate": summary["champion"]["dev"]["pass_rate"],
            "n_data": data["accepted"] + data["replay"], "accepted": data["accepted"],
            "replay": data["replay"], "rejected": data["rejected"],
            "promoted": summary["gate"]["promote"], "stage_times": summary["stage_times"],
            "cycle_id": summary["cycle_id"]}


def write_rows(path: Path, rows) -> Path:
    """Examples as the training JSONL `evalloop train --data` reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"instruction": e.instruction, "input": e.input,
                                        "output": e.output, "category": e.category},
                                       ensure_ascii=False) + "\n" for e in rows))
    return path


def _random_step(store, task, workspace: Path, arm: Arm, cycle: int, n: int, seed: int) -> dict:
    from loop.targeted.stage import random_pool_rows

    rows = random_pool_rows(store, task, n, seed=seed + 1000 * cycle, exclude=arm.used)
    arm.used.update(e.id for e in rows)
    path = write_rows(workspace / "data" / f"tvr-random-{cycle}.jsonl", rows)
    arm.model = _train(store, task, workspace, arm, path, f"random-{cycle}-{seed}")
    return {"n_data": len(rows)}


def run_task(task_path: Path, workspace: Path, cycles: int, seed: int) -> dict:
    """Both arms from the task's [cycle] base_model (the embedded model by default)."""
    from loop.store.db import Store
    from loop.data.tasks import load_task

    task = load_task(task_path)
    model = task.settings.cycle.base_model
    workspace = workspace / task.name
    out: dict = {"task": task.name, "cycles": []}
    targeted, random_arm = Arm("targeted", model, set()), Arm("random", model, set())
    base = None
    for cycle in range(1, cycles + 1):
        t0 = time.perf_counter()
        tstep = _targeted_cycle(task_path, workspace, targeted, cycle)
        t_seconds = time.perf_counter() - t0
        base = base or tstep["base_test"]
        t0 = time.perf_counter()
        with Store(workspace) as store:
            rstep = _random_step(store, task, workspace, random_arm, cycle, tstep["n_data"],
                                 seed)
            r_outcomes = _test_outcomes(store, task, random_arm.model)
        r_seconds = time.perf_counter() - t0
        out["cycles"].append({
            "cycle": cycle,
            "targeted": {**tstep, "seconds": t_seconds, "model": targeted.model},
            "random": {**rstep, "test": r_outcomes, "seconds": r_seconds,
                       "model": random_arm.model},
            "targeted_minus_random": paired_difference(r_outcomes, tstep["test"])})
        print(format_cycle(task.name, base, out["cycles"][-1]), flush=True)
    out["base"] = {"test": base}
    return out


def _rate(outcomes: dict[str, bool]) -> str:
    k, n = sum(outcomes.values()), len(outcomes)
    low, high = wilson(k, n)
    return f"{k / n:6.1%} [{low:5.1%}, {high:5.1%}]"


def format_cycle(name: str, base: dict, cycle: dict) -> str:
    d = cycle["targeted_minus_random"]
    t, r = cycle["targeted"], cycle["random"]
    return "\n".join([
        f"{name} cycle {cycle['cycle']} ({d['n']} test items, {t['n_data']} training rows each)",
        f"  base      {_rate(base)}",
        f"  random    {_rate(r['test'])}   {r['seconds']:7.0f} s",
        f"  targeted  {_rate(t['test'])}   {t['seconds']:7.0f} s   "
        f"(gate: {'promoted' if t['promoted'] else 'kept'}; champion dev "
        f"{t['dev_pass_rate']:.1%}; rejected: {t['rejected']})",
        "  cycle stages: " + ", ".join(f"{k} {v['seconds']:.0f} s"
                                       for k, v in t["stage_times"].items()),
        f"  targeted - random: {d['diff']:+.1%} [{d['low']:+.1%}, {d['high']:+.1%}], "
        f"McNemar p = {d['mcnemar_p']:.3g} ({d['only_b']} items only targeted passes, "
        f"{d['only_a']} only random)"])


def main() -> None:
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", required=True, type=Path)
    parser.add_argument("--cycles", type=int, default=2)
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/evalloop-tvr"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write every figure (and per-item outcomes)")
    args = parser.parse_args()
    results = []
    for path in args.tasks:
        t0 = time.perf_counter()
        results.append(run_task(path, args.workspace, args.cycles, args.seed))
        results[-1]["seconds"] = time.perf_counter() - t0
        print(f"{results[-1]['task']}: {results[-1]['seconds']:.0f} s in all\n", flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
