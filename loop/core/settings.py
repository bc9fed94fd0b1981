"""A task's settings: the task TOML as typed, frozen pydantic models, parsed once when the task
loads (before any model or the store is touched) and then passed down as `task.settings`.

    settings = load_settings("task.toml")   # ConfigError listing every problem at once
    settings.training.learning_rate, settings.targeted.teacher, settings.path

One model per TOML table, with the same keys: top-level keys (the data splits, paths relative to
the TOML's folder), [generation], [suite], [training], [targeted] + [targeted.teacher], [gate],
[benchmarks], [cycle]. Unknown keys, wrong types and out-of-range values are all reported together,
each as `<file>: [section] key: message` (loop/core/settings_problems.py). `evalloop schema`
writes `TaskSettings`'s JSON Schema for editors.

Checks that need a registry owned above loop.core (the suite's check names and parameters, in
evals.rules) come in through `CheckVocabulary`; strategy names are a closed set here (the
strategies module's registry is tested to match it).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, PrivateAttr,
                      StrictStr, ValidationError, ValidationInfo, field_validator, model_validator)
from pydantic_core import InitErrorDetails

from loop.core.endpoint import DEFAULT_CONCURRENCY
from loop.core.errors import ConfigError
from loop.core.paths import data_problem, dir_problem, file_problem
from loop.core.records import content_hash
from loop.core.settings_problems import RULE, problems_message, rule_error, submodel

DEFAULT_MODEL = "smollm2-135m-instruct"
# lm-eval tasks a [benchmarks] table runs by default (evals.benchmark_tasks.STANDARD, in order)
DEFAULT_BENCHMARK_TASKS = ("arc_easy", "arc_challenge", "hellaswag", "mmlu", "truthfulqa_mc1",
                           "truthfulqa_mc2")
StrategyName = Literal["corrections", "retrieval", "generator", "teacher"]
STRATEGY_NAMES: tuple[str, ...] = get_args(StrategyName)
BenchmarkBackend = Literal["evalloop", "hf", "vllm"]
GenerationBackend = Literal["auto", "hf", "vllm"]
TrainMethod = Literal["sft", "dpo", "sft+dpo", "grpo", "sft+grpo"]
ShotSelection = Literal["random", "nearest"]
MAX_SHOTS = 64
CannotTell = Literal["keep", "keep_if_small_gain", "ignore"]  # [gate] cannot_tell
# what a task's answers are (evals.answers.KINDS; loop.core cannot import evals, a test keeps
# the two equal)
AnswerKind = Literal["json", "labels", "number", "label", "text", "exact"]


# ---------------------------------------------------------------------------- value types

def _path_validator(kind: Literal["file", "dir", "data"]) -> BeforeValidator:
    """A TOML path string, resolved against the TOML's folder; it must exist (`data`: a data
    file of a form evalloop reads, or a datasets folder)."""
    def resolve(value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, Path):
            return value
        if not isinstance(value, str):
            raise ValueError(f"must be a path string, got {value!r}")
        path = (Path((info.context or {}).get("root", ".")) / value).resolve()
        problem = {"file": file_problem, "dir": dir_problem, "data": data_problem}[kind](path)
        if problem:
            raise ValueError(f"{'directory' if kind == 'dir' else 'file'} {path} {problem}")
        return path

    return BeforeValidator(resolve, json_schema_input_type=str)


TomlFile = Annotated[Path, _path_validator("file")]
TomlDir = Annotated[Path, _path_validator("dir")]
TomlData = Annotated[Path, _path_validator("data")]  # a split: JSONL, CSV, Parquet, datasets
Names = Annotated[tuple[StrictStr, ...], Field(strict=False, min_length=1)]  # TOML lists


def _bf16(value: Any) -> str | bool:
    if value == "auto" or isinstance(value, bool):
        return value
    raise ValueError(f'must be "auto", true or false, got {value!r}')


def _modules(value: Any) -> str | tuple[str, ...]:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise ValueError(f'must be "all-linear" or a non-empty list of module names, got {value!r}')


def _version(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Bf16 = Annotated[str | bool, PlainValidator(_bf16, json_schema_input_type=Literal["auto"] | bool)]
TargetModules = Annotated[str | tuple[str, ...], PlainValidator(
    _modules, json_schema_input_type=str | list[str])]
SuiteVersion = Annotated[StrictStr, BeforeValidator(_version, json_schema_input_type=str | int)]


@dataclass(frozen=True)
class CheckVocabulary:
    """The registered checks, from the layer that owns them (evals.suites.CHECKS): a message for
    an unknown check name (None when known), and the problems of a check's params."""

    unknown: Callable[[str], str | None]
    param_problems: Callable[[str, Mapping[str, Any]], list[str]]


# ---------------------------------------------------------------------------- sections

class Section(BaseModel):
    """A TOML table: unknown keys are errors, values are never coerced (no "3" for 3)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @classmethod
    def _rules(cls, data: dict, context: Mapping) -> tuple[dict | None, list[tuple[tuple, str]]]:
        """Cross-key rules on the raw table: (the table with derived values, problems as
        (location, message)); reported together with the per-key problems, or alone when the
        table comes back None (nothing else can be checked)."""
        return data, []

    @model_validator(mode="wrap")
    @classmethod
    def _apply_rules(cls, data: Any, handler, info: ValidationInfo):
        problems: list[InitErrorDetails] = []
        if isinstance(data, dict):
            table, found = cls._rules(dict(data), info.context or {})
            problems = [rule_error(loc, m, data.get(loc[0]) if loc else data)
                        for loc, m in found]
            if table is None:
                raise ValidationError.from_exception_data(cls.__name__, problems)
            data = table
        try:
            result = handler(data)
        except ValidationError as exc:
            # a nested section's rule errors come back as plain dicts: rebuild them
            errors = [rule_error(e["loc"], e["ctx"]["m"], e["input"]) if e["type"] == RULE
                      else e for e in exc.errors()]
            raise ValidationError.from_exception_data(exc.title, [*errors, *problems]) from None
        if problems:
            raise ValidationError.from_exception_data(cls.__name__, problems)
        return result


class GenerationSettings(Section):
    """[generation]: greedy decoding of the task's answers."""

    max_new_tokens: int = Field(64, ge=1)
    batch_size: int = Field(16, ge=1)
    processes: int = Field(1, ge=1, description="ranks generating shards of the items "
                                                "(docs/scale.md)")
    backend: GenerationBackend = Field(
        "auto", description="auto: vLLM when CUDA and the vllm package are there, else hf "
                            "(transformers with the shared-prefix cache)")
    shots: int = Field(0, ge=0, le=MAX_SHOTS,
                       description="train-pool rows shown as earlier turns (few-shot); 0: none")
    shot_selection: ShotSelection = Field(
        "random", description="random: the same seeded rows for every item (the shared prefix "
                              "stays shared); nearest: each item's nearest pool rows by the "
                              "varying part of its question")
    shot_seed: int = Field(0, ge=0, description="the random shots' seed")


class PromptSettings(Section):
    """One [[prompts]] entry: a named prompt variant (`evalloop eval --prompt NAME`, compared in
    `evalloop arena --prompts`). Keys left out keep the task's own."""

    name: StrictStr = Field(min_length=1)
    system_prompt: StrictStr | None = Field(None, description="default: the task's")
    instruction: StrictStr | None = Field(
        None, description="replaces each row's instruction; {instruction} stands for the row's "
                          "own (e.g. \"{instruction} Answer with JSON only.\")")
    shots: int | None = Field(None, ge=0, le=MAX_SHOTS, description="default: [generation] shots")
    shot_selection: ShotSelection | None = Field(None, description="default: [generation]'s")


class SuiteCheckSettings(Section):
    """One entry of [suite] checks."""

    name: StrictStr = Field(description="a registered check (evals.rules), \"similarity\" or "
                                        "\"rubric\" (evals.rubric)")
    required: bool = False
    params: dict[str, Any] = Field(default_factory=dict, description="the check's keyword args")
    applies: Literal["all", "json", "text"] = Field(
        "all", description="items whose reference is JSON, is not, or all")

    @field_validator("name")
    @classmethod
    def _known(cls, name: str, info: ValidationInfo) -> str:
        checks = (info.context or {}).get("checks")
        if checks is not None and (problem := checks.unknown(name)):
            raise ValueError(problem)
        return name

    @field_validator("params")
    @classmethod
    def _accepted(cls, params: dict, info: ValidationInfo) -> dict:
        checks = (info.context or {}).get("checks")
        name = info.data.get("name")
        if checks is not None and name and not checks.unknown(name):
            if problems := checks.param_problems(name, params):
                raise ValueError("; ".join(problems))
        return params


class SuiteSettings(Section):
    """[suite]: which checks a task runs (or `file`, a TOML with the same keys at its top)."""

    version: SuiteVersion = Field(description="stored with every score; bump on any change")
    checks: tuple[SuiteCheckSettings, ...] = Field(strict=False, min_length=1)
    file: TomlFile | None = Field(None, description="a suite TOML, relative to the task TOML")

    @classmethod
    def _rules(cls, data, context):
        problems = []
        if "file" in data:
            path, loaded, problem = _read_suite_file(data["file"], context)
            if problem:
                return None, [(("file",), problem)]
            data = {**loaded, "file": path}
        checks = data.get("checks")
        if isinstance(checks, list) and checks and all(isinstance(c, dict) for c in checks) \
                and not any(c.get("required") is True for c in checks):
            problems.append((("checks",), "at least one check must be required "
                                          "(required = true)"))
        return data, problems


def _read_suite_file(value: Any, context: Mapping) -> tuple[Path | None, dict, str | None]:
    if not isinstance(value, (str, Path)):
        return None, {}, f"must be a path string, got {value!r}"
    path = (Path(context.get("root", ".")) / value).resolve()
    if problem := file_problem(path):
        return path, {}, f"suite file {path} {problem}"
    try:
        return path, tomllib.loads(path.read_text(encoding="utf-8")), None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return path, {}, f"suite file {path} cannot be read: {exc}"


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
    search: bool = Field(True, description="a cycle tries learning rates x1, x2, x0.5 as its "
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
        if "alpha" not in data and _positive_int(rank):
            data["alpha"] = 2.0 * rank
        batch = data.get("batch_size", cls.model_fields["batch_size"].default)
        ranks = data.get("processes", 1)
        if _positive_int(batch) and _positive_int(ranks) and batch % ranks:
            problems.append((("processes",), "batch_size must be a multiple of processes (each "
                                             "rank takes batch_size / processes rows of every "
                                             "batch)"))
        gens = data.get("grpo_num_generations", cls.model_fields["grpo_num_generations"].default)
        if (str(data.get("method", "")).endswith("grpo") and _positive_int(batch)
                and _positive_int(gens) and batch % gens):
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


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


class TeacherSettings(Section):
    """[targeted.teacher]: a local model, or an OpenAI-compatible endpoint with base_url."""

    model: StrictStr = Field(min_length=1, description="a model name/path, or the endpoint's "
                                                       "model name with base_url")
    base_url: StrictStr | None = Field(None, description='e.g. "http://127.0.0.1:8000/v1"')
    api_key_env: StrictStr | None = Field(
        None, description="the NAME of the environment variable holding the key (never the key)")
    per_prompt: int = Field(3, ge=1, le=20, description="pairs asked for in one prompt")
    max_new_tokens: int = Field(512, ge=16, le=8192)
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="endpoint only; local is greedy")
    timeout_s: float = Field(120.0, ge=1.0, le=3600.0)
    concurrency: int = Field(DEFAULT_CONCURRENCY, ge=1, le=64,
                             description="endpoint requests in flight at once")

    @property
    def display(self) -> str:
        return f"{self.model}@{self.base_url}" if self.base_url else self.model


class TargetedSettings(Section):
    """[targeted]: targeted data from dev failures, and its curation thresholds."""

    strategies: tuple[StrategyName, ...] = Field(
        ("corrections", "retrieval"), strict=False, min_length=1,
        description="default: corrections, retrieval, + generator / teacher when configured")
    n: int = Field(200, ge=1, le=1_000_000, description="targeted examples wanted (replay on top)")
    seed: int = 0
    generator: StrictStr | None = Field(
        None, description='a registered generator ("demo") or "package.module:function"')
    replay_share: float = Field(0.2, ge=0.0, le=0.9,
                                description="share of the dataset that is original train rows")
    loss_weight: float = Field(
        0.0, ge=0.0, le=10.0, description="also rank pool rows by the model's answer loss "
                                          "(a percentile times this weight); 0 = off")
    pool: Literal["auto", "off"] = Field(
        "auto", description='"auto": a cycle also trains on pool rows its plan picks (the whole '
                            'pool first, then the rows the champion does not know); "off": the '
                            'targeted rows only')
    benchmark_data: TomlDir | None = Field(
        None, description="decontaminate against these benchmarks' questions")
    # curation thresholds (loop.targeted.curate.CurateConfig, same names)
    ngram: int = Field(13, ge=1, le=64, description="n-gram length for overlap")
    ngram_overlap: float = Field(0.5, ge=0.0, le=1.0)
    contamination_similarity: float = Field(0.8, ge=0.0, le=1.0)
    label_similarity: float = Field(0.95, ge=0.0, le=1.0)
    benchmark_similarity: float = Field(0.9, ge=0.0, le=1.0)
    duplicate_similarity: float = Field(0.95, ge=0.0, le=1.0)
    teacher: TeacherSettings | None = None

    @classmethod
    def _rules(cls, data, context):
        problems = []
        names = data.get("strategies")
        if names is None:
            names = ["corrections", "retrieval"] + ["generator"] * bool(data.get("generator")) \
                + ["teacher"] * bool(data.get("teacher"))
        if isinstance(names, (list, tuple)) and all(isinstance(s, str) for s in names):
            names = list(dict.fromkeys(names))
            if "generator" in names and not data.get("generator"):
                problems.append((("strategies",), "strategy 'generator' needs [targeted] "
                                                  "generator (e.g. \"demo\")"))
            if "teacher" in names and not data.get("teacher"):
                problems.append((("strategies",), "strategy 'teacher' needs a "
                                                  "[targeted.teacher] table"))
        data["strategies"] = names
        return data, problems


class GateSettings(Section):
    """[gate]: when a candidate replaces the champion (loop/cycle/gate.py)."""

    min_gain: float = Field(0.02, ge=0, description="test pass-rate gain needed")
    alpha: float = Field(0.05, ge=0, lt=1, description="significance level (two-sided intervals)")
    power: float = Field(0.95, ge=0.5, lt=1, description="chance a check sees a change of its "
                                                          "minimum detectable effect (MDE)")
    category_tolerance: float = Field(0.05, ge=0, description="largest category drop allowed")
    benchmark_tolerance: float = Field(0.05, ge=0, description="largest drop allowed on one "
                                                               "benchmark metric (accuracy)")
    pooled_tolerance: float = Field(0.03, ge=0, description="largest drop allowed on the mean "
                                                            "accuracy over the benchmarks")
    # None: gold_logprob is reported, not gated; a task LoRA moved it by -0.24 nats (sd 1.5 per
    # item) at an unchanged accuracy (bench/gate_power.py, docs/gate.md)
    logprob_tolerance: float | None = Field(None, ge=0, description="largest drop allowed on the "
                                            "gold choice's mean log-probability (nats per item)")
    cannot_tell: CannotTell = Field(
        "keep_if_small_gain", description='a benchmark check whose MDE exceeds its tolerance: '
        '"keep" the champion, "keep_if_small_gain" (task gain below small_gain), or "ignore"')
    # 0.05: the loop's second cycles gained 5-14 points on real tasks (bench/loop_vs_baselines.py)
    # with benchmark items too few to tell (the shared tasks' limit = 40); 0.10 kept all of them
    small_gain: float = Field(0.05, ge=0, description="task gains below this are small")
    require_rating: bool = Field(True, description="a pairwise rating must exist and improve")


class BenchmarksSettings(Section):
    """[benchmarks]: the forgetting check, lm-eval tasks on the champion and the candidate."""

    tasks: Names = DEFAULT_BENCHMARK_TASKS
    limit: int | None = Field(None, ge=1, description="seeded items per task in a cycle; unset: "
                                                      "sized from `seconds`")
    # 150 s: a pooled forgetting MDE under 3 points at the planning spreads, the candidate's
    # benchmarks within the 3 minutes of issue 29 (evals/benchmark_sizing.py, docs/gate.md)
    seconds: float = Field(150.0, gt=0, description="without `limit`: the candidate's scoring "
                           "time (reference 2-core CPU seconds), split over the tasks to "
                           "minimise the pooled check's variance")
    items: dict[StrictStr, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict, description="seeded items of named tasks, e.g. {arc_easy = 900}: "
                                          "these win over `limit` and `seconds`")
    data_dir: TomlDir | None = Field(None, description="local benchmark data (else the hub)")
    backend: BenchmarkBackend = "evalloop"

    @classmethod
    def _rules(cls, data, context):
        tasks, items = data.get("tasks", DEFAULT_BENCHMARK_TASKS), data.get("items")
        if not (isinstance(items, dict) and isinstance(tasks, (list, tuple))):
            return data, []
        return data, [(("items",), f"'{name}' is not among the tasks ({', '.join(tasks)})")
                      for name in items if name not in tasks]


class CycleSettings(Section):
    """[cycle]: the nightly cycle."""

    base_model: StrictStr = Field(DEFAULT_MODEL, description="the first champion")
    seed: int = 0
    benchmarks: bool = Field(True, description="false skips the forgetting check")
    arena: bool = Field(True, description="false skips pairwise ratings (and the gate's need)")
    # measured (bench/loop_vs_baselines.py): 15 minutes keeps every shared task's cycle there on
    # a 2-core CPU; half of it is training's (loop/targeted/plan.py TRAIN_SHARE)
    max_minutes: float | None = Field(
        15.0, gt=0, description="time budget of one cycle: bounds its training data and epochs "
                                "(loop/targeted/plan.py); none = no bound")
    # the plan's training rate: never the wall time of earlier runs, which moves with the
    # machine's load and would make the same seeds train different data (loop/targeted/plan.py)
    tokens_per_s: float | None = Field(
        None, gt=0, description="forward tokens per second training runs at, for the time "
                                "budget's plan; none = this device's default (cpu 480, cuda "
                                "4000); a report's training line gives the measured rate")
    prompt_shots: int = Field(4, ge=0, le=MAX_SHOTS,
                              description="the prompt arm: the champion zero-shot and with this "
                                          "many shots on dev, beside the candidate; 0 skips it")


class TrackingSettings(Section):
    """[tracking]: MLflow runs for training, evaluation and cycles (loop/tracking.py)."""

    enabled: bool = Field(True, description="false: log nothing")
    uri: StrictStr | None = Field(None, description="$MLFLOW_TRACKING_URI wins; neither set: "
                                                    "sqlite under the workspace")


class ColumnSettings(Section):
    """[columns]: which of the data's columns (or JSONL fields) holds each part of a row; a part
    not named here is read from the column of its own name."""

    instruction: StrictStr = Field("instruction", min_length=1,
                                   description="what the model is asked (default: the task's "
                                               "`instruction`, else the input alone)")
    input: StrictStr = Field("input", min_length=1, description="the text the instruction "
                                                                  "applies to")
    output: StrictStr = Field("output", min_length=1, description="the reference answer")
    category: StrictStr = Field("category", min_length=1,
                                description="a slice name results are reported by")
    id: StrictStr = Field("id", min_length=1, description="a stable row id")
    messages: StrictStr = Field("messages", min_length=1,
                                description="OpenAI-style chat messages (a row in that shape)")

    @classmethod
    def _rules(cls, data, context):
        names = {part: data.get(part, part) for part in cls.model_fields}
        used = [n for n in names.values() if isinstance(n, str)]
        twice = sorted({n for n in used if used.count(n) > 1})
        return data, [((), f"one column cannot hold two parts: '{n}' is given for "
                           f"{' and '.join(p for p, v in names.items() if v == n)}")
                      for n in twice]


class TaskSettings(Section):
    """A task TOML: its data splits (relative to the TOML) and the stages' tables."""

    name: StrictStr | None = Field(None, min_length=1, description="the task's identity in the "
                                   "store; default: folder-stem-<hash of the TOML's path>")
    description: StrictStr | None = None
    train: TomlData | None = Field(None, description="the pool for targeted data: JSONL (.gz), "
                                   "CSV, TSV, Parquet or a datasets folder (save_to_disk)")
    dev: TomlData | None = Field(None, description="as train; split off train when absent")
    test: TomlData = Field(description="as train: the held-out split the gate compares on")
    dev_fraction: float = Field(0.1, gt=0, lt=1, description="dev share split off train")
    columns: ColumnSettings = ColumnSettings()
    instruction: StrictStr | None = Field(
        None, min_length=1, description="the instruction of every row that has none")
    system_prompt: StrictStr | None = None
    prompts: tuple[PromptSettings, ...] = Field(
        (), strict=False, description="[[prompts]]: named prompt variants to compare")
    answer: AnswerKind | None = Field(
        None, description="what the answers are (default: inferred from the references): "
                          "label, labels (JSON lists), json (objects), number, text (free text, "
                          "scored by similarity), exact")
    labels: tuple[StrictStr, ...] | None = Field(
        None, strict=False, min_length=2, description="the closed label set (default: inferred)")
    generation: GenerationSettings = GenerationSettings()
    suite: SuiteSettings | None = Field(None, description="default: evals.suites.DEFAULT_SUITE")
    training: TrainingSettings = TrainingSettings()
    targeted: TargetedSettings = TargetedSettings()
    gate: GateSettings = GateSettings()
    benchmarks: BenchmarksSettings | None = Field(None, description="absent: no benchmarks")
    cycle: CycleSettings = CycleSettings()
    tracking: TrackingSettings = TrackingSettings()

    _path: Path | None = PrivateAttr(None)
    _tables: dict = PrivateAttr(default_factory=dict)

    @classmethod
    def _rules(cls, data, context):
        if "name" not in data and context.get("stem"):
            data["name"] = context["stem"]
        problems = []
        variants = data.get("prompts")
        if isinstance(variants, list):
            names = [v.get("name") for v in variants if isinstance(v, dict)]
            twice = sorted({n for n in names if isinstance(n, str) and names.count(n) > 1})
            if twice:
                problems.append((("prompts",), f"prompt names must be unique: "
                                               f"{', '.join(twice)} given twice"))
        if data.get("labels") is not None and data.get("answer") not in (None, "label",
                                                                         "labels"):
            problems.append((("labels",), f"a label set needs answer = \"label\" or "
                                          f"\"labels\", not {data['answer']!r}"))
        labels = data.get("labels")
        if isinstance(labels, list) and all(isinstance(x, str) for x in labels):
            if any(not x.strip() for x in labels):
                problems.append((("labels",), "labels must not be empty strings"))
            elif len({x.strip().lower() for x in labels}) < len(labels):
                problems.append((("labels",), "labels must be distinct (case is ignored)"))
        return data, problems

    @property
    def path(self) -> Path:
        """The task TOML this was read from."""
        if self._path is None:
            raise ValueError("settings built in code have no file (use load_settings)")
        return self._path

    @property
    def tables(self) -> dict[str, dict]:
        """The TOML's tables as written: the cycle's identity hashes them (ids stay stable)."""
        return self._tables


def json_schema() -> dict:
    """The task TOML's JSON Schema (what `evalloop schema` writes, for editors), in draft-07:
    the newest draft TOML editors (Taplo, Even Better TOML) read; pydantic's `$defs` become
    draft-07's `definitions`."""
    text = json.dumps(TaskSettings.model_json_schema()).replace('"#/$defs/', '"#/definitions/')
    schema = json.loads(text)
    return {"$schema": "http://json-schema.org/draft-07/schema#", "title": "evalloop task",
            **{k: v for k, v in schema.items() if k not in ("$defs", "title")},
            "definitions": schema.get("$defs", {})}


# ---------------------------------------------------------------------------- loading

def task_files(path: str | Path) -> list[Path]:
    """A task TOML and the files it names (splits, suite file), read leniently and never
    validated: what outputs must not replace, even for a task that no longer loads."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return [path]
    suite = raw.get("suite")
    names = [raw.get(k) for k in ("train", "dev", "test")] + [
        suite.get("file") if isinstance(suite, dict) else None]
    return [path] + [(path.parent / n).resolve() for n in names if isinstance(n, str) and n]


def default_task_name(path: Path) -> str:
    """A nameless task's identity: its folder and file name with a hash of the TOML's resolved
    path, so `A/task.toml` and `B/task.toml` never share one, and editing or adding rows keeps
    it (history and the champion carry over). Moving the file changes it: give `name` to keep
    one across moves."""
    path = Path(path).resolve()
    return f"{path.parent.name}-{path.stem}-{content_hash(str(path), length=8)}".lstrip("-")


def load_settings(path: str | Path, checks: CheckVocabulary | None = None) -> TaskSettings:
    """Read and validate a task TOML; raise one ConfigError listing every problem."""
    path = Path(path)
    if problem := file_problem(path):
        raise ConfigError(f"Task file {path} {problem} (expected a task TOML, see README).")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Task file {path} is not valid TOML: {exc}.") from None
    except OSError as exc:
        raise ConfigError(f"Task file {path} cannot be read: {exc.strerror}.") from None
    return parse_settings(raw, path, checks)


def parse_settings(raw: dict, path: str | Path, checks: CheckVocabulary | None = None
                   ) -> TaskSettings:
    """Validate an already-read TOML document as if it were the file at `path`."""
    path = Path(path).resolve()
    context = {"root": path.parent, "stem": default_task_name(path), "checks": checks}
    try:
        settings = TaskSettings.model_validate(raw, context=context)
    except ValidationError as exc:
        suite_file = (raw.get("suite") or {}).get("file")
        files = {"suite": (path.parent / suite_file).resolve()} \
            if isinstance(suite_file, str) else {}
        raise ConfigError(problems_message(exc, TaskSettings, path, files)) from None
    settings._path = path
    settings._tables = {k: v for k, v in raw.items() if isinstance(v, dict)}
    return settings


def with_overrides(settings: TaskSettings, section: str, **changes: Any) -> Any:
    """One section validated again from its TOML table with some keys replaced (command-line
    flags), e.g. `with_overrides(s, "targeted", n=50)`; problems read as load_settings's do."""
    data = {**settings.tables.get(section, {}), **changes}
    kind = submodel(TaskSettings, section)
    try:
        return kind.model_validate(data, context={"root": settings.path.parent})
    except ValidationError as exc:
        raise ConfigError(problems_message(exc, TaskSettings, settings.path,
                                           prefix=(section,))) from None
