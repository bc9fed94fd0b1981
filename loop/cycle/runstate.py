"""Cycle bookkeeping in the store: which cycle is current, which stages are done, the champion.

A stage is done when its row in `cycle_stages` says so; its result (small JSON: ids, paths,
figures) is what later stages read. Stages write their own rows with content-hash ids, so a stage
killed half-way and run again adds nothing twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from loop.core.records import content_hash
from loop.store.db import Store, now


@dataclass(frozen=True)
class Champion:
    model_id: str
    model_name: str


def current_champion(store: Store, task_id: str, base_name: str, base_id: str) -> Champion:
    """The latest champion row for the task; the base model before any promotion."""
    rows = store.query("SELECT model_id, model_name FROM champions WHERE task_id = ? "
                       "ORDER BY since DESC LIMIT 1", [task_id])
    return Champion(**rows[0]) if rows else Champion(base_id, base_name)


def set_champion(store: Store, task_id: str, champion: Champion, cycle_id: str | None,
                 reason: str) -> None:
    store.insert("champions", [{"task_id": task_id, "model_id": champion.model_id,
                                "model_name": champion.model_name, "since": now(),
                                "cycle_id": cycle_id, "reason": reason}])


def champion_history(store: Store, task_id: str) -> list[dict]:
    return store.query("SELECT * FROM champions WHERE task_id = ? ORDER BY since", [task_id])


def open_cycle(store: Store, task_id: str, champion: Champion, inputs_hash: str,
               force: bool) -> tuple[str, bool]:
    """(cycle_id, already_finished). Resumes an unfinished cycle on the same inputs; `force`
    starts a new attempt even when one has finished."""
    rows = store.query("SELECT cycle_id, status, attempt FROM cycles WHERE task_id = ? AND "
                       "champion_id = ? AND cycle_id LIKE ? ORDER BY attempt DESC LIMIT 1",
                       [task_id, champion.model_id, f"{inputs_hash}-%"])
    if rows and rows[0]["status"] != "done":
        return rows[0]["cycle_id"], False
    if rows and not force:
        return rows[0]["cycle_id"], True
    attempt = rows[0]["attempt"] + 1 if rows else 1
    cycle_id = f"{inputs_hash}-{attempt}"
    store.insert("cycles", [{"cycle_id": cycle_id, "task_id": task_id, "attempt": attempt,
                             "status": "running", "champion_id": champion.model_id,
                             "champion_name": champion.model_name, "candidate_id": None,
                             "candidate_name": None, "started_at": now(), "finished_at": None,
                             "summary": None}])
    return cycle_id, False


def cycle_inputs_hash(task_id: str, data_hash: str, champion_id: str, config: dict) -> str:
    return content_hash(task_id, data_hash, champion_id, config, length=12)


def stage_result(store: Store, cycle_id: str, stage: str) -> dict | None:
    rows = store.query("SELECT result FROM cycle_stages WHERE cycle_id = ? AND stage = ? AND "
                       "status = 'done'", [cycle_id, stage])
    return json.loads(rows[0]["result"]) if rows else None


def mark_stage(store: Store, cycle_id: str, stage: str, status: str, result: dict | None = None,
               error: str | None = None) -> None:
    existing = store.query("SELECT started_at FROM cycle_stages WHERE cycle_id = ? AND stage = ?",
                           [cycle_id, stage])
    started = existing[0]["started_at"] if existing else now()
    store.insert("cycle_stages", [{
        "cycle_id": cycle_id, "stage": stage, "status": status, "started_at": started,
        "finished_at": now() if status != "running" else None,
        "result": json.dumps(result, default=str) if result is not None else None,
        "error": error}], on_conflict="replace")
    store.publish_snapshot()  # readers (the app, tests) see progress at every stage boundary


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
