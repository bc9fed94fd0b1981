"""Store migrations: blank schema, idempotent migration, parametrised writes, lock errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from loop.core.errors import StoreError
from loop.store.db import Store
from loop.store.migrations import MIGRATIONS

FOUNDATION_TABLES = {"migrations", "models", "tasks", "examples", "runs", "predictions",
                     "run_items", "scores"}


def test_blank_database_gets_every_migration(workspace):
    with Store(workspace) as store:
        assert FOUNDATION_TABLES <= set(store.tables())
        applied = [r["name"] for r in store.query("SELECT name FROM migrations ORDER BY name")]
        assert applied == sorted(name for name, _ in MIGRATIONS)


def test_migrating_twice_is_a_no_op(workspace):
    with Store(workspace) as store:
        store.put_model("m1", "tiny-random", "tiny-random")
        before = store.tables()
        assert store.migrate() == []
    with Store(workspace) as store:  # reopening migrates again: nothing new, data kept
        assert store.tables() == before
        assert store.count("models") == 1
        assert store.count("migrations") == len(MIGRATIONS)


def test_insert_is_parametrised_and_conflicts_keep_or_replace(workspace):
    evil = "x'); DROP TABLE models; --"
    with Store(workspace) as store:
        store.put_model(evil, evil, evil)
        store.put_model(evil, "again", evil)  # same key: ignored
        assert store.query("SELECT name FROM models WHERE model_id = ?", [evil]) == [{"name": evil}]
        store.insert("models", [{"model_id": evil, "name": "new", "base": "b"}], "replace")
        assert store.query("SELECT name FROM models")[0]["name"] == "new"


def test_second_writer_gets_a_clear_store_error(workspace):
    with Store(workspace):
        code = ("import sys; from loop.store.db import Store; from loop.core.errors import StoreError\n"
                f"try:\n    Store({str(workspace)!r})\nexcept StoreError as e:\n"
                "    print('STORE', e); sys.exit(3)\n")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    assert "Another evalloop process may hold it" in proc.stdout


def test_read_only_open_of_missing_db_is_an_error(workspace):
    with pytest.raises(StoreError, match="No evalloop database"):
        Store(workspace, read_only=True)


@pytest.mark.parametrize("on_conflict", ["nothing", "replace"])
def test_bulk_inserts_match_row_by_row_inserts(workspace, on_conflict):
    """Big batches go through Arrow in one statement; the rows that land are the same as with
    row-by-row inserts, duplicate keys inside the batch included."""
    rows = [{"run_id": f"r{i % 90}", "kind": "eval", "task_id": None, "model_id": f"m{i}",
             "split": "test", "params": {"i": i, "nested": [1, {"x": "y"}]}, "status": "done",
             "started_at": None, "finished_at": None, "summary": None} for i in range(150)]
    tables = {}
    for bulk in (True, False):
        with Store(workspace / str(bulk)) as store:
            store.insert("runs", rows[:10])  # existing keys the batch conflicts with
            if bulk:
                store.insert("runs", rows, on_conflict)
            else:
                for row in rows:
                    store.insert("runs", [row], on_conflict)
            tables[bulk] = store.query("SELECT run_id, model_id, params FROM runs ORDER BY run_id")
    assert len(tables[True]) == 90
    assert tables[True] == tables[False]


def test_typed_rows_name_exactly_their_tables_columns(workspace):
    """Every record loop/store/rows.py writes has one field per column of its migrated table, so
    a stage cannot build a row the schema does not hold."""
    import inspect
    from dataclasses import fields

    from loop.store import foundation_rows, rows

    records = [c for module in (rows, foundation_rows)
               for _, c in inspect.getmembers(module, inspect.isclass)
               if issubclass(c, rows.Row) and c is not rows.Row]
    assert {r.TABLE for r in records} >= {
        "models", "tasks", "examples", "runs", "reviews", "corrections",
        "predictions", "run_items", "scores", "embeddings", "failures", "clusters",
        "generated_examples", "datasets", "benchmark_results", "benchmark_samples", "matches",
        "rating_snapshots", "training_runs", "train_logs", "cycles", "cycle_stages",
        "champions", "gate_decisions"}
    with Store(workspace) as store:
        for record in records:
            columns = {r["column_name"] for r in store.query(
                "SELECT column_name FROM duckdb_columns() WHERE table_name = ?", [record.TABLE])}
            assert {f.name for f in fields(record)} == columns, record.__name__


def test_typed_write_round_trips_and_refuses_mixed_tables(workspace):
    from datetime import datetime

    from loop.store.rows import ChampionRow, CycleRow, write

    champion = ChampionRow("t", "m1", "base", datetime(2026, 1, 1), None, "first")
    with Store(workspace) as store:
        write(store, [champion])
        assert store.query("SELECT model_id, reason FROM champions") == [
            {"model_id": "m1", "reason": "first"}]
        with pytest.raises(ValueError, match="one table per write"):
            write(store, [champion, CycleRow("c", "t", 1, "running", None, None,
                                             datetime(2026, 1, 1))])
