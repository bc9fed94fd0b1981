"""The training stage's records: `TrainConfig` (the task TOML's [training] section, validated in
full), `LogRow`, `TrainResult`, and the bf16-or-fp32 choice (measured on CPUs, cached per machine).

    [training]             # every key optional; the defaults suit labels, extraction and prose
    rank = 16              # LoRA rank; alpha defaults to 2 x rank
    learning_rate = 1e-3
    epochs = 2             # or max_steps = N (not both)
    batch_size = 16        # examples per optimizer step (packed, so no padding)
    micro_batch_tokens = 1024  # tokens per forward+backward (memory), same optimizer steps
    bf16 = "auto"          # "auto": CUDA support / this CPU's measured matmul speed; true/false
    method = "sft"         # or "dpo" / "sft+dpo": preference pairs (loop/targeted/pairs.py, loop/train/dpo.py)
    dpo_beta = 0.1         # DPO's KL strength; dpo_learning_rate defaults to learning_rate
    report_to = ["tensorboard"]  # transformers' logging integrations (installed ones), default none

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

import difflib
import json
import os
import platform
from dataclasses import asdict, dataclass, fields

from loop.core.errors import ConfigError

METHODS = ("sft", "dpo", "sft+dpo")
BF16_SPEEDUP = 1.2  # use bf16 on a CPU only when its matmul is at least this much faster


@dataclass(frozen=True)
class TrainConfig:
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.0  # LoRA dropout: +15-20% step time on CPU, little gain on short runs
    target_modules: str | tuple[str, ...] = "all-linear"  # peft name or module names
    learning_rate: float = 1e-3  # see the module docstring for the measurements
    epochs: float | None = 2.0
    max_steps: int | None = None  # when set, replaces epochs
    batch_size: int = 16
    grad_accum: int = 1
    micro_batch_tokens: int = 1024  # tokens per forward+backward: bounds activation memory
    max_seq_len: int = 1024  # longer examples are skipped (and counted), never truncated
    seed: int = 0
    save_steps: int = 50  # checkpoint (and dev-loss evaluation) interval
    log_steps: int = 5
    patience: int = 3  # dev evaluations without improvement before stopping; 0 = never stop
    gradient_checkpointing: bool = False
    share_prefix: bool = True  # rows' common prefix runs once per micro-batch (same gradients)
    qlora: bool = False  # 4-bit base (bitsandbytes), CUDA only
    bf16: str | bool = "auto"
    # "sft": supervised on the targeted data; "dpo": preference pairs (loop/targeted/pairs.py) only;
    # "sft+dpo": SFT, then DPO from the SFT adapter (also DPO's reference). SFT stays the
    # default until bench/preference.py measures otherwise.
    method: str = "sft"
    dpo_beta: float = 0.1  # DPO's KL strength (trl's default)
    dpo_learning_rate: float | None = None  # None: learning_rate
    # transformers' TrainingArguments.report_to: where the Trainer also logs (not in the train id)
    report_to: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        data = asdict(self)
        if isinstance(self.target_modules, tuple):
            data["target_modules"] = list(self.target_modules)
        data["report_to"] = list(self.report_to)
        return data

    def identity(self) -> dict:
        """What makes two runs the same run: every setting but where the Trainer logs to."""
        data = self.as_dict()
        data.pop("report_to")
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        data = dict(data)
        for key in ("target_modules", "report_to"):
            if isinstance(data.get(key), list):
                data[key] = tuple(data[key])
        return cls(**data)

    @classmethod
    def from_section(cls, section: dict | None, where: str = "[training]") -> TrainConfig:
        """Validate a [training] table; raise ConfigError listing every problem at once."""
        section, errors, values = dict(section or {}), [], {}
        names = [f.name for f in fields(cls)]
        for key in section:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                errors.append(f"unknown key '{key}'" + (f" (did you mean '{close[0]}'?)" if close
                                                        else f" (known: {', '.join(names)})"))
        for key, (kind, ok, need) in _RULES.items():
            if key in section:
                value = _coerce(section[key], kind)
                if value is _BAD or not ok(value):
                    errors.append(f"{key} must be {need}, got {section[key]!r}")
                else:
                    values[key] = value
        if "epochs" in section and "max_steps" in section:
            errors.append("give epochs or max_steps, not both")
        if "max_steps" in values:
            values["epochs"] = None
        if "report_to" in values:
            errors += report_to_problems(values["report_to"])
        if "rank" in values and "alpha" not in section:
            values["alpha"] = 2.0 * values["rank"]
        if errors:
            raise ConfigError(f"{where} has {len(errors)} problem(s): " + "; ".join(errors) + ".")
        return cls(**values)


_BAD = object()


def _coerce(value, kind):
    if kind == "bf16":
        return value if value == "auto" or isinstance(value, bool) else _BAD
    if kind == "modules":
        if isinstance(value, str) and value:
            return value
        if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
            return tuple(value)
        return _BAD
    if isinstance(value, bool) != (kind is bool):
        return _BAD
    if kind == "names":
        if value == "none" or value == []:
            return ()
        if isinstance(value, str) and value:
            return (value,)
        if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
            return tuple(value)
        return _BAD
    if kind is float and isinstance(value, int):
        return float(value)
    return value if isinstance(value, kind) else _BAD


_RULES = {  # key: (type, check, what the message asks for)
    "rank": (int, lambda v: v >= 1, "a positive integer"),
    "alpha": (float, lambda v: v > 0, "a positive number"),
    "dropout": (float, lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "target_modules": ("modules", lambda v: True,
                       "\"all-linear\" or a non-empty list of module names"),
    "learning_rate": (float, lambda v: 0 < v < 1, "a number in (0, 1)"),
    "epochs": (float, lambda v: v > 0, "a positive number"),
    "max_steps": (int, lambda v: v >= 1, "a positive integer"),
    "batch_size": (int, lambda v: v >= 1, "a positive integer"),
    "grad_accum": (int, lambda v: v >= 1, "a positive integer"),
    "micro_batch_tokens": (int, lambda v: v >= 64, "an integer >= 64"),
    "max_seq_len": (int, lambda v: v >= 16, "an integer >= 16"),
    "seed": (int, lambda v: v >= 0, "a non-negative integer"),
    "save_steps": (int, lambda v: v >= 1, "a positive integer"),
    "log_steps": (int, lambda v: v >= 1, "a positive integer"),
    "patience": (int, lambda v: v >= 0, "a non-negative integer"),
    "gradient_checkpointing": (bool, lambda v: True, "true or false"),
    "share_prefix": (bool, lambda v: True, "true or false"),
    "qlora": (bool, lambda v: True, "true or false"),
    "bf16": ("bf16", lambda v: True, "\"auto\", true or false"),
    "method": (str, lambda v: v in METHODS, " or ".join(f'"{m}"' for m in ("sft", "dpo",
                                                                          "sft+dpo"))),
    "dpo_beta": (float, lambda v: v > 0, "a positive number"),
    "dpo_learning_rate": (float, lambda v: 0 < v < 1, "a number in (0, 1)"),
    "report_to": ("names", lambda v: True, "a list of integration names, e.g. [\"tensorboard\"]"),
}

# transformers' reporting integrations (TrainingArguments.report_to) and the modules that make
# each one available, as transformers checks them; tests compare the names with transformers'
# own list. (Importing transformers' list costs seconds and torch; config checks run first.)
REPORT_TO_MODULES = {
    "azure_ml": ("azureml.core.run",), "clearml": ("clearml",), "codecarbon": ("codecarbon",),
    "comet_ml": ("comet_ml",), "dagshub": ("dagshub",), "dvclive": ("dvclive",),
    "flyte": ("flytekit",), "kubeflow": (), "mlflow": ("mlflow",), "neptune": ("neptune",),
    "swanlab": ("swanlab",), "tensorboard": ("tensorboard", "tensorboardX"),
    "trackio": ("trackio",), "wandb": ("wandb",),
}


def report_to_problems(names: tuple[str, ...]) -> list[str]:
    """Unknown or not-installed reporting integrations, one message each."""
    import importlib.util

    def installed(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a dotted name whose parent package is missing
            return False

    problems = []
    for name in names:
        if name not in REPORT_TO_MODULES:
            close = difflib.get_close_matches(name, list(REPORT_TO_MODULES), n=1)
            problems.append(f"report_to: unknown integration '{name}'" + (
                f" (did you mean '{close[0]}'?)" if close
                else f" (known: {', '.join(REPORT_TO_MODULES)})"))
        elif REPORT_TO_MODULES[name] and not any(installed(m) for m in REPORT_TO_MODULES[name]):
            package = REPORT_TO_MODULES[name][0].split(".")[0].replace("azureml", "azureml-core")
            problems.append(f"report_to: '{name}' is not installed (pip install {package}, or "
                            "remove it from report_to)")
    return problems


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
