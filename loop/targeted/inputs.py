"""What the targeted-data stage reads: its [targeted] config, dev failures, corrections and
benchmark questions. Config errors are collected and reported together.

    [targeted]
    strategies = ["corrections", "retrieval", "generator"]   # default: what is configured
    n = 200                       # targeted examples wanted (replayed train rows come on top)
    seed = 0
    loss_weight = 0.0             # also rank pool rows by the model's loss on their answers
    generator = "demo"            # a registered generator or "package.module:function"
    replay_share = 0.2            # share of the final dataset that is original train rows
    benchmark_data = "../../../shared/benchmarks"   # decontaminate against these questions
    duplicate_similarity = 0.95   # also: contamination_similarity, benchmark_similarity, ngram

    [targeted.teacher]            # local: model = "name or path"; endpoint: add base_url
    model = "gpt-4o-mini"
    base_url = "http://127.0.0.1:8000/v1"
    api_key_env = "TEACHER_API_KEY"   # the variable's NAME; the key itself never goes here
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from loop.targeted import curate as cur
from loop.core.config import TaskConfig
from loop.core.errors import ConfigError, EvalloopError, TaskDataError
from loop.store import failures as failure_queries
from loop.store import runs as run_queries
from loop.store import targeted as targeted_queries
from loop.store.db import Store
from loop.targeted.strategies import ClusterTarget, Correction, FailureCase, check_strategies
from loop.data.tasks import Task
from loop.targeted.teacher import TeacherConfig

QUESTION_FIELDS = ("question", "ctx", "query", "prompt", "goal", "sentence", "text")
CURATE_KEYS = ("ngram", "ngram_overlap", "contamination_similarity", "label_similarity",
               "benchmark_similarity", "duplicate_similarity")


@dataclass(frozen=True)
class TargetedConfig:
    strategies: tuple[str, ...]
    n: int = 200
    seed: int = 0
    generator: str | None = None
    replay_share: float = 0.2
    # Retrieval also ranks pool rows by how badly the current model answers them (answer loss,
    # as a percentile over the pool, times this weight; a cosine gap is 0-1): 0 turns it off.
    loss_weight: float = 0.0
    benchmark_data: Path | None = None
    curate: cur.CurateConfig = field(default_factory=cur.CurateConfig)
    teacher: TeacherConfig | None = None

    def identity(self) -> dict:
        """What makes two batches the same (the API key is never part of it: only its name)."""
        teacher = None if self.teacher is None or "teacher" not in self.strategies else \
            {f.name: getattr(self.teacher, f.name) for f in fields(self.teacher)}
        return {"strategies": list(self.strategies), "n": self.n, "seed": self.seed,
                "generator": self.generator, "replay_share": self.replay_share,
                "loss_weight": self.loss_weight,
                "benchmark_data": str(self.benchmark_data) if self.benchmark_data else None,
                "curate": {f.name: getattr(self.curate, f.name) for f in fields(self.curate)},
                "teacher": teacher}


def _get(errors: list[str], table: dict, where: str, key: str, kind: type, default: Any,
         low: float | None = None, high: float | None = None) -> Any:
    if key not in table:
        return default
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        errors.append(f"{where}{key} must be {kind.__name__}, got {value!r}")
        return default
    if (low is not None and value < low) or (high is not None and value > high):
        errors.append(f"{where}{key} must be in [{low}, {high}], got {value!r}")
        return default
    return value


def _teacher(errors: list[str], raw: dict) -> TeacherConfig | None:
    if not raw:
        return None
    where = "targeted.teacher."
    if "api_key" in raw:
        errors.append("targeted.teacher.api_key is not allowed: put the key in an environment "
                      "variable and give its name as api_key_env")
    known = {f.name for f in fields(TeacherConfig)}
    errors += [f"unknown key {where}{k}" for k in raw if k not in known | {"api_key"}]
    model = _get(errors, raw, where, "model", str, None)
    if not model:
        errors.append("targeted.teacher.model is required (a model name/path, or the "
                      "endpoint's model name with base_url)")
        return None
    return TeacherConfig(
        model=model, base_url=_get(errors, raw, where, "base_url", str, None),
        api_key_env=_get(errors, raw, where, "api_key_env", str, None),
        per_prompt=_get(errors, raw, where, "per_prompt", int, 3, 1, 20),
        max_new_tokens=_get(errors, raw, where, "max_new_tokens", int, 512, 16, 8192),
        temperature=_get(errors, raw, where, "temperature", float, 0.7, 0.0, 2.0),
        timeout_s=_get(errors, raw, where, "timeout_s", float, 120.0, 1.0, 3600.0))


def targeted_config(config: TaskConfig, strategies=None, n: int | None = None,
                    seed: int | None = None) -> TargetedConfig:
    """The task's [targeted] section with command-line overrides, all problems in one error."""
    raw = config.section("targeted")
    errors: list[str] = []
    known = {f.name for f in fields(TargetedConfig)} - {"curate"} | set(CURATE_KEYS)
    errors += [f"unknown key targeted.{k}" for k in raw if k not in known]
    w = "targeted."
    generator = _get(errors, raw, w, "generator", str, None)
    teacher = _teacher(errors, _get(errors, raw, w, "teacher", dict, {}))
    names = strategies if strategies is not None else raw.get("strategies")
    if names is None:
        names = ["corrections", "retrieval"] + ["generator"] * bool(generator) + \
            ["teacher"] * bool(teacher)
    if not isinstance(names, (list, tuple)) or not all(isinstance(s, str) for s in names) \
            or not names:
        errors.append(f"targeted.strategies must be a non-empty list of names, got {names!r}")
        names = []
    errors += check_strategies(names)
    if "generator" in names and not generator:
        errors.append("strategy 'generator' needs targeted.generator (e.g. \"demo\")")
    if "teacher" in names and not teacher:
        errors.append("strategy 'teacher' needs a [targeted.teacher] section")
    bench = _get(errors, raw, w, "benchmark_data", str, None)
    bench_dir = (config.path.parent / bench).resolve() if bench else None
    if bench_dir is not None and not bench_dir.is_dir():
        errors.append(f"targeted.benchmark_data directory {bench_dir} does not exist")
    defaults = cur.CurateConfig()
    curate = replace(defaults, **{k: _get(errors, raw, w, k, type(getattr(defaults, k)),
                                          getattr(defaults, k), *((1, 64) if k == "ngram"
                                                                   else (0.0, 1.0)))
                                  for k in CURATE_KEYS})
    cfg = TargetedConfig(
        strategies=tuple(dict.fromkeys(names)),
        n=n if n is not None else _get(errors, raw, w, "n", int, 200, 1, 1_000_000),
        seed=seed if seed is not None else _get(errors, raw, w, "seed", int, 0),
        generator=generator,
        replay_share=_get(errors, raw, w, "replay_share", float, 0.2, 0.0, 0.9),
        loss_weight=_get(errors, raw, w, "loss_weight", float, TargetedConfig.loss_weight,
                         0.0, 10.0),
        benchmark_data=bench_dir, curate=curate, teacher=teacher)
    if cfg.n < 1:
        errors.append(f"n must be a positive number of examples, got {cfg.n}")
    if errors:
        raise ConfigError(f"Task file {config.path} has {len(errors)} problem(s) in [targeted]: "
                          + "; ".join(errors) + ".")
    return cfg


class NoFailuresError(EvalloopError):
    """There is no scored dev run (with failure records) to build targeted data from."""


@dataclass(frozen=True)
class FailureSet:
    run_id: str
    model_id: str
    clusters: tuple[ClusterTarget, ...]
    passed: tuple[str, ...] = ()  # dev items the run scored and the model passed (for replay)


# ---------------------------------------------------------------------------- inputs

def model_name(store: Store, model_id: str) -> str:
    """The name a model was loaded by (e.g. `base+adapter_dir`), from its fingerprint."""
    name = run_queries.model_name(store, model_id)
    if name is None:
        raise NoFailuresError(f"Model {model_id} is not in the store: evaluate it first.")
    return name


def find_dev_run(store: Store, task: Task, model: str | None = None) -> dict:
    """The latest finished dev eval run of the task (for `model`, a name or fingerprint)."""
    model_ids: list[str] = []
    if model:
        from loop.models.loading import fingerprint, parse_model_name

        model_ids = [model] if run_queries.has_runs(store, model) \
            else [fingerprint(parse_model_name(model))]
    run = run_queries.latest_eval_run(store, task.name, "dev", model_ids, finished=True)
    if run is None:
        who = f" for model {model}" if model else ""
        raise NoFailuresError(f"No finished dev evaluation of task '{task.name}'{who}: run "
                              f"`evalloop eval --task {task.config.path} --split dev` first.")
    return run


def load_failures(store: Store, task: Task, run_id: str | None = None,
                  model: str | None = None) -> FailureSet:
    """Failure records and clusters of one dev run, joined to the dev items and model outputs.
    A run on another split is refused: the gate compares on test, so test must stay unseen."""
    run = run_queries.get_run(store, run_id) if run_id else find_dev_run(store, task, model)
    if run is None:
        raise NoFailuresError(f"No run '{run_id}' in {store.path}.")
    if run["split"] != "dev":
        raise TaskDataError(f"Run {run['run_id']} scored the {run['split']} split; targeted data "
                            "is mined from dev failures only (test items must stay unseen).")
    if "failures" not in store.tables():
        raise NoFailuresError("No failure records yet: run `evalloop failures` on the dev run.")
    rows = failure_queries.failures_with_outputs(store, run["run_id"])
    labels = failure_queries.cluster_labels(store, run["run_id"])
    dev = {e.id: e for e in task.splits.get("dev", ())}
    groups: dict[str, list[FailureCase]] = defaultdict(list)
    for r in rows:
        if r["example_id"] not in dev:
            continue  # task data changed since the run; never reach into other splits
        cats = tuple(r["categories"] or ())
        key = r["cluster_id"] or f"category:{cats[0] if cats else 'failed'}"
        sigs = tuple(sorted(set(r.get("signatures") or ())))
        groups[str(key)].append(FailureCase(dev[r["example_id"]], r["output"] or "", cats, sigs))
    clusters = sorted((ClusterTarget(k, labels.get(k, k), tuple(v)) for k, v in groups.items()),
                      key=lambda c: (-len(c.failures), c.cluster_id))
    failed = {r["example_id"] for r in rows}
    passed = tuple(i for i in run_queries.run_example_ids(store, run["run_id"])
                   if i in dev and i not in failed)
    return FailureSet(run["run_id"], run["model_id"], tuple(clusters), passed)


def load_corrections(store: Store, task: Task) -> tuple[Correction, ...]:
    """Reviewer corrections of this task's items, the latest per item."""
    items = {e.id: e for split in task.splits.values() for e in split}
    latest: dict[str, Correction] = {}
    for r in targeted_queries.task_corrections(store, task.name):
        if r["example_id"] in items and r["example_id"] not in latest:
            latest[r["example_id"]] = Correction(r["correction_id"], items[r["example_id"]],
                                                 r["corrected_output"], r["prediction_id"],
                                                 r["reviewer"])
    return tuple(latest[k] for k in sorted(latest))


def benchmark_questions(directory: Path) -> list[cur.Reference]:
    """Question texts of every `*/*.jsonl` under a benchmark data directory (HF schemas: the
    first of QUESTION_FIELDS present). Read in place, never copied."""
    refs: dict[str, cur.Reference] = {}
    for path in sorted(directory.glob("*/*.jsonl")):
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                text = next((record[f] for f in QUESTION_FIELDS
                             if isinstance(record, dict) and isinstance(record.get(f), str)), "")
                if text.strip():
                    label = f"benchmark:{path.parent.name}/{path.name}:{lineno}"
                    refs.setdefault(cur.norm_text(text), cur.Reference(label, text))
    return list(refs.values())


