"""The benchmarks stage at its default sizing: what it scores, how long it takes, what it sees.

    HF_HUB_OFFLINE=1 nice -n 19 .venv/bin/python bench/benchmark_sizing.py --workspace W \
        --benchmark-data ../shared/benchmarks \
        --candidate smollm2-135m-instruct+PATH/adapters/A [--seconds 150] [--limit N]

Runs the cycle's benchmarks stage function (`paired_deltas` at `cycle_items`, seed 0) on the
embedded model (champion) and the adapter (candidate), each on its own so that the time of
each is printed: wall and process CPU seconds, the per-benchmark wall time lm-eval's run
recorded, the planned time (evals/benchmark_sizing.py) beside it, the load average before and
after (a shared machine's wall time says little without it). Then per benchmark and pooled: the
paired difference, its interval, the MDE and the per-item sd of the differences, with the
planned pooled MDE at the planning spreads. A model already scored at these items in W (or,
for the base model, in the user cache folder) is read back, not timed again: use a fresh W and
EVALLOOP_HOME to time both.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import time

from evals.benchmark_sizing import planned_pooled_mde, planned_seconds
from loop.core.settings import DEFAULT_MODEL, BenchmarksSettings


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    from evals.benchmarks import headline
    from loop.evaluation.benchmarks import cycle_items, paired_deltas, run_benchmarks
    from loop.store.db import Store

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workspace", required=True)
    p.add_argument("--benchmark-data", required=True)
    p.add_argument("--champion", default=DEFAULT_MODEL)
    p.add_argument("--candidate", required=True)
    p.add_argument("--seconds", type=float, default=BenchmarksSettings().seconds)
    p.add_argument("--limit", type=int, default=None, help="a flat count instead of the budget")
    p.add_argument("--tasks", nargs="+", default=BenchmarksSettings().tasks)
    args = p.parse_args()
    settings = BenchmarksSettings(data_dir=args.benchmark_data, seconds=args.seconds,
                                  limit=args.limit, tasks=tuple(args.tasks))
    items = cycle_items(settings)
    print(f"items {items}; planned {planned_seconds(items):.0f} s per model, planned pooled MDE "
          f"{planned_pooled_mde(items):.4f}")
    with Store(args.workspace) as store:
        for role, model in (("champion", args.champion), ("candidate", args.candidate)):
            load, wall, cpu = os.getloadavg()[0], time.perf_counter(), cpu_seconds()
            rows = run_benchmarks(store, model, settings.tasks, items, settings.data_dir,
                                  settings.backend, progress=False, seed=0)
            wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
            runs = {r.benchmark: (r.wall_s, r.cached) for r in headline(rows)}
            print(f"{role}: wall {wall:.1f} s, CPU {cpu:.1f} s, load {load:.1f} -> "
                  f"{os.getloadavg()[0]:.1f}; " + ", ".join(
                      f"{b} {w:.1f} s{' (cached)' if c else ''}" for b, (w, c) in runs.items()))
        out = paired_deltas(store, args.champion, args.candidate, settings, items, 0, False)
    print(f"\n{'check':<34}{'n':>6}{'delta':>9}{'interval':>20}{'MDE':>8}{'sd':>7}")
    for name, s in {**out["paired"], **out["pooled"]}.items():
        sd = s["se"] * math.sqrt(s["n"]) if s["se"] is not None else float("nan")
        span = f"[{s['lower']:+.3f}, {s['upper']:+.3f}]" if s["lower"] is not None else "-"
        mde = s["mde"] if s["mde"] is not None else math.inf
        print(f"{name:<34}{s['n']:>6}{s['delta']:>+9.3f}{span:>20}{mde:>8.3f}{sd:>7.3f}")


if __name__ == "__main__":
    main()
