"""Queries of the targeted-data tables: `generated_examples` (every candidate with its verdict),
`datasets` (one finished batch's manifest and file) and `corrections` (reviewers' answers)."""

from __future__ import annotations

from collections.abc import Sequence

from loop.store.db import Store
from loop.store.rows import DatasetRow, GeneratedExampleRow, write


def replace_batch(store: Store, batch_id: str, generated: Sequence[GeneratedExampleRow],
                  dataset: DatasetRow) -> None:
    """A batch's candidates and its dataset row, replacing an earlier attempt, in one
    transaction."""
    with store.transaction():
        store.execute("DELETE FROM generated_examples WHERE batch_id = ?", [batch_id])
        write(store, generated)
        store.execute("DELETE FROM datasets WHERE batch_id = ?", [batch_id])
        write(store, [dataset])


def batch_dataset(store: Store, batch_id: str) -> dict | None:
    """manifest_hash and path of a finished batch."""
    rows = store.query("SELECT manifest_hash, path FROM datasets WHERE batch_id = ?", [batch_id])
    return rows[0] if rows else None


def task_corrections(store: Store, task_id: str) -> list[dict]:
    """Corrections of the task, newest first (none on a store without the table)."""
    if "corrections" not in store.tables():
        return []
    return store.query("SELECT * FROM corrections WHERE task_id = ? ORDER BY created_at DESC, "
                       "correction_id", [task_id])


def corrections_with_outputs(store: Store, task_id: str) -> list[dict]:
    """Corrections of the task, newest first, with the output they corrected."""
    return store.query("""
        SELECT c.correction_id, c.example_id, c.corrected_output, c.reviewer, c.prediction_id,
               p.output, p.model_id
        FROM corrections c LEFT JOIN predictions p USING (prediction_id)
        WHERE c.task_id = ? ORDER BY c.created_at DESC, c.correction_id""", [task_id])
