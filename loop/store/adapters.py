"""What `evalloop export --adapter` reads about one adapter model (loop/adapter_export.py)."""

from __future__ import annotations

import json

from loop.store.db import Store


def stored_adapters(store: Store, key: str) -> list[dict]:
    """Adapter models whose id (or id prefix), name or adapter path is `key`."""
    return store.query("SELECT * FROM models WHERE adapter IS NOT NULL AND (model_id = ? OR "
                       "name = ? OR adapter = ? OR starts_with(model_id, ?)) ORDER BY model_id",
                       [key, key, key, key])


def recent_adapters(store: Store, n: int = 5) -> list[dict]:
    """The newest adapter models, for a hint when a name matches none."""
    return store.query("SELECT model_id, name FROM models WHERE adapter IS NOT NULL "
                       "ORDER BY created_at DESC LIMIT ?", [n])


def adapter_records(store: Store, model_id: str) -> dict:
    """What the store knows about one adapter model: its training run, training data, the
    cycle that made it a candidate and that cycle's gate decision, its latest test evaluation
    and its benchmark results. A missing record is None (or empty)."""
    def one(sql: str, params: list) -> dict | None:
        rows = store.query(sql, params)
        return _decode(rows[0]) if rows else None

    training = one("SELECT * FROM training_runs WHERE model_id = ? "
                   "ORDER BY finished_at DESC NULLS LAST LIMIT 1", [model_id])
    dataset = one("SELECT * FROM datasets WHERE manifest_hash = ?",
                  [training["dataset_hash"]]) if training else None
    cycle = one("SELECT * FROM cycles WHERE candidate_id = ? "
                "ORDER BY started_at DESC NULLS LAST LIMIT 1", [model_id])
    gate = one("SELECT * FROM gate_decisions WHERE cycle_id = ?",
               [cycle["cycle_id"]]) if cycle else None
    task = (training or {}).get("task_id") or (cycle or {}).get("task_id")
    test = one("SELECT run_id, task_id, split, summary, finished_at FROM runs WHERE kind = 'eval' "
               "AND status = 'done' AND model_id = ? AND split = 'test' "
               "AND (task_id = ? OR ? IS NULL) ORDER BY finished_at DESC NULLS LAST LIMIT 1",
               [model_id, task, task])
    benchmarks = [r for r in store.query(
        "SELECT benchmark, metric, value, stderr, n, limit_n, created_at FROM benchmark_results "
        "WHERE model_id = ? AND task = benchmark ORDER BY created_at, benchmark, metric",
        [model_id])] if "benchmark_results" in store.tables() else []
    return {"training": training, "dataset": dataset, "cycle": cycle, "gate": gate,
            "test": test, "benchmarks": benchmarks}


def _decode(row: dict) -> dict:
    """JSON columns come back as text."""
    out = dict(row)
    for key in ("config", "versions", "counts", "summary", "reasons", "meta"):
        if isinstance(out.get(key), str):
            out[key] = json.loads(out[key])
    return out
