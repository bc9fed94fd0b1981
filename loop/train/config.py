"""The training stage's records: `TrainConfig` (the task TOML's [training] table, a
`loop.core.settings_training.TrainingSettings`), `LogRow`, `TrainResult`, and the [training]
bf16 setting resolved (`loop.models.precision`).

    [training]             # every key optional; the defaults suit labels, extraction and prose
    rank = 16              # LoRA rank; alpha defaults to 2 x rank
    learning_rate = 1e-3
    epochs = 2             # or max_steps = N (not both)
    batch_size = 16        # examples per optimizer step (packed, so no padding)
    micro_batch_tokens = 2048  # forward tokens per forward+backward (memory), same optimizer steps;
                           # 2,048 holds a batch of 16 rows behind a 700-token instruction in one
                           # chunk: 12% faster than 1,024 there (same gradients), 3.2 GB peak RSS
    bf16 = "auto"          # "auto": CUDA support / this CPU's measured matmul speed; true/false
    method = "sft"         # or "dpo" / "sft+dpo": preference pairs (loop/targeted/pairs.py, loop/train/dpo.py);
                           # "grpo" / "sft+grpo": the suite as reward (evals/rewards.py, loop/train/grpo.py)
    dpo_beta = 0.1         # DPO's KL strength
    dpo_learning_rate = 5e-5  # DPO's own rate: at the SFT rate it collapses the adapter

Why these defaults (the same for every task; measured on a real slot-extraction task, not the
demo): the embedded model, 250 random pool rows of ../shared/real-tasks/rentalcars (seed 0),
completion-only loss, batch 16, rank 16, scored on the first 150 test items by loop.evaluation.evaluate:
    lr 2e-4, 3 epochs (the old default)    76.0% test, dev loss 0.191, 48 steps
    lr 1e-3, 2 epochs                       81.3% test, dev loss 0.118, 32 steps
    lr 1e-3, 3 epochs                       84.0% test, dev loss 0.070, 48 steps
A LoRA on a 135M model needs the larger rate to learn a new output format in a few hundred rows;
the third epoch's +2.7 points (4 items of 150) are within noise (a 95% interval is about +-6
points) for 1.5x the training time, which a cycle pays every night, so: lr 1e-3, 2 epochs.
Early stopping on dev loss stays (`patience` evaluations every `save_steps`, best checkpoint
kept); at these sizes a run is shorter than one evaluation interval, so it only acts on large
training sets.

SFT stays the default method: bench/preference.py (250 random pool rows, SFT 32 steps then DPO
16 steps on pairs from that SFT model's own failures on 100 dev items, against SFT for all 48
steps; first 150 test items) never found DPO ahead:
    demo        DPO lr 1e-3: 32.7% vs SFT 66.0% (-33.3 [-42.2, -24.5]); lr 5e-5: 66.0% vs 66.0%
    rentalcars  DPO lr 1e-3:  0.7% vs SFT 83.3% (-82.7 [-88.7, -76.6])
Failures give few pairs (8 on demo, 12 on rentalcars from 100 dev items); votes and corrections
add more once reviewers use the app.
"""

from __future__ import annotations

import argparse
import platform
from dataclasses import asdict, dataclass, fields

from loop.core.errors import ConfigError
from loop.core.settings_load import with_overrides
from loop.core.settings_training import TrainingSettings


# The [training] table, validated with the task (loop.core.settings), under the name the training
# code has always used; `as_dict()` is what a run stores and hashes into its id.
TrainConfig = TrainingSettings


@dataclass(frozen=True)
class LogRow:
    """One logging step: training loss and speed, or a dev-loss evaluation, or both."""

    step: int
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    tokens_per_s: float | None = None  # non-padding tokens per second of training steps
    peak_mem_mb: float | None = None  # peak RSS on CPU, peak allocated on CUDA
    epoch: float | None = None
    reward: float | None = None  # GRPO: mean suite reward of the step's completions

    def merge(self, other: LogRow) -> LogRow:
        return LogRow(**{f.name: getattr(other, f.name) if getattr(other, f.name) is not None
                         else getattr(self, f.name) for f in fields(self)})

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrainResult:
    train_id: str
    adapter_dir: str
    base: str
    base_model_id: str
    parent_adapter: str | None
    config: TrainConfig
    total_steps: int
    steps_done: int  # < total_steps when early stopping ended the run
    resumed_from_step: int  # 0: started from scratch
    n_train: int
    n_dev: int
    skipped: tuple[str, ...]  # ids of examples longer than max_seq_len
    device: str
    precision: str
    padding_free: bool
    tokens: int  # non-padding tokens trained on by the last process
    tokens_per_s: float
    peak_mem_mb: float
    train_loss: float | None
    best_eval_loss: float | None
    stopped_early: bool
    elapsed_s: float
    logs: tuple[LogRow, ...]
    versions: dict

    def to_json(self) -> dict:
        data = asdict(self)
        data["config"] = self.config.as_dict()
        data["skipped"] = list(self.skipped)
        data["logs"] = [row.to_json() for row in self.logs]
        return data

    @classmethod
    def from_json(cls, data: dict) -> TrainResult:
        data = dict(data)
        data["config"] = TrainConfig.from_dict(data["config"])
        data["skipped"] = tuple(data["skipped"])
        data["logs"] = tuple(LogRow(**row) for row in data["logs"])
        return cls(**data)


def library_versions() -> dict:
    """Provenance stored with every run: library versions and the code's git commit."""
    import subprocess
    from pathlib import Path

    import peft
    import torch
    import transformers
    import trl

    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False,
                             cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except OSError:
        sha = None
    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "trl": trl.__version__, "python": platform.python_version(),
            "git": sha}


@dataclass(frozen=True)
class TrainPlan:
    """One run, decided once: its identity, output dir and tokenized rows. A single process runs
    it directly; with several processes it travels to every rank as a JSON file
    (loop/train/distributed.py, loop/train/rank.py), so no rank touches the store or the task's data."""

    base: str
    parent_adapter: str | None
    base_model_id: str
    train_id: str
    out_dir: str
    config: TrainConfig
    rows: list[dict]
    dev_rows: list[dict]
    skipped: tuple[str, ...]

    def to_json(self) -> dict:
        return {**asdict(self), "config": self.config.as_dict(), "skipped": list(self.skipped)}

    @classmethod
    def from_json(cls, data: dict) -> TrainPlan:
        return cls(**{**data, "config": TrainConfig.from_dict(data["config"]),
                      "skipped": tuple(data["skipped"])})


def config_from_args(task, args: argparse.Namespace) -> TrainConfig:
    """The task's [training] settings with the shell entry points' overrides (validated again
    with the rest of the table: processes must divide batch_size)."""
    overrides = {k: getattr(args, k, None)
                 for k in ("max_steps", "save_steps", "patience", "processes")}
    return with_overrides(task.settings, "training",
                          **{k: v for k, v in overrides.items() if v is not None},
                          **({"epochs": None} if getattr(args, "max_steps", None) else {}))


# ---------------------------------------------------------------------------- bf16 or fp32

def use_bf16(setting: str | bool, device, base: str) -> bool:
    """Resolve the [training] bf16 setting; "auto" is `loop.models.precision.prefer_bf16` for the
    base model (CUDA support, or this model's measured CPU speed), the benchmark backend's rule."""
    import torch

    if setting is False:
        return False
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        if setting is True:
            raise ConfigError("[training] bf16 = true, but this GPU has no bf16 support: "
                              "set bf16 = \"auto\" or false.")
        return False
    if setting is True:
        return True
    from transformers import AutoConfig, AutoModelForCausalLM

    from loop.models.loading import base_path
    from loop.models.precision import prefer_bf16

    path = base_path(base)
    return prefer_bf16(device, AutoConfig.from_pretrained(path), lambda: (
        AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)))
