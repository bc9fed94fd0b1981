"""The review inbox: what people do in the app while a cycle may hold the database.

DuckDB lets one process write a file while no other process can open it, so the app never opens
the main database: it reads the snapshot the writer publishes (`Store.publish_snapshot`) and
appends reviews, corrections and votes here, one JSON line each, under an exclusive file lock and
fsync'd. The next writer ingests them (idempotently, by record id) when it opens the store.
Lines are never removed, so nothing a reviewer submits can be lost.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from loop.core.clock import now
from loop.core.records import content_hash

KINDS = ("reviews", "corrections", "votes")


def inbox_dir(workspace: str | Path) -> Path:
    return Path(workspace) / "inbox"


def append(workspace: str | Path, kind: str, record: dict) -> dict:
    """Durably append one record; returns it with its `id` and `created_at`."""
    if kind not in KINDS:
        raise ValueError(f"unknown inbox kind {kind!r}")
    record = dict(record)
    record.setdefault("created_at", now().isoformat())
    record.setdefault("id", content_hash(kind, record))
    directory = inbox_dir(workspace)
    directory.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
    with (directory / f"{kind}.jsonl").open("a", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    return record


def read(workspace: str | Path, kind: str) -> list[dict]:
    """Every complete record of a kind (a torn last line from a crash is skipped)."""
    path = inbox_dir(workspace) / f"{kind}.jsonl"
    if not path.exists():
        return []
    records = []
    with path.open(encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_SH)
        try:
            for line in fh:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    return records
