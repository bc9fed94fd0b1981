"""The overview page's reads of the snapshot: cycles with their gate decisions and stage times,
the latest prompt arm, the champions over time and the pass-rate trend.
"""

from __future__ import annotations

import json

from loop.store.app_queries import has
from loop.store.db import Store


def cycles(store: Store) -> list[dict]:
    """Every cycle, oldest first, with its gate decision and stage progress."""
    if not has(store, "cycles"):
        return []
    return store.query("""
        SELECT c.cycle_id, c.task_id, c.status, c.started_at, c.finished_at, c.champion_name,
               c.candidate_name, g.promote, g.champion_pass_rate, g.candidate_pass_rate,
               g.p_value, g.reasons,
               (SELECT count(*) FROM cycle_stages s WHERE s.cycle_id = c.cycle_id
                AND s.status = 'done') AS stages_done,
               (SELECT any_value(s.stage || ' (' || s.status || ')') FROM cycle_stages s
                WHERE s.cycle_id = c.cycle_id AND s.status <> 'done') AS current_stage
        FROM cycles c LEFT JOIN gate_decisions g USING (cycle_id)
        ORDER BY c.started_at, c.cycle_id""")


def stage_times(store: Store, cycle_id: str) -> list[dict]:
    """One cycle's stages in the order they started, with wall seconds (running: so far)."""
    if not has(store, "cycle_stages"):
        return []
    return store.query("""
        SELECT stage, status, started_at,
               epoch(coalesce(finished_at, now()::TIMESTAMP)) - epoch(started_at) AS seconds
        FROM cycle_stages WHERE cycle_id = ? ORDER BY started_at, stage""", [cycle_id])


def latest_prompt_arm(store: Store) -> dict | None:
    """The prompt arm of the latest cycle that finished one, as its stage stored it
    (loop.cycle.results.PromptArmResult), with the cycle's id."""
    if not has(store, "cycle_stages"):
        return None
    rows = store.query("""
        SELECT s.cycle_id, s.result FROM cycle_stages s JOIN cycles c USING (cycle_id)
        WHERE s.stage = 'prompt_arm' AND s.status = 'done' AND s.result IS NOT NULL
        ORDER BY c.started_at DESC, s.cycle_id DESC LIMIT 1""")
    return {**json.loads(rows[0]["result"]), "cycle_id": rows[0]["cycle_id"]} if rows else None


def champion_history(store: Store) -> list[dict]:
    if not has(store, "champions"):
        return []
    return store.query("SELECT task_id, model_id, model_name, since, cycle_id, reason "
                       "FROM champions ORDER BY since")


def pass_rate_trend(store: Store) -> list[dict]:
    """Finished evaluation runs with their overall pass rate, oldest first."""
    if not has(store, "runs"):
        return []
    return store.query("""
        SELECT r.finished_at, r.task_id, r.split, r.model_id,
               TRY_CAST(json_extract(r.summary, '$.pass_rate') AS DOUBLE) AS pass_rate
        FROM runs r WHERE r.kind = 'eval' AND r.status = 'done' AND r.summary IS NOT NULL
              AND json_extract(r.summary, '$.pass_rate') IS NOT NULL
        ORDER BY r.finished_at""")
