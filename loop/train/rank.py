"""One training rank: `python -m loop.train.rank PLAN`, started by accelerate's launcher from
loop/train/distributed.py. It reads the plan and runs the single-process code (`run_plan`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from loop.core.errors import EvalloopError
from loop.core.openmp import wait_briefly
from loop.train.config import TrainPlan
from loop.train.outputs import TrainingError
from loop.train.sft import run_plan


def main(argv: list[str] | None = None) -> int:
    """One rank: `python -m loop.train.rank PLAN` under accelerate's launcher."""
    wait_briefly()
    p = argparse.ArgumentParser(prog="python -m loop.train.rank")
    p.add_argument("plan", help="plan.json written by train_on_ranks")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    try:
        plan = TrainPlan.from_json(json.loads(Path(args.plan).read_text()))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world != plan.config.processes:
            raise TrainingError(f"{args.plan} is planned for {plan.config.processes} processes "
                                f"but {world} were launched.")
        run_plan(plan, progress=not args.quiet)
    except EvalloopError as exc:
        print(f"error (rank {os.environ.get('RANK', '?')}): {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
