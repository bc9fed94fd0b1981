"""Typed rows of the tables the stages write, and the one function that writes them.

    write(store, [ScoreRow(...), ...], on_conflict="replace")

Each record's fields are its table's columns (tests/test_store.py checks them against the
migrated schema in loop/store/db.py), so a misspelt or missing column fails where the row is
built, not as a DuckDB error in the middle of a stage. Stages build these records; only
loop/store calls `Store.insert` (tests/test_architecture.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, ClassVar, Protocol


class Inserts(Protocol):
    """What `write` needs of a Store (db.py builds the foundation rows, so no import back)."""

    def insert(self, table: str, rows: Sequence[dict], on_conflict: str = "nothing") -> None: ...


@dataclass(frozen=True)
class Row:
    TABLE: ClassVar[str]

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_record(cls, record: dict[str, Any]):
        """A row from a JSON record (the app's inbox): its keys that are columns, None for the
        optional columns it lacks; other keys are dropped."""
        return cls(**{f.name: record.get(f.name) for f in fields(cls)})


def write(store: Inserts, rows: Sequence[Row], on_conflict: str = "nothing") -> None:
    """Insert rows of one table; on a primary-key conflict keep the old row ('nothing') or
    'replace' it."""
    if not rows:
        return
    tables = {type(r).TABLE for r in rows}
    if len(tables) != 1:
        raise ValueError(f"one table per write, got {sorted(tables)}")
    store.insert(tables.pop(), [r.as_dict() for r in rows], on_conflict=on_conflict)


# ---------------------------------------------------------------------------- evaluation

@dataclass(frozen=True)
class PredictionRow(Row):
    TABLE: ClassVar[str] = "predictions"
    prediction_id: str
    model_id: str
    prompt_hash: str
    gen_hash: str
    prompt: str
    output: str
    latency_s: float | None
    prompt_tokens: int | None
    output_tokens: int | None
    created_at: datetime


@dataclass(frozen=True)
class RunItemRow(Row):
    TABLE: ClassVar[str] = "run_items"
    run_id: str
    example_id: str
    prediction_id: str
    shot_ids: list[str] | None  # the pool rows shown as shots, None for zero-shot


@dataclass(frozen=True)
class ScoreRow(Row):
    TABLE: ClassVar[str] = "scores"
    prediction_id: str
    task_id: str
    example_id: str
    suite_version: str
    check_name: str
    check_version: str
    passed: bool
    value: float | None
    required: bool
    detail: Any  # JSON
    created_at: datetime


@dataclass(frozen=True)
class EmbeddingRow(Row):
    TABLE: ClassVar[str] = "embeddings"
    text_hash: str
    embed_model: str
    vector: list[float]


# ---------------------------------------------------------------------------- failures

@dataclass(frozen=True)
class FailureRow(Row):
    TABLE: ClassVar[str] = "failures"
    run_id: str
    example_id: str
    prediction_id: str
    task_id: str
    model_id: str
    split: str | None
    categories: list[str]
    failed_checks: list[str]
    similarity: float | None
    cluster_id: str | None
    signatures: list[str]  # evals.signatures: what went wrong, one per failed check


@dataclass(frozen=True)
class ClusterRow(Row):
    TABLE: ClassVar[str] = "clusters"
    cluster_id: str
    run_id: str
    label: str | None
    dominant_category: str | None
    top_terms: list[str]
    size: int
    example_ids: list[str]
    seed: int
    signatures: list[str]  # the signatures that name the cluster


# ---------------------------------------------------------------------------- targeted data

@dataclass(frozen=True)
class GeneratedExampleRow(Row):
    """One candidate of a targeted batch, accepted or rejected with why."""
    TABLE: ClassVar[str] = "generated_examples"
    gen_id: str
    batch_id: str
    task_id: str
    strategy: str
    cluster_id: str | None
    failure_ids: list[str]
    source: Any  # JSON
    example_id: str
    instruction: str
    input: str | None
    output: str
    category: str | None
    status: str  # "accepted" or "rejected"
    reason: str | None
    detail: str | None
    created_at: datetime


@dataclass(frozen=True)
class DatasetRow(Row):
    """A finished targeted batch: its manifest's hash and the JSONL file."""
    TABLE: ClassVar[str] = "datasets"
    manifest_hash: str
    batch_id: str
    task_id: str
    path: str
    counts: dict  # JSON
    created_at: datetime


# ---------------------------------------------------------------------------- benchmarks

@dataclass(frozen=True)
class BenchmarkRunKey:
    """The columns that key one benchmark run, first in both of its tables; limit_n 0 = the
    full set."""
    model_id: str
    benchmark: str
    benchmark_version: str
    limit_n: int
    shots: int


@dataclass(frozen=True)
class BenchmarkResultRow(Row, BenchmarkRunKey):
    """One metric of one (sub)task of a benchmark run."""
    TABLE: ClassVar[str] = "benchmark_results"
    task: str
    metric: str
    value: float | None
    stderr: float | None
    n: int
    task_version: str
    higher_is_better: bool | None
    model_name: str | None
    base: str
    adapter_hash: str | None
    seed: int | None
    data_source: str | None
    lm_eval_version: str
    backend: str
    dtype: str | None
    wall_s: float | None
    created_at: datetime


@dataclass(frozen=True)
class BenchmarkSampleRow(Row, BenchmarkRunKey):
    """One item of a benchmark run (evals.benchmarks.sample_rows)."""
    TABLE: ClassVar[str] = "benchmark_samples"
    task: str
    doc_id: int
    prompt: str | None
    choices: Any  # JSON
    target: str | None
    responses: Any  # JSON
    metrics: Any  # JSON
    doc: Any  # JSON
    created_at: datetime


# ---------------------------------------------------------------------------- arena

@dataclass(frozen=True)
class MatchRow(Row):
    """One judged pair (evals.judges.Match.row) or human vote."""
    TABLE: ClassVar[str] = "matches"
    match_id: str
    task_id: str | None
    example_id: str | None
    model_a: str
    model_b: str
    judge: str
    shown_first: str | None
    verdict: str | None
    error: str | None
    voter: str | None
    detail: Any  # JSON
    created_at: datetime


@dataclass(frozen=True)
class RatingSnapshotRow(Row):
    TABLE: ClassVar[str] = "rating_snapshots"
    snapshot_id: str
    task_id: str | None
    judge: str  # a judge's name, or "all"
    n: int
    seed: int
    ratings: Any  # JSON: the leaderboard rows
    created_at: datetime


# ---------------------------------------------------------------------------- training

@dataclass(frozen=True)
class TrainingRunRow(Row):
    TABLE: ClassVar[str] = "training_runs"
    train_id: str
    task_id: str | None
    base: str
    base_model_id: str | None
    parent_adapter: str | None
    adapter_path: str
    model_id: str
    dataset_hash: str | None
    config: dict  # JSON
    seed: int | None
    status: str  # "done" or "stopped_early"
    total_steps: int
    steps_done: int
    resumed_from_step: int | None
    n_train: int
    n_dev: int
    device: str
    precision: str
    tokens_per_s: float | None
    peak_mem_mb: float | None
    train_loss: float | None
    best_eval_loss: float | None
    versions: dict  # JSON
    created_at: datetime
    finished_at: datetime


@dataclass(frozen=True)
class TrainLogRow(Row):
    TABLE: ClassVar[str] = "train_logs"
    train_id: str
    step: int
    loss: float | None
    eval_loss: float | None
    learning_rate: float | None
    tokens_per_s: float | None
    peak_mem_mb: float | None
    epoch: float | None
    reward: float | None  # GRPO: mean suite reward of the step's completions


# ---------------------------------------------------------------------------- cycles

@dataclass(frozen=True)
class CycleRow(Row):
    TABLE: ClassVar[str] = "cycles"
    cycle_id: str
    task_id: str
    attempt: int
    status: str
    champion_id: str | None
    champion_name: str | None
    started_at: datetime
    candidate_id: str | None = None
    candidate_name: str | None = None
    finished_at: datetime | None = None
    summary: Any = None  # JSON


@dataclass(frozen=True)
class CycleStageRow(Row):
    TABLE: ClassVar[str] = "cycle_stages"
    cycle_id: str
    stage: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    result: str | None  # JSON text
    error: str | None


@dataclass(frozen=True)
class ChampionRow(Row):
    TABLE: ClassVar[str] = "champions"
    task_id: str
    model_id: str
    model_name: str
    since: datetime
    cycle_id: str | None
    reason: str


@dataclass(frozen=True)
class GateDecisionRow(Row):
    TABLE: ClassVar[str] = "gate_decisions"
    cycle_id: str
    promote: bool
    p_value: float | None
    reasons: Any  # JSON
    champion_pass_rate: float | None
    candidate_pass_rate: float | None
    created_at: datetime
