"""Training on several processes: this process plans and records, N ranks train.

    result = train_on_ranks(plan)   # what train_adapter does when [training] processes > 1

The calling process (`evalloop train`, `python -m loop.train` or a cycle) holds the store. It has
planned the run (loop/train/sft.py `plan_training`: inputs checked, rows tokenized, output
directory claimed) and writes the plan to OUT/checkpoints/plan.json, then launches

    accelerate launch --multi_gpu --num_processes N -m loop.train.rank PLAN   (DDP)
    accelerate launch --use_fsdp --fsdp_version 2 ... -m loop.train.rank PLAN (FSDP)

(loop/core/launch.py). Every rank (loop/train/rank.py) reads the plan and runs the single-process code
(`run_plan`): the same Trainer, where accelerate's batch sampler hands each rank its contiguous
1/N of every batch of `batch_size` rows (`split_batches`), gradients are averaged (DDP) or
reduce-scattered (FSDP), and each rank's summed loss is divided by the target-token count of the
whole batch on all ranks (transformers' `average_tokens_across_devices`): the optimizer steps of
one process. The first rank alone writes checkpoints, train_log.jsonl, the adapter and
train_result.json, in the single-process format; no rank imports the store. When the ranks are
done, this process reads train_result.json back (the caller records lineage).

The last batch of an epoch, when smaller than batch_size, is topped up with rows from the
epoch's start (accelerate's `even_batches`: every rank must step); with a row count that is a
multiple of batch_size every step is the single-process one. A rerun after a killed rank resumes
from the last checkpoint, as a single process does.
"""

from __future__ import annotations

import json
from pathlib import Path

from loop.core.cache import write_atomic
from loop.core.launch import accelerate_command, has_cuda, run_ranks
from loop.train.config import TrainConfig, TrainPlan, TrainResult
from loop.train.outputs import RESULT_FILE, TrainingError

PLAN_FILE = "plan.json"  # in OUT/checkpoints: the trainer's working area, not the adapter's files


def check_launchable(config: TrainConfig) -> None:
    """Refuse what the ranks could only fail at, before any output directory is claimed."""
    if config.strategy == "fsdp" and not has_cuda():
        raise TrainingError('[training] strategy = "fsdp" needs CUDA GPUs (accelerate runs CPU '
                            'ranks as plain DDP): set strategy = "ddp" on this machine.')


def train_on_ranks(plan: TrainPlan, progress: bool = True) -> TrainResult:
    """Launch `plan.config.processes` ranks on this plan, wait, return the first rank's result."""
    config = plan.config
    check_launchable(config)
    work = Path(plan.out_dir) / "checkpoints"
    work.mkdir(parents=True, exist_ok=True)
    path = work / PLAN_FILE
    write_atomic(path, json.dumps(plan.to_json()))
    cmd = accelerate_command(config.processes, "loop.train.rank",
                             [str(path)] + ([] if progress else ["--quiet"]),
                             strategy=config.strategy)
    run_ranks(cmd, config.processes, work / "launch.log",
              f"training ({config.strategy.upper()})", progress)
    done = Path(plan.out_dir) / RESULT_FILE
    if not done.is_file():
        raise TrainingError(f"The ranks exited without writing {done}: see {work / 'launch.log'}.")
    return TrainResult.from_json(json.loads(done.read_text()))
