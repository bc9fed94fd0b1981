"""Read queries for the review app: the published snapshot, merged with the review inbox.

The app never opens the main database (a running cycle holds it): every page opens
`<workspace>/snapshot.duckdb` read-only for one render (`snapshot`) and adds inbox records that
no writer has ingested yet, so a review or vote shows at once. Every filter value is a bound
parameter; free text goes through `contains(lower(column), lower(?))`, so SQL metacharacters in a
search are plain characters. SQL text here is built only from constants in this module.

    with snapshot(workspace) as store:   # filter_failures: loop.store.app_failures
        page = filter_failures(store, FailureFilter(model="m", search="iso date"))

This module holds what every page needs (the snapshot, the inbox merge, model names, benchmark
headlines); each page's own reads are in a module named for it: app_overview.py,
app_failures.py, app_arena.py and app_training.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from loop.store import inbox
from loop.store.db import SNAPSHOT_NAME, Store

# inbox kind -> (table, id column); the record's `id` becomes the id column on ingest
INBOX_TABLES = {"reviews": ("reviews", "review_id"), "corrections": ("corrections",
                                                                     "correction_id"),
                "votes": ("matches", "match_id")}


@contextmanager
def snapshot(workspace: str | Path) -> Iterator[Store | None]:
    """A short-lived read-only connection to the snapshot (None when nothing is published)."""
    path = Path(workspace) / SNAPSHOT_NAME
    if not path.exists():
        yield None
        return
    store = Store(workspace, read_only=True, path=path)
    try:
        yield store
    finally:
        store.close()


def has(store: Store | None, table: str) -> bool:
    """The table exists and has rows (an older snapshot may predate a migration)."""
    return store is not None and table in store.tables() and store.count(table) > 0


def column_values(store: Store, sql: str, params: list | None = None) -> list[str]:
    """The non-null `v` column of a query's rows."""
    return [r["v"] for r in store.query(sql, params or []) if r["v"] is not None]


def model_names(store: Store | None) -> dict[str, str]:
    if not has(store, "models"):
        return {}
    return {r["model_id"]: r["name"] for r in store.query("SELECT model_id, name FROM models")}


# ------------------------------------------------------------------ inbox merge

def with_inbox(workspace: str | Path, store: Store | None, kind: str) -> list[dict]:
    """All rows of the kind's table in the snapshot plus inbox records not in it yet."""
    table, key = INBOX_TABLES[kind]
    rows = store.query(f"SELECT * FROM {table}") if has(store, table) else []
    seen = {r[key] for r in rows}
    for record in inbox.read(workspace, kind):
        if record.get("id") not in seen:
            rows.append({key: record["id"], **{k: v for k, v in record.items() if k != "id"}})
            seen.add(record["id"])
    return rows


def pending_inbox(workspace: str | Path, store: Store | None) -> dict[str, int]:
    """Inbox records per kind that the snapshot does not hold yet (a writer ingests them)."""
    out = {}
    for kind, (table, key) in INBOX_TABLES.items():
        records = inbox.read(workspace, kind)
        if records:
            known = {r["v"] for r in store.query(f"SELECT {key} AS v FROM {table}")
                     } if has(store, table) else set()
            out[kind] = len({r.get("id") for r in records} - known)
    return out


def all_matches(workspace: str | Path, store: Store | None) -> list[dict]:
    """Stored matches plus inbox votes (so a vote counts at once); errors dropped."""
    return [m for m in with_inbox(workspace, store, "votes") if m.get("verdict")]


def benchmark_headlines(store: Store) -> list[dict]:
    """Headline rows (task = benchmark) of every benchmarked model, oldest first."""
    if not has(store, "benchmark_results"):
        return []
    return store.query("""
        SELECT model_id, model_name, benchmark, benchmark_version, metric, value, stderr, n,
               limit_n, shots, higher_is_better, backend, created_at
        FROM benchmark_results WHERE task = benchmark AND value IS NOT NULL
        ORDER BY created_at, benchmark, metric""")
