"""Cycle bookkeeping in the store: which cycle is current, which stages are done, the champion.

A stage is done when its row in `cycle_stages` says so; its result (small JSON: ids, paths,
figures) is what later stages read. Stages write their own rows with content-hash ids, so a stage
killed half-way and run again adds nothing twice. The reads and updates themselves are in
`loop/store/cycles.py`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from loop.core.records import content_hash
from loop.store import cycles
from loop.store.db import Store, now
from loop.store.rows import ChampionRow, CycleRow, CycleStageRow, write


@dataclass(frozen=True)
class Champion:
    model_id: str
    model_name: str


def current_champion(store: Store, task_id: str, base_name: str, base_id: str) -> Champion:
    """The latest champion row for the task; the base model before any promotion."""
    row = cycles.latest_champion(store, task_id)
    return Champion(**row) if row else Champion(base_id, base_name)


def set_champion(store: Store, task_id: str, champion: Champion, cycle_id: str | None,
                 reason: str) -> None:
    write(store, [ChampionRow(task_id, champion.model_id, champion.model_name, now(), cycle_id,
                              reason)])


def open_cycle(store: Store, task_id: str, champion: Champion, inputs_hash: str,
               force: bool) -> tuple[str, bool]:
    """(cycle_id, already_finished). Resumes an unfinished cycle on the same inputs; `force`
    starts a new attempt even when one has finished."""
    last = cycles.latest_attempt(store, task_id, champion.model_id, inputs_hash)
    if last and last["status"] != "done":
        return last["cycle_id"], False
    if last and not force:
        return last["cycle_id"], True
    attempt = last["attempt"] + 1 if last else 1
    cycle_id = f"{inputs_hash}-{attempt}"
    write(store, [CycleRow(cycle_id, task_id, attempt, "running", champion.model_id,
                           champion.model_name, started_at=now())])
    return cycle_id, False


def cycle_inputs_hash(task_id: str, data_hash: str, champion_id: str, config: dict) -> str:
    return content_hash(task_id, data_hash, champion_id, config, length=12)


def mark_stage(store: Store, cycle_id: str, stage: str, status: str, result: dict | None = None,
               error: str | None = None) -> None:
    started = cycles.stage_started_at(store, cycle_id, stage) or now()
    write(store, [CycleStageRow(
        cycle_id, stage, status, started, now() if status != "running" else None,
        json.dumps(result, default=str) if result is not None else None, error)],
        on_conflict="replace")
    store.publish_snapshot()  # readers (the app, tests) see progress at every stage boundary
