"""Typed rows of the foundation tables (models, tasks and their examples, runs) and of what
reviewers send through the app's inbox (reviews, corrections), which loop/store/db.py itself
writes; the stages' rows are in loop/store/rows.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from loop.store.rows import Row


@dataclass(frozen=True)
class ModelRow(Row):
    TABLE: ClassVar[str] = "models"
    model_id: str  # fingerprint of the base weights and adapter weights
    name: str
    base: str
    base_path: str | None
    adapter: str | None
    parent_id: str | None
    created_at: datetime
    meta: Any  # JSON


@dataclass(frozen=True)
class TaskRow(Row):
    TABLE: ClassVar[str] = "tasks"
    task_id: str
    config_path: str
    data_hash: str
    updated_at: datetime


@dataclass(frozen=True)
class ExampleRow(Row):
    TABLE: ClassVar[str] = "examples"
    task_id: str
    split: str
    example_id: str
    instruction: str
    input: str | None
    output: str
    category: str | None


@dataclass(frozen=True)
class RunRow(Row):
    TABLE: ClassVar[str] = "runs"
    run_id: str
    kind: str
    task_id: str | None
    model_id: str | None
    split: str | None
    params: Any  # JSON
    status: str
    started_at: datetime
    finished_at: datetime | None
    summary: Any  # JSON


# ---------------------------------------------------------------------------- human review

@dataclass(frozen=True)
class ReviewRow(Row):
    """One action a reviewer took in the app (through the inbox)."""
    TABLE: ClassVar[str] = "reviews"
    review_id: str
    task_id: str | None
    example_id: str | None
    prediction_id: str | None
    action: str
    note: str | None
    category: str | None
    reviewer: str | None
    created_at: datetime | str  # the inbox keeps ISO text; DuckDB casts it


@dataclass(frozen=True)
class CorrectionRow(Row):
    TABLE: ClassVar[str] = "corrections"
    correction_id: str
    task_id: str
    example_id: str
    prediction_id: str | None
    corrected_output: str
    reviewer: str | None
    created_at: datetime | str
