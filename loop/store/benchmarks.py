"""Queries of the benchmark tables: `benchmark_results` (one row per task and metric of a run)
and `benchmark_samples` (per-item outputs). A run is keyed by (model fingerprint, benchmark,
version, limit, shots); limit 0 stands for the full set. A key holds one run: the latest,
whose `seed` the results record (the cache reads a run back only under the seed asked for)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

from loop.store.db import Store
from loop.store.rows import BenchmarkResultRow, BenchmarkRunKey, BenchmarkSampleRow, write

RUN_COLUMNS = tuple(f.name for f in fields(BenchmarkRunKey))
RUN_KEY = " AND ".join(f"{c} = ?" for c in RUN_COLUMNS)


def put_run(store: Store, results: Sequence[BenchmarkResultRow],
            samples: Sequence[BenchmarkSampleRow]) -> None:
    """Write one benchmark's rows and samples together (a half-written run is never cached),
    replacing the run stored under the same key: a run under another seed scored other items,
    whose samples must not stay beside the new ones."""
    keys = {tuple(getattr(r, k) for k in RUN_COLUMNS) for r in results}
    with store.transaction():
        for key in keys:
            store.execute(f"DELETE FROM benchmark_results WHERE {RUN_KEY}", list(key))
            store.execute(f"DELETE FROM benchmark_samples WHERE {RUN_KEY}", list(key))
        write(store, results, on_conflict="replace")
        write(store, samples, on_conflict="replace")


def run_results(store: Store, model_id: str, benchmark: str, version: str, limit_n: int,
                shots: int) -> list[dict]:
    """One stored run's rows: the benchmark's own rows first, then by task and metric."""
    return store.query(f"SELECT * FROM benchmark_results WHERE {RUN_KEY} "
                       "ORDER BY task = benchmark DESC, task, metric",
                       [model_id, benchmark, version, limit_n, shots])


def run_sample_metrics(store: Store, model_id: str, benchmark: str, version: str, limit_n: int,
                       shots: int) -> list[dict]:
    """One stored run's samples: task and metrics."""
    return store.query(f"SELECT task, metrics FROM benchmark_samples WHERE {RUN_KEY}",
                       [model_id, benchmark, version, limit_n, shots])


def model_results(store: Store, model: str, model_id: str | None) -> list[dict]:
    """Every stored result row of one model, oldest first: by fingerprint, else by name or id."""
    if "benchmark_results" not in store.tables():
        return []
    rows = store.query("SELECT * FROM benchmark_results WHERE model_id = ? "
                       "ORDER BY created_at, benchmark", [model_id]) if model_id else []
    return rows or store.query("SELECT * FROM benchmark_results WHERE model_id = ? OR "
                               "model_name = ? ORDER BY created_at, benchmark", [model, model])


def benchmarked_models(store: Store) -> list[str]:
    """Names of the models with stored results, sorted."""
    if "benchmark_results" not in store.tables():
        return []
    return [r["model_name"] for r in store.query(
        "SELECT DISTINCT model_name FROM benchmark_results ORDER BY 1")]


def run_samples(store: Store, model_id: str, benchmark: str, version: str, limit_n: int,
                shots: int) -> list[dict]:
    """One stored run's per-item rows for paired comparisons: task, doc_id, target, responses
    and metrics, by task and doc_id."""
    return store.query(f"SELECT task, doc_id, target, responses, metrics FROM benchmark_samples "
                       f"WHERE {RUN_KEY} ORDER BY task, doc_id",
                       [model_id, benchmark, version, limit_n, shots])
