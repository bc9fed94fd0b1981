"""The one clock for stored timestamps: UTC, naive (DuckDB TIMESTAMP has no zone)."""

from __future__ import annotations

from datetime import datetime, timezone


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)
