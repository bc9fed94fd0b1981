"""The arena page's reads of the snapshot: which evaluation runs two versions can be compared on,
and the items both answered, with both outputs.
"""

from __future__ import annotations

from loop.store.app_queries import has
from loop.store.db import Store


def arena_choices(store: Store | None) -> list[dict]:
    """(task, split, model) of every finished evaluation run, for picking two versions."""
    if not has(store, "runs"):
        return []
    return store.query("SELECT DISTINCT task_id, split, model_id FROM runs WHERE kind = 'eval' "
                       "AND status = 'done' ORDER BY task_id, split, model_id")


def shared_items(store: Store, task_id: str, split: str, model_a: str, model_b: str
                 ) -> list[dict]:
    """Items both models answered in their latest runs on (task, split), with both outputs."""
    return store.query("""
        WITH latest AS (
            SELECT model_id, run_id FROM runs
            WHERE kind = 'eval' AND status = 'done' AND task_id = ? AND split = ?
            QUALIFY row_number() OVER (PARTITION BY model_id
                                       ORDER BY finished_at DESC NULLS LAST, run_id) = 1),
        outs AS (
            SELECT l.model_id, ri.example_id, p.output FROM latest l
            JOIN run_items ri USING (run_id) JOIN predictions p USING (prediction_id))
        SELECT e.task_id, a.example_id, e.instruction, e.input, e.output AS reference,
               a.output AS output_a, b.output AS output_b
        FROM outs a JOIN outs b ON a.example_id = b.example_id
        JOIN examples e ON e.task_id = ? AND e.split = ? AND e.example_id = a.example_id
        WHERE a.model_id = ? AND b.model_id = ? ORDER BY a.example_id""",
                       [task_id, split, task_id, split, model_a, model_b])
