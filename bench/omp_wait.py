"""How should OpenMP threads wait? Training throughput per wait setting, idle and shared, in one run.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/omp_wait.py \
        [--task ../shared/real-tasks/rentalcars/task.toml] [--rows 96] [--shared-jobs 3]

torch's CPU kernels run on libgomp threads, which busy-wait ("spin") between parallel regions
before they sleep: `GOMP_SPINCOUNT` iterations (300,000 when `OMP_WAIT_POLICY` is unset, none
when it is PASSIVE). Spinning is fast alone and ruinous when more threads than cores share the
machine. For each setting this measures bench/train_rate.py's training (the task's own
[training] settings, one epoch over the first `--rows` pool rows, each in a fresh process,
since libgomp reads the variables when torch loads): once alone, then `--shared-jobs` copies at
once on the same cores. Printed: example tokens/s per setting and its ratio to PASSIVE, the
setting evalloop used before loop/core/openmp.py; alone and shared, the sum over the copies.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TASK = REPO.parent / "shared" / "real-tasks" / "rentalcars" / "task.toml"
SETTINGS = {
    "PASSIVE (no spin)": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin 1,000": {"GOMP_SPINCOUNT": "1000"},
    "spin 3,000": {"GOMP_SPINCOUNT": "3000"},
    "spin 10,000": {"GOMP_SPINCOUNT": "10000"},
    "spin 300,000 (libgomp default)": {"GOMP_SPINCOUNT": "300000"},
}
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def tokens_per_s(task: Path, rows: int, setting: dict[str, str]) -> float:
    """Example tokens/s of one bench/train_rate.py training run under `setting`."""
    env = {k: v for k, v in os.environ.items() if k not in WAIT_VARIABLES}
    env.update(setting, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, str(REPO / "bench" / "train_rate.py"), "--tasks",
                          str(task), "--rows", str(rows), "--dev-items", "1", "--json"],
                         env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out[out.index("[\n"):])[0]["example_tokens_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", type=Path, default=TASK)
    parser.add_argument("--rows", type=int, default=96)
    parser.add_argument("--shared-jobs", type=int, default=3)
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; training {args.rows} rows of {args.task.parent.name}; "
          f"shared: {args.shared_jobs} runs at once", flush=True)
    results = {}
    for name, setting in SETTINGS.items():
        alone = tokens_per_s(args.task, args.rows, setting)
        with ThreadPoolExecutor(args.shared_jobs) as pool:
            shared = sum(pool.map(lambda _: tokens_per_s(args.task, args.rows, setting),
                                  range(args.shared_jobs)))
        results[name] = (alone, shared)
        print(f"  {name:<32} alone {alone:7.0f} example tokens/s   shared {shared:7.0f} "
              f"(sum of {args.shared_jobs})", flush=True)
    base_alone, base_shared = results["PASSIVE (no spin)"]
    print("ratio to PASSIVE:")
    for name, (alone, shared) in results.items():
        print(f"  {name:<32} alone {alone / base_alone:5.2f}x   shared {shared / base_shared:5.2f}x")


if __name__ == "__main__":
    main()
