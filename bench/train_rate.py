"""Does the pool plan's training-time estimate hold on every task? Planned against measured
seconds per trained row, per task, in one run.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/train_rate.py \
        [--tasks ../shared/real-tasks/*/task.toml] [--rows 96] [--dev-items 64] [--json]

For each task: `seconds_per_row_epoch` (loop/targeted/cycle_data.py: forward tokens per row at
`[cycle] tokens_per_s`, what a cycle's budget is planned with) and the measured seconds per row
of one epoch over the first `--rows` pool rows with the task's own [training] settings (no dev
evaluation, a fresh output folder each time), with the token counts behind the estimate. The
ratio measured / planned is what the budget is off by on this machine; run it idle.

Then the trained adapter generates `--dev-items` dev items (what each recipe trial of a cycle's
search costs besides training): measured seconds beside the estimate
(`seconds_per_dev_eval`, from prompt and reference token counts), and the tokens behind it.
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
from loop.core.openmp import wait_briefly  # noqa: E402

wait_briefly()  # before torch loads: how idle OpenMP threads wait
REAL_TASKS = REPO.parent / "shared" / "real-tasks"


def measure(task_path: Path, rows: int, dev_items: int) -> dict:
    import time

    from loop.data.tasks import load_task
    from loop.evaluation.evaluate import evaluate
    from loop.models.loading import parse_model_name
    from loop.store.db import Store
    from loop.targeted.cycle_data import seconds_per_dev_eval, seconds_per_row_epoch
    from loop.train.sft import train_adapter

    task = load_task(task_path)
    pool = list(task.split("train"))[:rows]
    planned, how = seconds_per_row_epoch(task, pool)
    config = task.settings.training.model_copy(update={"epochs": 1.0, "max_steps": None})
    with tempfile.TemporaryDirectory() as out:
        result = train_adapter(task.settings.cycle.base_model, pool, Path(out) / "run", config,
                               progress=False, system_prompt=task.settings.system_prompt)
        dev = list(task.split("dev"))[:dev_items]
        planned_dev, dev_how = seconds_per_dev_eval(task, dev)
        model = parse_model_name(task.settings.cycle.base_model).with_adapter(result.adapter_dir)
        with Store(Path(out) / "ws") as store:
            started = time.perf_counter()
            evaluate(store, task, model, "dev", limit=len(dev), progress=False)
            dev_s = time.perf_counter() - started
    measured = result.elapsed_s / len(pool)
    return {"task": task.name, "rows": len(pool), "planned_s_per_row": planned,
            "measured_s_per_row": measured, "ratio": measured / planned, "estimate": how,
            "example_tokens_per_s": result.tokens_per_s, "steps": result.steps_done,
            "dev_items": len(dev), "planned_dev_s": planned_dev, "measured_dev_s": dev_s,
            "dev_ratio": dev_s / planned_dev, "dev_estimate": dev_how}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", type=Path,
                        default=sorted(REAL_TASKS.glob("*/task.toml")))
    parser.add_argument("--rows", type=int, default=96)
    parser.add_argument("--dev-items", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = []
    for path in args.tasks:
        r = measure(path.resolve(), args.rows, args.dev_items)
        results.append(r)
        if not args.json:
            print(f"{r['task']:<18} planned {r['planned_s_per_row']:.3f} s/row, measured "
                  f"{r['measured_s_per_row']:.3f} s/row ({r['ratio']:.2f}x; "
                  f"{r['example_tokens_per_s']:.0f} example tokens/s, {r['steps']} steps); "
                  f"{r['estimate']}", flush=True)
            print(f"{'':<18} dev generation: planned {r['planned_dev_s']:.1f} s, measured "
                  f"{r['measured_dev_s']:.1f} s for {r['dev_items']} items "
                  f"({r['dev_ratio']:.2f}x); {r['dev_estimate']}", flush=True)
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
