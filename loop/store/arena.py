"""Queries of the arena's tables: `matches` (judged pairs, human votes) and `rating_snapshots`,
and the scored outputs of an evaluation run that the arena pairs up."""

from __future__ import annotations

from collections.abc import Sequence

from loop.store.db import Store
from loop.store.rows import MatchRow, RatingSnapshotRow, write


def run_outputs(store: Store, task_id: str, run_id: str, suite_version: str) -> dict[str, dict]:
    """example id -> {output, passed} for one run; passed = no required check of the run's
    suite version failed (the rule evals/suites.py applies)."""
    rows = store.query("""
        SELECT ri.example_id, p.output,
               count(s.check_name) > 0
               AND NOT coalesce(bool_or(s.required AND NOT s.passed), false) AS passed
        FROM run_items ri JOIN predictions p USING (prediction_id)
        LEFT JOIN scores s ON s.prediction_id = ri.prediction_id
             AND s.example_id = ri.example_id AND s.task_id = ? AND s.suite_version = ?
        WHERE ri.run_id = ? GROUP BY ri.example_id, p.output""",
                       [task_id, suite_version, run_id])
    return {r["example_id"]: r for r in rows}


def judged_match_ids(store: Store, match_ids: Sequence[str]) -> set[str]:
    """Those of `match_ids` already stored with a verdict (errors are judged again)."""
    if not match_ids:
        return set()
    rows = store.query("SELECT match_id FROM matches WHERE verdict IS NOT NULL AND "
                       "list_contains(?, match_id)", [list(match_ids)])
    return {r["match_id"] for r in rows}


def put_matches(store: Store, rows: Sequence[MatchRow]) -> int:
    """Insert or replace match rows by id; returns how many ids were new."""
    before = store.count("matches")
    write(store, rows, on_conflict="replace")
    return store.count("matches") - before


def verdicts(store: Store, task_id: str | None = None, judge: str | None = None) -> list[dict]:
    """Matches with a verdict (judge, example_id, model_a, model_b, verdict) in the order they
    were judged (online Elo needs it); task_id / judge None = all."""
    sql = ("SELECT judge, example_id, model_a, model_b, verdict FROM matches "
           "WHERE verdict IS NOT NULL")
    params: list = []
    if task_id:
        sql += " AND task_id = ?"
        params.append(task_id)
    if judge:
        sql += " AND judge = ?"
        params.append(judge)
    return store.query(sql + " ORDER BY created_at, match_id", params)


def put_rating_snapshot(store: Store, row: RatingSnapshotRow) -> None:
    write(store, [row])


def matches_with_outputs(store: Store, task_id: str) -> list[dict]:
    """Stored matches of the task with both models' outputs on the item (each model's latest
    finished evaluation that answered it)."""
    return store.query("""
        WITH outs AS (
            SELECT r.model_id, ri.example_id, p.output FROM runs r
            JOIN run_items ri USING (run_id) JOIN predictions p USING (prediction_id)
            WHERE r.kind = 'eval' AND r.status = 'done' AND r.task_id = ?
            QUALIFY row_number() OVER (PARTITION BY r.model_id, ri.example_id
                                       ORDER BY r.finished_at DESC NULLS LAST, r.run_id) = 1)
        SELECT m.match_id, m.example_id, m.model_a, m.model_b, m.judge, m.verdict, m.voter,
               a.output AS output_a, b.output AS output_b
        FROM matches m
        LEFT JOIN outs a ON a.model_id = m.model_a AND a.example_id = m.example_id
        LEFT JOIN outs b ON b.model_id = m.model_b AND b.example_id = m.example_id
        WHERE m.task_id = ? ORDER BY m.created_at, m.match_id""", [task_id, task_id])
