"""Queries of the failure tables: `failures` (one row per failed item of a run), `clusters`, and
the `failures_v` view that joins them to items and predictions."""

from __future__ import annotations

from collections.abc import Sequence

from loop.store.db import Store
from loop.store.rows import ClusterRow, FailureRow, write


def replace_run_failures(store: Store, run_id: str, failures: Sequence[FailureRow],
                         clusters: Sequence[ClusterRow]) -> None:
    """A run's failures and clusters, replacing what an earlier attempt stored, in one
    transaction."""
    with store.transaction():
        store.execute("DELETE FROM failures WHERE run_id = ?", [run_id])
        store.execute("DELETE FROM clusters WHERE run_id = ?", [run_id])
        write(store, failures)
        write(store, clusters)


def run_failures(store: Store, run_id: str) -> list[dict]:
    """example_id, categories, signatures of a run's failures, by example id."""
    return store.query("SELECT example_id, categories, signatures FROM failures "
                       "WHERE run_id = ? ORDER BY example_id", [run_id])


def run_clusters(store: Store, run_id: str) -> list[dict]:
    """A run's clusters, largest first."""
    return store.query("SELECT * FROM clusters WHERE run_id = ? ORDER BY size DESC, "
                       "cluster_id", [run_id])


def cluster_labels(store: Store, run_id: str) -> dict[str, str]:
    if "clusters" not in store.tables():
        return {}
    return {r["cluster_id"]: r["label"] for r in store.query(
        "SELECT cluster_id, label FROM clusters WHERE run_id = ?", [run_id])}


def failures_with_outputs(store: Store, run_id: str) -> list[dict]:
    """A run's failures with the failing output: example_id, categories, cluster_id, output and
    (on a store migrated to have them) signatures."""
    # signatures arrive with a store migration; a store without them still works
    has_sigs = "signatures" in store.columns("failures")
    return store.query(
        "SELECT f.example_id, f.categories, f.cluster_id, p.output"
        + (", f.signatures" if has_sigs else "") + " FROM failures f "
        "LEFT JOIN predictions p ON p.prediction_id = f.prediction_id "
        "WHERE f.run_id = ? ORDER BY f.example_id", [run_id])


def failure_rows(store: Store, task_id: str, run_id: str | None = None) -> list[dict]:
    """Stored failures of the task (of one run when given), with reference and output."""
    sql = ("SELECT run_id, example_id, model_id, reference, output FROM failures_v "
           "WHERE task_id = ?")
    params = [task_id]
    if run_id:
        sql += " AND run_id = ?"
        params.append(run_id)
    return store.query(sql + " ORDER BY run_id, example_id", params)
