"""The DuckDB store: the only module that imports duckdb.

One file, `<workspace>/evalloop.duckdb`. The schema is a list of named, append-only migrations
(loop/store/migrations.py), applied when a writer opens the store. Every statement is
parametrised; table and column names come only from code constants, never from user text.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from loop.core.cache import atomic_path
from loop.core.clock import now
from loop.core.errors import StoreError
from loop.store.migrations import MIGRATIONS
from loop.store.foundation_rows import ExampleRow, ModelRow, RunRow, TaskRow
from loop.store.rows import write

DB_NAME = "evalloop.duckdb"
BULK_ROWS = 64  # from this many rows, insert through Arrow in one statement
SNAPSHOT_NAME = "snapshot.duckdb"  # read-only copy for the app, published at stage boundaries


def _jsonable(value: Any) -> Any:
    if isinstance(value, (dict, list)) and not (isinstance(value, list) and value
                                                and isinstance(value[0], (int, float, str))):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value


class Store:
    """A connection to one workspace database, migrated on open."""

    def __init__(self, workspace: str | Path, read_only: bool = False,
                 path: str | Path | None = None, create: bool = True):
        """`create=False`: a missing database is an error (commands that only read, so a
        mistyped --workspace never leaves an empty store behind)."""
        self.workspace = Path(workspace)
        self.path = Path(path) if path else self.workspace / DB_NAME
        self.read_only = read_only
        self._keys: dict[str, list[str]] = {}  # primary-key columns per table (bulk inserts)
        self._wrote = False  # whether this connection changed anything (close publishes then)
        try:
            if (read_only or not create) and not self.path.exists():
                raise StoreError(f"No evalloop database at {self.path}: run `evalloop eval` "
                                 "first (or check --workspace).")
            if self.workspace.exists() and not self.workspace.is_dir():
                raise StoreError(f"Workspace {self.workspace} is a file, not a directory.")
            if not read_only:
                self.workspace.mkdir(parents=True, exist_ok=True)
            if self.path.is_dir():
                raise StoreError(f"Cannot open {self.path}: it is a directory, not a database.")
            self.con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as exc:
            raise StoreError(open_error(self.path, str(exc).splitlines()[0])) from None
        except duckdb.Error as exc:  # not a DuckDB file, or one from a newer DuckDB
            raise StoreError(f"Cannot open {self.path}: {str(exc).splitlines()[0]}. It is not "
                             "a readable evalloop database; use another --workspace.") from None
        except OSError as exc:
            raise StoreError(f"Cannot create workspace {self.workspace}: {exc.strerror}.") from None
        if not read_only:
            self.migrate()
            self.ingest_inbox()
            self.mark_stale_runs()

    # -- lifecycle
    def close(self) -> None:
        try:
            if not self.read_only and (self._wrote or self._snapshot_behind()):
                self.publish_snapshot()
        finally:
            self.con.close()

    def _snapshot_behind(self) -> bool:
        """Whether the database changed after the snapshot was copied (a writer that died
        before publishing): readers must not keep seeing the old copy."""
        try:
            copied = (self.workspace / SNAPSHOT_NAME).stat().st_mtime_ns
        except OSError:
            return True
        files = [self.path, self.path.with_name(self.path.name + ".wal")]
        return any(f.exists() and f.stat().st_mtime_ns > copied for f in files)

    def publish_snapshot(self) -> Path:
        """Checkpoint and copy the database to `snapshot.duckdb` atomically, for readers."""
        target = self.workspace / SNAPSHOT_NAME
        try:
            self.con.execute("CHECKPOINT")
            with atomic_path(target) as tmp:
                shutil.copyfile(self.path, tmp)
        except (OSError, duckdb.Error) as exc:
            raise StoreError(f"Cannot publish the read-only snapshot {target}: {exc}.") from None
        return target

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type, *rest) -> None:
        try:
            self.close()
        except StoreError:
            if exc_type is None:
                raise  # otherwise the error already on its way out is the one to report

    def migrate(self) -> list[str]:
        """Apply pending migrations in order; each in its own transaction. Returns names applied."""
        self.con.execute("CREATE TABLE IF NOT EXISTS migrations "
                         "(name VARCHAR PRIMARY KEY, applied_at TIMESTAMP)")
        done = {r[0] for r in self.con.execute("SELECT name FROM migrations").fetchall()}
        applied = []
        for name, sql in MIGRATIONS:
            if name in done:
                continue
            with self.transaction():
                self.con.execute(sql)
                self.con.execute("INSERT INTO migrations VALUES (?, ?)", [name, now()])
            applied.append(name)
            self._wrote = True
        return applied

    def ingest_inbox(self) -> int:
        """Copy app reviews, corrections and votes into their tables (idempotent by id)."""
        from loop.store import inbox

        from loop.store.foundation_rows import CorrectionRow, ReviewRow
        from loop.store.rows import MatchRow

        added, tables = 0, None
        for kind, record_type, key in (("reviews", ReviewRow, "review_id"),
                                       ("corrections", CorrectionRow, "correction_id"),
                                       ("votes", MatchRow, "match_id")):
            records = inbox.read(self.workspace, kind)
            if not records:
                continue  # nothing to copy: no catalog queries on every open
            tables = tables if tables is not None else self.tables()
            if record_type.TABLE not in tables:
                continue
            rows = [record_type.from_record({**record, key: record["id"]}).as_dict()
                    for record in records]
            before = self.count(record_type.TABLE)
            self.insert(record_type.TABLE, rows)  # idempotent: a known id keeps its row
            added += self.count(record_type.TABLE) - before
        return added

    def transaction(self):
        store = self

        class _Tx:
            def __enter__(self):
                store.con.execute("BEGIN TRANSACTION")

            def __exit__(self, exc_type, *rest):
                try:
                    with store._io_errors():
                        store.con.execute("ROLLBACK" if exc_type else "COMMIT")
                except StoreError:
                    if exc_type is None:
                        raise
                return False

        return _Tx()

    # -- generic, parametrised access (table/column names from code, values bound)
    def insert(self, table: str, rows: Sequence[dict], on_conflict: str = "nothing") -> None:
        """Insert dict rows; on a primary-key conflict keep the old row ('nothing') or 'replace'."""
        if not rows:
            return
        self._wrote = True
        cols = list(rows[0])
        verb = {"nothing": "INSERT OR IGNORE", "replace": "INSERT OR REPLACE"}[on_conflict]
        sql = (f"{verb} INTO {_ident(table)} ({', '.join(_ident(c) for c in cols)}) "
               f"VALUES ({', '.join('?' for _ in cols)})")
        values = [[_jsonable(r[c]) for c in cols] for r in rows]
        with self._io_errors():
            if len(values) < BULK_ROWS or not self._insert_bulk(table, cols, values, verb):
                self.con.executemany(sql, values)

    def _insert_bulk(self, table: str, cols: list[str], values: list[list], verb: str) -> bool:
        """One INSERT ... SELECT from an Arrow table: ~100x faster than executemany on big
        batches. Same outcome: within the batch the first row of a key wins for 'nothing' and
        the last for 'replace', as row-by-row inserts would. False if Arrow cannot type the
        values (mixed types in a column); the caller then inserts row by row."""
        import pyarrow as pa

        key = self._primary_key(table)
        if key and all(c in cols for c in key):
            at = [cols.index(c) for c in key]
            chosen: dict[tuple, list] = {}
            for row in values if verb.endswith("REPLACE") else reversed(values):
                chosen[tuple(row[i] for i in at)] = row
            values = list(chosen.values())
        try:
            batch = pa.Table.from_arrays([pa.array(col) for col in zip(*values)], names=cols)
        except (pa.ArrowException, TypeError, ValueError):
            return False
        names = ", ".join(_ident(c) for c in cols)
        self.con.register("_evalloop_rows", batch)
        try:
            self.con.execute(f"{verb} INTO {_ident(table)} ({names}) "
                             f"SELECT {names} FROM _evalloop_rows")
        except (duckdb.ConversionException, duckdb.BinderException,
                duckdb.NotImplementedException, duckdb.InvalidInputException):
            return False  # a type Arrow guessed differently: row by row raises the real error
        finally:
            self.con.unregister("_evalloop_rows")
        return True

    def _primary_key(self, table: str) -> list[str]:
        if table not in self._keys:
            rows = self.con.execute(
                "SELECT constraint_column_names FROM duckdb_constraints() WHERE table_name = ? "
                "AND constraint_type = 'PRIMARY KEY'", [table]).fetchall()
            self._keys[table] = list(rows[0][0]) if rows else []
        return self._keys[table]

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[dict]:
        if not sql.lstrip()[:8].upper().startswith(("SELECT", "WITH", "FROM")):
            self._wrote = True  # a statement that returns rows may still write
        with self._io_errors():
            cur = self.con.execute(sql, list(params))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def execute(self, sql: str, params: Iterable[Any] = ()) -> None:
        self._wrote = True
        with self._io_errors():
            self.con.execute(sql, list(params))

    @contextmanager
    def _io_errors(self):
        """Turn an I/O failure (disk full, file gone) into a StoreError; DuckDB keeps every
        committed transaction and drops the failed one, so nothing partial is left behind."""
        try:
            yield
        except (duckdb.IOException, duckdb.FatalException, duckdb.TransactionException) as exc:
            raise StoreError(f"Cannot write to {self.path}: {str(exc).splitlines()[0]}. "
                             "Work committed before this point is kept; free space (or fix "
                             "the file) and rerun to resume.") from None

    def tables(self) -> list[str]:
        return [r["table_name"] for r in self.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
            "ORDER BY table_name")]

    def columns(self, table: str) -> set[str]:
        return {r["column_name"] for r in self.query(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table])}

    def count(self, table: str) -> int:
        return self.con.execute(f"SELECT count(*) FROM {_ident(table)}").fetchone()[0]

    # -- typed helpers for the foundation tables
    def put_model(self, model_id: str, name: str, base: str, base_path: str | None = None,
                  adapter: str | None = None, parent_id: str | None = None,
                  meta: dict | None = None) -> None:
        write(self, [ModelRow(model_id, name, base, base_path, adapter, parent_id, now(),
                            meta or {})])

    def put_task(self, task_id: str, config_path: str, data_hash: str, examples) -> None:
        with self.transaction():
            write(self, [TaskRow(task_id, config_path, data_hash, now())], "replace")
            # replace: an edited reference or category under an existing id is the truth now
            write(self, [ExampleRow(task_id, e.split, e.id, e.instruction, e.input, e.output,
                                  e.category) for e in examples], "replace")

    def get_predictions(self, prediction_ids: Sequence[str]) -> dict[str, dict]:
        if not prediction_ids:
            return {}
        rows = self.query("SELECT * FROM predictions WHERE list_contains(?, prediction_id)",
                          [list(prediction_ids)])
        return {r["prediction_id"]: r for r in rows}

    def start_run(self, run_id: str, kind: str, task_id: str | None, model_id: str | None,
                  split: str | None, params: dict) -> None:
        write(self, [RunRow(run_id, kind, task_id, model_id, split, params, "running", now(),
                          None, None)], "replace")

    def finish_run(self, run_id: str, summary: dict, status: str = "done") -> None:
        self.execute("UPDATE runs SET status = ?, finished_at = ?, summary = ? WHERE run_id = ?",
                     [status, now(), json.dumps(summary, default=str), run_id])

    def interrupt_run(self, run_id: str, reason: str, status: str = "interrupted") -> None:
        """Mark a run that stopped before its end (`interrupted` by a signal, `failed` by an
        error): never left `running`."""
        self.execute("UPDATE runs SET status = ?, finished_at = ?, summary = ? "
                     "WHERE run_id = ? AND status = 'running'",
                     [status, now(), json.dumps({"stopped": reason}), run_id])

    def mark_stale_runs(self) -> int:
        """Runs still `running` when a writer opens the store were left by a process that died
        (DuckDB admits one writer process at a time): mark them `interrupted`."""
        stale = self.con.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone()[0]
        if stale:
            self.execute("UPDATE runs SET status = 'interrupted', summary = ? "
                         "WHERE status = 'running'",
                         [json.dumps({"stopped": "its process ended before the run did"})])
        return stale


def open_error(path: Path, message: str) -> str:
    """What DuckDB's open error means, in words: another process holds the file, the file
    system is read-only, permission is denied, or something else (its own words)."""
    lowered = message.lower()
    if "lock" in lowered:
        said = message.split(": ", 1)[-1].split(" See also")[0].rstrip(".")
        cause = (f"{said}. Another evalloop process may hold it; wait for it or use another "
                 "--workspace.")
    elif "read-only file system" in lowered:
        cause = ("the file system is read-only. Use a --workspace on a writable disk (the "
                 "review app reads the snapshot and never needs to write here).")
    elif "permission denied" in lowered:
        cause = "permission denied. Fix the file's owner or mode, or use another --workspace."
    else:
        cause = message
    return f"Cannot open {path}: {cause.rstrip('.')}."


def protected_paths(workspace: str | Path) -> list[Path]:
    """What no output path may replace: the database, its WAL, the app's snapshot, the inbox."""
    from loop.store.inbox import inbox_dir

    workspace = Path(workspace)
    db = workspace / DB_NAME
    return [db, db.with_name(DB_NAME + ".wal"), workspace / SNAPSHOT_NAME, inbox_dir(workspace)]


def _ident(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"bad identifier {name!r}")  # programming error, never user text
    return f'"{name}"'
