"""What the targeted-data stage reads: its [targeted] settings (validated with the task, in
loop.core.settings) with command-line overrides, dev failures, corrections and benchmark questions.

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
    api_key_env = "TEACHER_API_KEY"   # the variable's NAME (default: $OPENAI_API_KEY if set)
    concurrency = 4               # endpoint requests in flight at once
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, fields
from pathlib import Path

from loop.targeted import curate as cur
from loop.core.errors import EvalloopError, TaskDataError
from loop.core.settings import TargetedSettings, TaskSettings
from loop.core.settings_load import with_overrides
from loop.store import failures as failure_queries
from loop.store import runs as run_queries
from loop.store import targeted as targeted_queries
from loop.store.db import Store
from loop.targeted.candidates import ClusterTarget, Correction, FailureCase
from loop.data.tasks import Task

QUESTION_FIELDS = ("question", "ctx", "query", "prompt", "goal", "sentence", "text")
CURATE_KEYS = ("ngram", "ngram_overlap", "contamination_similarity", "label_similarity",
               "benchmark_similarity", "duplicate_similarity")


def targeted_config(settings: TaskSettings, strategies=None, n: int | None = None,
                    seed: int | None = None) -> TargetedSettings:
    """The task's [targeted] settings with command-line overrides (validated like the file)."""
    changes = {k: v for k, v in (("strategies", strategies), ("n", n), ("seed", seed))
               if v is not None}
    return with_overrides(settings, "targeted", **changes) if changes else settings.targeted


def curate_config(cfg: TargetedSettings) -> cur.CurateConfig:
    """Curation's thresholds: the [targeted] keys of the same names over curate's defaults."""
    return cur.CurateConfig(**{k: getattr(cfg, k) for k in CURATE_KEYS})


def batch_identity(cfg: TargetedSettings) -> dict:
    """What makes two batches the same (the API key is never part of it: only its name)."""
    teacher = cfg.teacher.model_dump() if cfg.teacher and "teacher" in cfg.strategies else None
    curate = curate_config(cfg)
    return {"strategies": list(cfg.strategies), "n": cfg.n, "seed": cfg.seed,
            "generator": cfg.generator, "replay_share": cfg.replay_share,
            "loss_weight": cfg.loss_weight,
            "benchmark_data": str(cfg.benchmark_data) if cfg.benchmark_data else None,
            "curate": {f.name: getattr(curate, f.name) for f in fields(curate)},
            "teacher": teacher}


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
                              f"`evalloop eval --task {task.settings.path} --split dev` first.")
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


