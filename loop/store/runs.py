"""Queries of the evaluation tables: `models`, `runs`, `run_items` (and the `examples` and
`predictions` they point to)."""

from __future__ import annotations

from loop.store.db import Store


def model_names(store: Store) -> dict[str, str]:
    """model id (fingerprint) -> the name it was loaded by."""
    return {r["model_id"]: r["name"] for r in store.query("SELECT model_id, name FROM models")}


def model_name(store: Store, model_id: str) -> str | None:
    """The name a model was loaded by, from its fingerprint (None when it is not stored)."""
    rows = store.query("SELECT name FROM models WHERE model_id = ?", [model_id])
    return rows[0]["name"] if rows else None


def task_config_paths(store: Store) -> list[str]:
    """The task TOML of every task the store has seen."""
    return [r["config_path"] for r in store.query(
        "SELECT config_path FROM tasks WHERE config_path IS NOT NULL ORDER BY task_id")]


def has_runs(store: Store, model_id: str) -> bool:
    return bool(store.query("SELECT 1 FROM runs WHERE model_id = ?", [model_id]))


def get_run(store: Store, run_id: str) -> dict | None:
    rows = store.query("SELECT * FROM runs WHERE run_id = ?", [run_id])
    return rows[0] if rows else None


FINISHED_EVALS = "SELECT * FROM runs WHERE kind = 'eval' AND status = 'done' "


def finished_eval_runs(store: Store, limit: int) -> list[dict]:
    """The latest finished evaluation runs, newest first."""
    return store.query(FINISHED_EVALS + "ORDER BY finished_at DESC NULLS LAST LIMIT ?", [limit])


def finished_eval_runs_by_prefix(store: Store, prefix: str) -> list[dict]:
    """Finished evaluation runs whose id starts with `prefix`, by id."""
    return store.query(FINISHED_EVALS + "AND starts_with(run_id, ?) ORDER BY run_id", [prefix])


def latest_eval_run(store: Store, task_id: str, split: str, model_ids: list[str] | None = None,
                    finished: bool = False) -> dict | None:
    """The task's latest evaluation run on a split (of one of `model_ids` when given; only a
    finished one with `finished`): run_id, model_id, split."""
    rows = store.query(
        "SELECT run_id, model_id, split, status, started_at FROM runs WHERE kind = 'eval' "
        "AND task_id = ? AND split = ? AND (NOT ? OR status = 'done') "
        "AND (? OR list_contains(?, model_id)) ORDER BY finished_at DESC NULLS LAST LIMIT 1",
        [task_id, split, finished, not model_ids, model_ids or []])
    return rows[0] if rows else None


def latest_unfinished_eval_run(store: Store, task_id: str, split: str,
                               model_ids: list[str] | None = None) -> dict | None:
    """The task's most recently started evaluation on a split that did not finish (running,
    interrupted or failed): run_id, status, started_at."""
    rows = store.query(
        "SELECT run_id, status, started_at FROM runs WHERE kind = 'eval' AND task_id = ? "
        "AND split = ? AND status <> 'done' AND (? OR list_contains(?, model_id)) "
        "ORDER BY started_at DESC NULLS LAST LIMIT 1",
        [task_id, split, not model_ids, model_ids or []])
    return rows[0] if rows else None


def run_example_ids(store: Store, run_id: str) -> list[str]:
    """The items an evaluation run scored, by id."""
    return [r["example_id"] for r in store.query(
        "SELECT example_id FROM run_items WHERE run_id = ? ORDER BY example_id", [run_id])]


def count_run_items(store: Store, run_id: str) -> int:
    return store.query("SELECT count(*) AS n FROM run_items WHERE run_id = ?", [run_id])[0]["n"]


def task_examples(store: Store, task_id: str) -> list[dict]:
    """Every stored item of a task (all splits): instruction, input, output."""
    return store.query("SELECT instruction, input, output FROM examples WHERE task_id = ? "
                       "ORDER BY split, example_id", [task_id])


def run_item_rows(store: Store, run_id: str) -> list[dict]:
    """One row per item of an eval run: reference, prediction, and for failures the failed
    checks, signatures and cluster (columns of loop.exports.ITEM_COLUMNS)."""
    return store.query("""
        SELECT r.run_id, r.task_id, r.model_id, r.split, ri.example_id, e.category,
               f.example_id IS NULL AS passed, e.instruction, e.input, e.output AS reference,
               p.output AS prediction, f.failed_checks, f.signatures,
               f.categories AS failure_categories, f.similarity, f.cluster_id, p.latency_s
        FROM run_items ri
        JOIN runs r ON r.run_id = ri.run_id
        JOIN examples e ON e.task_id = r.task_id AND e.split = r.split
             AND e.example_id = ri.example_id
        JOIN predictions p ON p.prediction_id = ri.prediction_id
        LEFT JOIN failures f ON f.run_id = ri.run_id AND f.example_id = ri.example_id
        WHERE ri.run_id = ? ORDER BY ri.example_id""", [run_id])


def run_shots(store: Store, run_id: str) -> dict[str, list[str]]:
    """example id -> the train-pool ids its few-shot prompt showed, in prompt order (items of
    a zero-shot run are left out)."""
    return {r["example_id"]: list(r["shot_ids"]) for r in store.query(
        "SELECT example_id, shot_ids FROM run_items WHERE run_id = ? AND shot_ids IS NOT NULL "
        "ORDER BY example_id", [run_id])}
