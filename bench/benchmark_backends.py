"""Time lm-eval's HF backend against the evalloop backend on the same tasks and items.

    nice -n 10 .venv/bin/python bench/benchmark_backends.py --model smollm2-135m-instruct \
        --tasks arc_easy hellaswag:1000 --benchmark-data ../shared/benchmarks

`TASK:N` scores a seeded subset of N documents (the one `evalloop bench --limit N` uses);
a bare task name scores all of it. Both backends see exactly the same requests. Printed per task:
wall time, requests/s, accuracy of each backend, the speed ratio and the largest per-request
log-likelihood difference. Nothing is written to a store.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from lm_eval import simple_evaluate  # noqa: E402

from evals import benchmark_tasks as bt  # noqa: E402
from evals.benchmarks import DEFAULT_SEED  # noqa: E402
from loop.evaluation.benchmarks import make_lm  # noqa: E402


def parse_task(spec: str) -> tuple[str, int | None]:
    name, _, limit = spec.partition(":")
    return name, int(limit) if limit else None


def run_one(lm, manager, name: str, limit: int | None, data_dir: Path | None) -> dict:
    """Evaluate one task on one backend; returns timing, metrics and per-request answers."""
    loaded = bt.load_tasks(manager, name, data_dir)
    plan = bt.plan_samples(loaded["tasks"], limit, DEFAULT_SEED)
    children = {c for kids in loaded.get("group_map", {}).values() for c in kids}
    top = [g for n, g in loaded.get("groups", {}).items() if n not in children] or list(
        loaded["tasks"].values())
    start = time.perf_counter()
    out = simple_evaluate(model=lm, tasks=top, task_manager=manager, samples=plan,
                          log_samples=True, numpy_random_seed=DEFAULT_SEED,
                          torch_random_seed=DEFAULT_SEED, fewshot_random_seed=DEFAULT_SEED)
    wall = time.perf_counter() - start
    entry = out["results"].get(name) or out["groups"].get(name)
    metrics = {k.split(",")[0]: v for k, v in entry.items()
               if "," in k and "_stderr" not in k}
    answers = [tuple(r) for task_samples in out["samples"].values() for s in task_samples
               for r in s["filtered_resps"]]
    return {"wall_s": wall, "requests": len(answers), "metrics": metrics, "answers": answers}


def compare(a: dict, b: dict) -> dict:
    diffs = [abs(float(x[0]) - float(y[0])) for x, y in zip(a["answers"], b["answers"])]
    greedy = sum(x[1] == y[1] for x, y in zip(a["answers"], b["answers"]))
    return {"speedup": a["wall_s"] / b["wall_s"],
            "max_abs_loglik_diff": max(diffs) if diffs else 0.0,
            "mean_abs_loglik_diff": sum(diffs) / len(diffs) if diffs else 0.0,
            "is_greedy_agreement": greedy / max(len(diffs), 1),
            "metric_delta_points": {m: 100 * (b["metrics"][m] - a["metrics"][m])
                                    for m in a["metrics"] if m in b["metrics"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--tasks", nargs="+", default=["arc_easy", "hellaswag:1000"])
    parser.add_argument("--benchmark-data", type=Path, default=None)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    tasks = [parse_task(t) for t in args.tasks]
    data_dir = args.benchmark_data.resolve() if args.benchmark_data else None
    report = {"model": args.model, "tasks": {}}
    with tempfile.TemporaryDirectory() as work:
        manager = bt.task_manager([n for n, _ in tasks], data_dir, Path(work))
        backends = {}
        for backend in ("hf", "evalloop"):
            lm, label, dtype = make_lm(backend, args.model)
            backends[backend] = f"{label} {dtype}"
            for name, limit in tasks:
                report["tasks"].setdefault(f"{name}:{limit or 'full'}", {})[backend] = run_one(
                    lm, manager, name, limit, data_dir)
            del lm
    report["backends"] = backends
    print(f"model {args.model}; hf = {backends['hf']}; evalloop = {backends['evalloop']}")
    print(f"{'task':<22} {'backend':<9} {'requests':>8} {'wall_s':>8} {'req/s':>7}  metrics")
    for task, runs in report["tasks"].items():
        for backend, run in runs.items():
            shown = " ".join(f"{m}={v:.4f}" for m, v in run["metrics"].items())
            print(f"{task:<22} {backend:<9} {run['requests']:>8} {run['wall_s']:>8.1f} "
                  f"{run['requests'] / run['wall_s']:>7.1f}  {shown}")
        runs["comparison"] = compare(runs["hf"], runs["evalloop"])
        c = runs["comparison"]
        deltas = " ".join(f"{m} {d:+.2f}pt" for m, d in c["metric_delta_points"].items())
        print(f"{task:<22} speedup {c['speedup']:.2f}x; max |dloglik| "
              f"{c['max_abs_loglik_diff']:.2e}; is_greedy agreement "
              f"{c['is_greedy_agreement']:.4f}; evalloop - hf: {deltas}")
    if args.json:
        for runs in report["tasks"].values():
            for backend in ("hf", "evalloop"):
                runs[backend].pop("answers")
        args.json.write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
