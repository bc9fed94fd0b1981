"""The training stage's records: `TrainConfig` (the task TOML's [training] table, a
`loop.core.settings.TrainingSettings`), `LogRow`, `TrainResult`, and the bf16-or-fp32 choice
(measured on CPUs, cached per machine).

    [training]             # every key optional; the defaults suit labels, extraction and prose
    rank = 16              # LoRA rank; alpha defaults to 2 x rank
    learning_rate = 1e-3
    epochs = 2             # or max_steps = N (not both)
    batch_size = 16        # examples per optimizer step (packed, so no padding)
    micro_batch_tokens = 1024  # tokens per forward+backward (memory), same optimizer steps
    bf16 = "auto"          # "auto": CUDA support / this CPU's measured matmul speed; true/false
    method = "sft"         # or "dpo" / "sft+dpo": preference pairs (loop/targeted/pairs.py, loop/train/dpo.py)
    dpo_beta = 0.1         # DPO's KL strength; dpo_learning_rate defaults to learning_rate

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
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, fields

from loop.core.errors import ConfigError
from loop.core.settings import TrainingSettings

BF16_SPEEDUP = 1.2  # use bf16 on a CPU only when its matmul is at least this much faster

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


# ---------------------------------------------------------------------------- bf16 or fp32

def measure_matmul_gflops(dtype_name: str, size: int = 1024, seconds: float = 1.0,
                          seed: int = 0) -> float:
    """Sustained square-matmul GFLOP/s on the CPU in float32 or bfloat16 (2 n^3 FLOPs each)."""
    import time

    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(size, size, generator=gen).to(dtype)
    b = torch.randn(size, size, generator=gen).to(dtype)
    for _ in range(3):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * size**3 * count / (time.perf_counter() - start) / 1e9


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_bf16_choice() -> dict:
    """{'fp32_gflops', 'bf16_gflops', 'bf16'} for this CPU, measured once and cached."""
    import torch

    from loop.models.loading import evalloop_home

    key = f"{_cpu_name()} | torch {torch.__version__} | {torch.get_num_threads()} threads"
    path = evalloop_home() / "cpu_bf16.json"
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        fp32, bf16 = measure_matmul_gflops("fp32", seconds=0.5), measure_matmul_gflops("bf16",
                                                                                      seconds=0.5)
        cache[key] = {"fp32_gflops": round(fp32, 1), "bf16_gflops": round(bf16, 1),
                      "bf16": bf16 >= BF16_SPEEDUP * fp32}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cache, indent=2))
            os.replace(tmp, path)
        except OSError:
            pass  # the cache only saves a second of measuring next time
    return cache[key]


def use_bf16(setting: str | bool, device) -> bool:
    """Resolve the [training] bf16 setting ("auto": CUDA support, or measured CPU speed)."""
    import torch

    if setting is False:
        return False
    if device.type == "cuda":
        if not torch.cuda.is_bf16_supported():
            if setting is True:
                raise ConfigError("[training] bf16 = true, but this GPU has no bf16 support: "
                                  "set bf16 = \"auto\" or false.")
            return False
        return True
    return True if setting is True else bool(cpu_bf16_choice()["bf16"])
