"""Queries of the evaluation tables: `models`, `runs`, `run_items` (and the `examples` and
`predictions` they point to)."""

from __future__ import annotations

from loop.store.db import Store


def model_names(store: Store) -> dict[str, str]:
    """model id (fingerprint) -> the name it was loaded by."""
    return {r["model_id"]: r["name"] for r in store.query("SELECT model_id, name FROM models")}
