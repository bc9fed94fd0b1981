"""Queries of the training tables: `training_runs` (one row per adapter trained) and
`train_logs` (its loss curve)."""

from __future__ import annotations

from loop.store.db import Store


def loss_curve(store: Store, train_id: str) -> list[dict]:
    """step, loss, eval_loss of one training run, by step (none on a store without logs)."""
    if "train_logs" not in store.tables():
        return []
    return store.query("SELECT step, loss, eval_loss FROM train_logs WHERE train_id = ? "
                       "ORDER BY step", [train_id])
