"""Does the pool plan's training-time estimate hold on every task? Planned against measured
seconds per trained row, per task, in one run.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/train_rate.py \
        [--tasks ../shared/real-tasks/*/task.toml] [--rows 96] [--json]

For each task: `seconds_per_row_epoch` (loop/targeted/cycle_data.py: forward tokens per row at
`[cycle] tokens_per_s`, what a cycle's budget is planned with) and the measured seconds per row
of one epoch over the first `--rows` pool rows with the task's own [training] settings (no dev
evaluation, a fresh output folder each time), with the token counts behind the estimate. The
ratio measured / planned is what the budget is off by on this machine; run it idle.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
REAL_TASKS = REPO.parent / "shared" / "real-tasks"


def measure(task_path: Path, rows: int) -> dict:
    from loop.data.tasks import load_task
    from loop.targeted.cycle_data import seconds_per_row_epoch
    from loop.train.sft import train_adapter

    task = load_task(task_path)
    pool = list(task.split("train"))[:rows]
    planned, how = seconds_per_row_epoch(task, pool)
    config = task.settings.training.model_copy(update={"epochs": 1.0, "max_steps": None})
    with tempfile.TemporaryDirectory() as out:
        result = train_adapter(task.settings.cycle.base_model, pool, Path(out) / "run", config,
                               progress=False, system_prompt=task.settings.system_prompt)
    measured = result.elapsed_s / len(pool)
    return {"task": task.name, "rows": len(pool), "planned_s_per_row": planned,
            "measured_s_per_row": measured, "ratio": measured / planned, "estimate": how,
            "example_tokens_per_s": result.tokens_per_s, "steps": result.steps_done}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", type=Path,
                        default=sorted(REAL_TASKS.glob("*/task.toml")))
    parser.add_argument("--rows", type=int, default=96)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = []
    for path in args.tasks:
        r = measure(path.resolve(), args.rows)
        results.append(r)
        if not args.json:
            print(f"{r['task']:<18} planned {r['planned_s_per_row']:.3f} s/row, measured "
                  f"{r['measured_s_per_row']:.3f} s/row ({r['ratio']:.2f}x; "
                  f"{r['example_tokens_per_s']:.0f} example tokens/s, {r['steps']} steps); "
                  f"{r['estimate']}", flush=True)
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
