"""Is the loop better than what a team could do without it? Every arm side by side, per task.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/loop_vs_baselines.py \
        [--tasks ../shared/real-tasks/*/task.toml] [--cycles 3] [--seeds 3] \
        [--arms base,pool,random,loop] [--pool-seeds 1] [--workspace /tmp/evalloop-lvb] \
        [--plot lvb.png]

Arms, each in a fresh workspace of its own, all scored on the task's test split:
  base    the base model zero-shot (the first champion; cycle 1 evaluates it on test anyway)
  pool    LoRA on the whole pool with today's defaults, the script a user would write:
          `evalloop train --task T` then `evalloop eval --task T --model BASE+ADAPTER`
          (subprocesses, timed as a user would see them); `--pool-seeds K` trains it again
          with [training] seed = 1..K-1 (in process, the same defaults otherwise): the spread a
          team would see from the seed alone
  random  as many pool rows as the loop's cycle 1 trained on, drawn at random through the same
          curation rules (`random_pool_rows`), one draw per seed with that training seed: the
          spread of a same-size training set
  loop    `evalloop cycle` run 1..C times from the base model; after each cycle the arm's model
          is the champion the gate left (the candidate when promoted, the old champion when not)

Printed per task: test pass rate with its 95% Wilson interval, the paired difference against the
pool arm (per-item differences on the same test items, 95% normal interval, exact McNemar p) and
the cumulative wall time of each arm. `--plot` draws pass rate against cumulative minutes, one
panel per task. Each arm's figures are stored under `WORKSPACE/<task>/<arm>.json` and reused on a
rerun (`--redo loop` runs that arm again, e.g. after a change to the loop).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from loop.core.openmp import wait_briefly  # noqa: E402

wait_briefly()  # before torch loads: how idle OpenMP threads wait

from bench.targeted_vs_random import paired_difference, wilson, write_rows  # noqa: E402

REAL_TASKS = REPO.parent / "shared" / "real-tasks"
ARMS = ("loop", "base", "pool", "random")  # the loop first: its cycle 1 sizes the others


def _cli(*args: str) -> dict:
    """One `evalloop` command as a user runs it; its --json output."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "loop.cli", *args, "--json"], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode not in (0, 1):  # eval exits 1 when a threshold is missed: none is set
        raise RuntimeError(f"evalloop {' '.join(args)} failed ({proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    return json.loads(proc.stdout[proc.stdout.index("{"):])


def _outcomes(workspace: Path, task, model: str) -> dict[str, bool]:
    """Per-item test outcomes of a model whose test run is stored (predictions are reused)."""
    from loop.evaluation.evaluate import evaluate
    from loop.store.db import Store

    with Store(workspace) as store:
        return evaluate(store, task, model, "test", progress=False).outcomes


def loop_arm(task_path: Path, workspace: Path, cycles: int) -> dict:
    from loop.cycle.run import run_cycle

    from loop.data.tasks import load_task
    from loop.store import cycles as cycle_rows

    steps, seconds = [], 0.0
    name = load_task(task_path).name
    for cycle in range(1, cycles + 1):
        with Store_(workspace) as store:  # an interrupted bench reuses the cycles it finished
            done = cycle_rows.finished_cycles(store, name) if (workspace / "evalloop.duckdb"
                                                               ).exists() else []
        if len(done) >= cycle:
            summary = done[cycle - 1]["summary"]
        else:
            summary = run_cycle(task_path, workspace, progress=False)
        # the cycle's own stage times (a resumed stage counts from its last start)
        seconds += sum(v["seconds"] for v in summary["stage_times"].values())
        if steps and summary["cycle_id"] == steps[-1]["cycle_id"]:
            print(f"  loop cycle {cycle}: the same inputs as cycle {cycle - 1} (its candidate was "
                  "kept, nothing changed): no new cycle to run", flush=True)
            break
        with Store_(workspace) as store:
            ev = cycle_rows.stage_result(store, summary["cycle_id"], "eval_candidate")
            data = cycle_rows.stage_result(store, summary["cycle_id"], "targeted")
        promoted = summary["gate"]["promote"]
        champion = ev["candidate_test"] if promoted else ev["champion_test"]
        steps.append({
            "cycle": cycle, "cycle_id": summary["cycle_id"], "promoted": promoted,
            "model": summary["candidate"]["name"] if promoted else summary["champion"]["name"],
            "test": champion["outcomes"], "candidate_test": ev["candidate_test"]["outcomes"],
            "base_test": ev["champion_test"]["outcomes"] if cycle == 1 else None,
            "n_data": data["accepted"] + data["replay"] + data.get("pool_rows", 0),
            "plan": data.get("plan"),
            "train": summary.get("train"), "stage_times": summary["stage_times"],
            "gate_reasons": [r.get("message", r) for r in summary["gate"].get("reasons", [])],
            "seconds": seconds})
        print(f"  loop cycle {cycle}: {'promoted' if promoted else 'kept'}, champion "
              f"{_rate(steps[-1]['test'])}, candidate {_rate(steps[-1]['candidate_test'])}, "
              f"{steps[-1]['n_data']} rows, {seconds / 60:.1f} min", flush=True)
    return {"cycles": steps}


def Store_(workspace: Path):  # noqa: N802 - imported late so --help stays fast
    from loop.store.db import Store

    return Store(workspace)


def base_arm(loop: dict, workspace: Path, task) -> dict:
    first = loop["cycles"][0]
    seconds = first["stage_times"].get("eval_candidate", {}).get("seconds", 0.0) / 3
    return {"model": task.settings.cycle.base_model, "test": first["base_test"],
            "seconds": seconds,
            "note": "the base model's test run from loop cycle 1 (a third of that stage's time)"}


def pool_arm(task_path: Path, workspace: Path, task, seeds: int = 1) -> dict:
    t0 = time.perf_counter()
    trained = _cli("train", "--task", str(task_path), "--workspace", str(workspace))
    t_train = time.perf_counter() - t0
    model = _base_spec(task).with_adapter(trained["adapter_dir"]).name
    _cli("eval", "--task", str(task_path), "--workspace", str(workspace), "--model", model,
         "--split", "test")
    seconds = time.perf_counter() - t0
    return {"model": model, "test": _outcomes(workspace, task, model), "seconds": seconds,
            "train_seconds": t_train, "steps": trained.get("steps_done"),
            "n_data": len(task.split("train")),
            "seed_draws": [_pool_seed(workspace, task, seed) for seed in range(1, seeds)]}


def _pool_seed(workspace: Path, task, seed: int) -> dict:
    """The whole-pool arm again with another training seed (nothing else changed)."""
    from loop.core.settings_load import with_overrides
    from loop.train.methods import train_by_method

    t0 = time.perf_counter()
    with Store_(workspace) as store:
        result = train_by_method(store, task, workspace, model=task.settings.cycle.base_model,
                                 config=with_overrides(task.settings, "training", seed=seed),
                                 progress=False)
    model = _base_spec(task).with_adapter(result.adapter_dir).name
    outcomes = _outcomes(workspace, task, model)
    print(f"  pool seed {seed}: {_rate(outcomes)}, "
          f"{(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    return {"seed": seed, "model": model, "test": outcomes,
            "seconds": time.perf_counter() - t0}


def _base_spec(task):
    from loop.models.loading import parse_model_name

    return parse_model_name(task.settings.cycle.base_model).with_adapter(None)


def random_arm(task, workspace: Path, n: int, seeds: int) -> dict:
    from loop.core.settings_load import with_overrides
    from loop.targeted.stage import random_pool_rows
    from loop.train.sft import train_for_task

    draws = []
    for seed in range(seeds):
        t0 = time.perf_counter()
        with Store_(workspace) as store:
            rows = random_pool_rows(store, task, n, seed=seed)
            path = write_rows(workspace / "data" / f"random-{seed}.jsonl", rows)
            config = with_overrides(task.settings, "training", seed=seed)
            result = train_for_task(store, task, workspace, model=task.settings.cycle.base_model,
                                    data_path=path, dataset_hash=f"random-{n}-{seed}",
                                    config=config, progress=False)
        model = _base_spec(task).with_adapter(result.adapter_dir).name
        outcomes = _outcomes(workspace, task, model)
        draws.append({"seed": seed, "n_data": len(rows), "model": model, "test": outcomes,
                      "seconds": time.perf_counter() - t0})
        print(f"  random seed {seed}: {_rate(outcomes)}, {len(rows)} rows, "
              f"{draws[-1]['seconds'] / 60:.1f} min", flush=True)
    return {"draws": draws}


def run_task(task_path: Path, root: Path, arms: set[str], redo: set[str], cycles: int,
             seeds: int, pool_seeds: int = 1) -> dict:
    from loop.data.tasks import load_task

    task = load_task(task_path)
    out: dict = {"task": task.name, "path": str(task_path)}
    for arm in ARMS:
        needed = arm in arms or (arm == "loop" and arms & {"base", "random"})
        if not needed:  # the loop arm's cycle 1 gives the base arm and sizes the random one
            continue
        stored = root / task.name / f"{arm}.json"
        workspace = root / task.name / arm
        if arm in redo:
            shutil.rmtree(workspace, ignore_errors=True)
            stored.unlink(missing_ok=True)
        if stored.is_file():
            out[arm] = rescore(json.loads(stored.read_text()), workspace, task)
            continue
        print(f"{task.name}: arm {arm}", flush=True)
        if arm == "loop":
            out[arm] = loop_arm(task_path, workspace, cycles)
        elif arm == "base":
            out[arm] = base_arm(out["loop"], workspace, task)
        elif arm == "pool":
            out[arm] = pool_arm(task_path, workspace, task, pool_seeds)
        else:
            out[arm] = random_arm(task, workspace, out["loop"]["cycles"][0]["n_data"], seeds)
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_text(json.dumps(out[arm]))
    return out


def rescore(arm: dict, workspace: Path, task) -> dict:
    """A stored arm's models scored again by today's suite (their predictions are reused), so
    a change to scoring never mixes old and new verdicts in one table."""
    for entry in [arm, *arm.get("draws", []), *arm.get("seed_draws", []),
                  *arm.get("cycles", [])]:
        if entry.get("model") and "test" in entry:
            entry["test"] = _outcomes(workspace, task, entry["model"])
    return arm


# ---------------------------------------------------------------------------- report

def _rate(outcomes: dict[str, bool]) -> str:
    k, n = sum(outcomes.values()), len(outcomes)
    low, high = wilson(k, n)
    return f"{k / n:6.1%} [{low:5.1%}, {high:5.1%}]"


def arm_rows(result: dict) -> list[tuple[str, dict, float]]:
    """(label, test outcomes, cumulative seconds) for every measured arm of a task."""
    rows = []
    if "base" in result:
        rows.append(("base zero-shot", result["base"]["test"], result["base"]["seconds"]))
    for d in result.get("random", {}).get("draws", []):
        rows.append((f"random {d['n_data']} rows, seed {d['seed']}", d["test"], d["seconds"]))
    if "pool" in result:
        rows.append((f"LoRA on the whole pool ({result['pool']['n_data']} rows)",
                     result["pool"]["test"], result["pool"]["seconds"]))
        for d in result["pool"].get("seed_draws", []):
            rows.append((f"  the same, training seed {d['seed']}", d["test"], d["seconds"]))
    for c in result.get("loop", {}).get("cycles", []):
        rows.append((f"loop champion after cycle {c['cycle']}"
                     f"{'' if c['promoted'] else ' (kept)'}", c["test"], c["seconds"]))
    return rows


def format_task(result: dict) -> str:
    pool = result.get("pool", {}).get("test")
    lines = [f"{result['task']}", f"  {'arm':<44}{'test pass [95%]':>24}"
                                  f"{'vs whole pool [paired 95%]':>32}{'McNemar p':>11}{'min':>7}"]
    for label, outcomes, seconds in arm_rows(result):
        versus, p = "", ""
        if pool is not None and outcomes is not pool:
            d = paired_difference(pool, outcomes)
            versus = f"{d['diff']:+.1%} [{d['low']:+.1%}, {d['high']:+.1%}]"
            p = f"{d['mcnemar_p']:.2g}"
        lines.append(f"  {label:<44}{_rate(outcomes):>24}{versus:>32}{p:>11}"
                     f"{seconds / 60:>7.1f}")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.6), squeeze=False)
    for ax, result in zip(axes[0], results):
        def rate(o):
            return 100 * sum(o.values()) / max(len(o), 1)
        if "base" in result:
            ax.scatter([0], [rate(result["base"]["test"])], color="grey", label="base")
        draws = result.get("random", {}).get("draws", [])
        if draws:
            ax.scatter([d["seconds"] / 60 for d in draws], [rate(d["test"]) for d in draws],
                       color="tab:orange", marker="x", label="random draws")
        if "pool" in result:
            ax.scatter([result["pool"]["seconds"] / 60], [rate(result["pool"]["test"])],
                       color="tab:blue", marker="s", s=50, label="whole pool")
        cycles = result.get("loop", {}).get("cycles", [])
        if cycles:
            ax.plot([0] + [c["seconds"] / 60 for c in cycles],
                    [rate(result["base"]["test"]) if "base" in result else 0] +
                    [rate(c["test"]) for c in cycles], color="tab:green", marker="o",
                    label="loop champion")
        ax.set_title(result["task"])
        ax.set_xlabel("cumulative minutes")
        ax.set_ylabel("test pass rate (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", type=Path,
                        default=sorted(REAL_TASKS.glob("*/task.toml")))
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--redo", default="", help="arms to run again (comma-separated)")
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3, help="random draws per task")
    parser.add_argument("--pool-seeds", type=int, default=1,
                        help="whole-pool trainings per task (seeds 0..K-1): its seed spread")
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/evalloop-lvb"))
    parser.add_argument("--plot", type=Path, help="PNG: pass rate against cumulative minutes")
    args = parser.parse_args()
    arms = {a for a in args.arms.split(",") if a}
    unknown = arms - set(ARMS)
    if unknown:
        parser.error(f"unknown arms {sorted(unknown)}; choose from {', '.join(ARMS)}")
    results = []
    for path in args.tasks:
        results.append(run_task(path.resolve(), args.workspace, arms,
                                {a for a in args.redo.split(",") if a}, args.cycles, args.seeds,
                                args.pool_seeds))
        print(format_task(results[-1]) + "\n", flush=True)
    (args.workspace / "results.json").write_text(json.dumps(results))
    if args.plot:
        plot(results, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
