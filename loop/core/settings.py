"""A task's settings: the task TOML as typed, frozen pydantic models, one per table, parsed once
when the task loads (loop/core/settings_load.py: `load_settings`) and then passed down as
`task.settings`.

One model per TOML table, with the same keys: top-level keys (the data splits, paths relative to
the TOML's folder), [generation], [suite], [training] (loop/core/settings_training.py),
[targeted] + [targeted.teacher], [gate], [benchmarks], [cycle], [tracking], [columns]. The
value types and the tables' base, `Section`, are in loop/core/settings_values.py. Unknown keys,
wrong types and out-of-range values are all reported together, each as
`<file>: [section] key: message` (loop/core/settings_problems.py). `evalloop schema` writes
`TaskSettings`'s JSON Schema for editors.

Checks that need a registry owned above loop.core (the suite's check names and parameters, in
evals.rules) come in through `CheckVocabulary`; strategy names are a closed set here (the
strategies module's registry is tested to match it).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, PrivateAttr, StrictStr, ValidationInfo, field_validator

from loop.core.endpoint import DEFAULT_CONCURRENCY
from loop.core.paths import file_problem
from loop.core.settings_training import TrainingSettings
from loop.core.settings_values import Names, Section, SuiteVersion, TomlData, TomlDir, TomlFile

DEFAULT_MODEL = "smollm2-135m-instruct"
# lm-eval tasks a [benchmarks] table runs by default (evals.benchmark_tasks.STANDARD, in order)
DEFAULT_BENCHMARK_TASKS = ("arc_easy", "arc_challenge", "hellaswag", "mmlu", "truthfulqa_mc1",
                           "truthfulqa_mc2")
StrategyName = Literal["corrections", "retrieval", "generator", "teacher"]
STRATEGY_NAMES: tuple[str, ...] = get_args(StrategyName)
BenchmarkBackend = Literal["evalloop", "hf", "vllm"]
GenerationBackend = Literal["auto", "hf", "vllm"]
ShotSelection = Literal["random", "nearest"]
MAX_SHOTS = 64
CannotTell = Literal["keep", "keep_if_small_gain", "ignore"]  # [gate] cannot_tell
# what a task's answers are (evals.answers.KINDS; loop.core cannot import evals, a test keeps
# the two equal)
AnswerKind = Literal["json", "labels", "number", "label", "text", "exact"]


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
    # measured (bench/prompt_baseline.py, 4 shots, 40 test items): nearest beat random on 4 of
    # the 5 shared tasks by 22-58 points, lost 10 on free text, at a third of the speed; random
    # stays the default until the default prompt's identity (arena names, cached runs) follows
    shot_selection: ShotSelection = Field(
        "random", description="random: the same seeded rows for every item (the shared prefix "
                              "stays shared); nearest: each item's nearest pool rows by the "
                              "varying part of its question (measured stronger on 4 of 5 tasks)")
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
                                "budget's plan; none = this device's default (cpu 360, cuda "
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

    def model_post_init(self, context: Any) -> None:
        """The file it was read from and its tables as written, when settings_load.parse_settings
        validated it (its context names them); None and {} for settings built in code."""
        self._path = (context or {}).get("path")
        self._tables = (context or {}).get("tables", {})

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
