"""[training]: the LoRA fine-tuning table of a task TOML (`TrainingSettings`, reached as
`task.settings.training`), with the reporting integrations it may name (`report_to`, checked
against what is installed before any model loads). loop/train/config.py says why these defaults.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, StrictStr

from loop.core.settings_values import Bf16, Section, TargetModules, positive_int

TrainMethod = Literal["sft", "dpo", "sft+dpo", "grpo", "sft+grpo"]


# transformers' reporting integrations (TrainingArguments.report_to) and the modules that make
# each one available, as transformers checks them; tests compare the names with transformers'
# own list. (Importing transformers' list costs seconds and torch; settings are checked first.)
REPORT_TO_MODULES = {
    "azure_ml": ("azureml.core.run",), "clearml": ("clearml",), "codecarbon": ("codecarbon",),
    "comet_ml": ("comet_ml",), "dagshub": ("dagshub",), "dvclive": ("dvclive",),
    "flyte": ("flytekit",), "kubeflow": (), "mlflow": ("mlflow",), "neptune": ("neptune",),
    "swanlab": ("swanlab",), "tensorboard": ("tensorboard", "tensorboardX"),
    "trackio": ("trackio",), "wandb": ("wandb",),
}


def report_to_problems(names: tuple[str, ...]) -> list[str]:
    """Unknown or not-installed reporting integrations, one message each."""
    import difflib
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
            problems.append(f"unknown integration '{name}'" + (
                f" (did you mean '{close[0]}'?)" if close
                else f" (known: {', '.join(REPORT_TO_MODULES)})"))
        elif REPORT_TO_MODULES[name] and not any(installed(m) for m in REPORT_TO_MODULES[name]):
            package = REPORT_TO_MODULES[name][0].split(".")[0].replace("azureml", "azureml-core")
            problems.append(f"'{name}' is not installed (pip install {package}, or remove it "
                            "from report_to)")
    return problems


def _report_to(value: Any) -> Any:
    """"none", one name or a list of names -> a tuple of names."""
    if value == "none" or value == []:
        return ()
    if isinstance(value, str) and value:
        return (value,)
    if isinstance(value, list):
        return tuple(value)
    return value


ReportTo = Annotated[tuple[StrictStr, ...], BeforeValidator(_report_to)]


class TrainingSettings(Section):
    """[training]: LoRA fine-tuning; loop/train/config.py says why these defaults."""

    rank: int = Field(16, ge=1, description="LoRA rank; alpha defaults to 2 x rank")
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout: +15-20% step time on CPU")
    target_modules: TargetModules = Field(
        "all-linear", description='"all-linear" (peft) or a list of module names')
    learning_rate: float = Field(1e-3, gt=0, lt=1)
    epochs: float | None = Field(2.0, gt=0, description="or max_steps (not both)")
    max_steps: int | None = Field(None, ge=1, description="replaces epochs when set")
    batch_size: int = Field(16, ge=1, description="examples per optimizer step (packed)")
    grad_accum: int = Field(1, ge=1)
    micro_batch_tokens: int = Field(2048, ge=64, description="tokens per forward+backward")
    max_seq_len: int = Field(1024, ge=16, description="longer examples are skipped, never cut")
    seed: int = Field(0, ge=0)
    save_steps: int = Field(50, ge=1, description="checkpoint and dev-loss interval")
    log_steps: int = Field(5, ge=1)
    patience: int = Field(3, ge=0, description="dev evaluations without improvement; 0 = never "
                                               "stop early")
    gradient_checkpointing: bool = False
    share_prefix: bool = Field(True, description="rows' common prefix runs once per micro-batch")
    qlora: bool = Field(False, description="4-bit base (bitsandbytes), CUDA only")
    bf16: Bf16 = Field("auto", description='"auto": CUDA support or the CPU\'s measured speed')
    method: TrainMethod = Field("sft", description="sft, dpo (preference pairs), sft+dpo, grpo "
                                                   "(the suite as reward) or sft+grpo")
    search: bool = Field(True, description="a cycle tries learning rates x1 (then, on a trained "
                                           "champion, x1 retrained from the base), x2, x0.5 as its "
                                           "time budget allows and keeps the best on dev "
                                           "(loop/train/search.py; with >= 40 dev items)")
    dpo_beta: float = Field(0.1, gt=0, description="DPO's KL strength")
    # measured (bench/preference.py): DPO at the SFT rate (1e-3) collapses a LoRA on a few dozen
    # pairs (demo 66 -> 33%, rentalcars 83 -> 1%); 5e-5 keeps it (demo 66 -> 66%)
    dpo_learning_rate: float | None = Field(5e-5, gt=0, lt=1,
                                            description="None: learning_rate")
    # GRPO (loop/train/grpo.py): sampled answers per pool prompt, rewarded by the task's suite
    grpo_num_generations: int = Field(4, ge=2, le=64, description="completions per prompt; "
                                      "batch_size must be a multiple of it")
    grpo_beta: float = Field(0.04, ge=0, description="KL strength to the starting adapter")
    grpo_learning_rate: float = Field(5e-5, gt=0, lt=1, description="GRPO's own rate")
    grpo_max_completion_length: int | None = Field(
        None, ge=1, description="tokens sampled per completion; None: [generation] max_new_tokens")
    grpo_temperature: float = Field(1.0, gt=0, le=2, description="sampling temperature")
    grpo_prompts: int = Field(64, ge=1, description="pool prompts, where the champion fails first")
    # how a run is spread over ranks (loop/train/distributed.py), not what it trains: `processes`
    # ranks split each batch of `batch_size` rows, the same optimizer steps as one process
    processes: int = Field(1, ge=1, description="ranks launched through accelerate; SFT only")
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description='"ddp": a model copy per rank; "fsdp": parameters sharded across ranks')
    # transformers' TrainingArguments.report_to: where the Trainer also logs (not in the run id)
    report_to: ReportTo = Field((), description='transformers integrations, e.g. ["tensorboard"]')

    @classmethod
    def _rules(cls, data, context):
        problems = []
        if data.get("epochs") is not None and data.get("max_steps") is not None:
            problems.append((("max_steps",), "give epochs or max_steps, not both"))
        elif data.get("max_steps") is not None:
            data["epochs"] = None
        rank = data.get("rank")
        if "alpha" not in data and positive_int(rank):
            data["alpha"] = 2.0 * rank
        batch = data.get("batch_size", cls.model_fields["batch_size"].default)
        ranks = data.get("processes", 1)
        if positive_int(batch) and positive_int(ranks) and batch % ranks:
            problems.append((("processes",), "batch_size must be a multiple of processes (each "
                                             "rank takes batch_size / processes rows of every "
                                             "batch)"))
        gens = data.get("grpo_num_generations", cls.model_fields["grpo_num_generations"].default)
        if (str(data.get("method", "")).endswith("grpo") and positive_int(batch)
                and positive_int(gens) and batch % gens):
            problems.append((("batch_size",), "batch_size must be a multiple of "
                                              "grpo_num_generations (whole groups per step)"))
        if data.get("qlora") is True and data.get("strategy") == "fsdp":
            problems.append((("strategy",), 'qlora = true runs with strategy = "ddp" only'))
        names = data.get("report_to")
        if isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
            problems += [(("report_to",), p) for p in report_to_problems(tuple(names))]
        return data, problems

    def as_dict(self) -> dict:
        """The plain form stored with a training run (and hashed into its id)."""
        data = self.model_dump()
        if isinstance(self.target_modules, tuple):
            data["target_modules"] = list(self.target_modules)
        data["report_to"] = list(self.report_to)
        return data

    def identity(self) -> dict:
        """What a run's id hashes: the settings that change the trained weights. The process
        count does not (same global batch), so a DDP run resumes under another count; FSDP
        checkpoints are sharded, so "fsdp" stays in."""
        data = self.as_dict()
        data.pop("processes")
        data.pop("report_to")  # where the Trainer logs changes no weight
        data.pop("search")  # which runs a cycle tries; each run is its own settings
        if not self.method.endswith("grpo"):  # GRPO's knobs change no SFT/DPO weight (and
            for key in [k for k in data if k.startswith("grpo_")]:  # earlier ids stay valid)
                data.pop(key)
        if self.strategy == "ddp":
            data.pop("strategy")
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainingSettings:
        return cls.model_validate(data)
