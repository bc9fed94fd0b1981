"""Queries of the cycle tables: `cycles` (one row per attempt), `cycle_stages` (each stage's
status and result), `champions` (promotion history) and `gate_decisions`."""

from __future__ import annotations

import json

from loop.core.clock import now
from loop.store.db import Store


def latest_champion(store: Store, task_id: str) -> dict | None:
    """model_id and model_name of the task's newest champion row."""
    rows = store.query("SELECT model_id, model_name FROM champions WHERE task_id = ? "
                       "ORDER BY since DESC LIMIT 1", [task_id])
    return rows[0] if rows else None


def champion_history(store: Store, task_id: str) -> list[dict]:
    return store.query("SELECT * FROM champions WHERE task_id = ? ORDER BY since", [task_id])


def latest_attempt(store: Store, task_id: str, champion_id: str, inputs_hash: str
                   ) -> dict | None:
    """cycle_id, status, attempt of the newest cycle on these inputs and champion."""
    rows = store.query("SELECT cycle_id, status, attempt FROM cycles WHERE task_id = ? AND "
                       "champion_id = ? AND cycle_id LIKE ? ORDER BY attempt DESC LIMIT 1",
                       [task_id, champion_id, f"{inputs_hash}-%"])
    return rows[0] if rows else None


def stage_result(store: Store, cycle_id: str, stage: str) -> dict | None:
    """The result a finished stage stored (None when it has not finished)."""
    rows = store.query("SELECT result FROM cycle_stages WHERE cycle_id = ? AND stage = ? AND "
                       "status = 'done'", [cycle_id, stage])
    return json.loads(rows[0]["result"]) if rows else None


def stage_started_at(store: Store, cycle_id: str, stage: str):
    rows = store.query("SELECT started_at FROM cycle_stages WHERE cycle_id = ? AND stage = ?",
                       [cycle_id, stage])
    return rows[0]["started_at"] if rows else None


def finish_cycle(store: Store, cycle_id: str, summary: dict, status: str = "done") -> None:
    store.execute("UPDATE cycles SET status = ?, finished_at = ?, summary = ?, candidate_id = ?, "
                  "candidate_name = ? WHERE cycle_id = ?",
                  [status, now(), json.dumps(summary, default=str),
                   summary.get("candidate", {}).get("model_id"),
                   summary.get("candidate", {}).get("name"), cycle_id])


def set_candidate(store: Store, cycle_id: str, model_id: str, name: str) -> None:
    store.execute("UPDATE cycles SET candidate_id = ?, candidate_name = ? WHERE cycle_id = ?",
                  [model_id, name, cycle_id])


def stage_seconds(store: Store, cycle_id: str) -> dict[str, float]:
    """Wall seconds of each finished stage of a cycle, from its first start to its finish (a
    resumed stage includes the time lost to the interruption)."""
    rows = store.query("SELECT stage, epoch(finished_at) - epoch(started_at) AS seconds "
                       "FROM cycle_stages WHERE cycle_id = ? AND status = 'done' "
                       "AND finished_at IS NOT NULL ORDER BY started_at", [cycle_id])
    return {r["stage"]: float(r["seconds"]) for r in rows}


def finished_cycles(store: Store, task_id: str) -> list[dict]:
    """The task's finished cycles, oldest first: cycle_id and summary."""
    rows = store.query("SELECT cycle_id, summary FROM cycles WHERE task_id = ? AND status = 'done' "
                       "ORDER BY started_at", [task_id])
    return [{"cycle_id": r["cycle_id"], "summary": json.loads(r["summary"])} for r in rows]
