"""Read queries for the review app, on the published snapshot, merged with the review inbox.

Every filter is a bound parameter; free text goes through `contains(lower(col), lower(?))`,
so SQL metacharacters in a search are plain characters.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from evals import rating
from loop import inbox
from loop.errors import EvalloopError
from loop.store import SNAPSHOT_NAME, Store


@contextmanager
def snapshot(workspace: str | Path):
    """A short-lived read-only connection to the snapshot (None when nothing is published)."""
    path = Path(workspace) / SNAPSHOT_NAME
    if not path.exists():
        yield None
        return
    store = Store(workspace, read_only=True, path=path)
    try:
        yield store
    finally:
        store.close()


def has(store: Store | None, table: str) -> bool:
    return store is not None and table in store.tables()


def options(store: Store, sql: str) -> list[str]:
    return [r["v"] for r in store.query(sql) if r["v"] is not None]


def filter_failures(store: Store, task: str | None = None, model: str | None = None,
                    cycle: str | None = None, category: str | None = None,
                    cluster: str | None = None, check: str | None = None, search: str = "",
                    limit: int = 200) -> list[dict]:
    """Failures matching every given filter (None = any), newest runs first."""
    sql = ["SELECT f.run_id, f.example_id, f.prediction_id, f.task_id, f.model_id,",
           "f.example_category, f.categories, f.failed_checks, f.similarity, f.cluster_id,",
           "f.instruction, f.input, f.reference, f.output, f.prompt FROM failures_v f"]
    where, params = [], []
    if cycle:
        sql.append("JOIN cycle_stages cs ON cs.cycle_id = ? AND cs.stage = 'eval_champion_dev' "
                   "AND json_extract_string(cs.result, '$.run_id') = f.run_id")
        params.append(cycle)
    for column, value in (("f.task_id", task), ("f.model_id", model),
                          ("f.cluster_id", cluster)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    if category:
        where.append("list_contains(f.categories, ?)")
        params.append(category)
    if check:
        where.append("list_contains(f.failed_checks, ?)")
        params.append(check)
    if search:
        where.append("(contains(lower(f.instruction), lower(?)) OR contains(lower(f.input), "
                     "lower(?)) OR contains(lower(f.output), lower(?)))")
        params += [search, search, search]
    if where:
        sql.append("WHERE " + " AND ".join(where))
    sql.append("ORDER BY f.run_id, f.example_id LIMIT ?")
    params.append(int(limit))
    return store.query(" ".join(sql), params)


def check_results(store: Store, prediction_id: str, example_id: str) -> list[dict]:
    return store.query("SELECT check_name, check_version, passed, value, required, detail "
                       "FROM scores WHERE prediction_id = ? AND example_id = ? ORDER BY "
                       "check_name", [prediction_id, example_id])


def shared_items(store: Store, model_a: str, model_b: str) -> list[dict]:
    """Test items both models answered (latest eval runs), with both outputs."""
    return store.query("""
        WITH latest AS (
            SELECT model_id, run_id, task_id FROM runs WHERE kind = 'eval' AND split = 'test'
            QUALIFY row_number() OVER (PARTITION BY model_id, task_id
                                       ORDER BY finished_at DESC NULLS LAST) = 1),
        outs AS (
            SELECT l.model_id, l.task_id, ri.example_id, p.output FROM latest l
            JOIN run_items ri USING (run_id) JOIN predictions p USING (prediction_id))
        SELECT a.task_id, a.example_id, e.instruction, e.input, e.output AS reference,
               a.output AS output_a, b.output AS output_b
        FROM outs a JOIN outs b ON a.task_id = b.task_id AND a.example_id = b.example_id
        JOIN examples e ON e.task_id = a.task_id AND e.example_id = a.example_id
             AND e.split = 'test'
        WHERE a.model_id = ? AND b.model_id = ? ORDER BY a.example_id""", [model_a, model_b])


def all_matches(workspace: Path, store: Store | None) -> list[dict]:
    """Stored matches plus inbox votes not yet ingested (so a vote counts at once)."""
    rows = store.query("SELECT match_id, judge, example_id, model_a, model_b, verdict "
                       "FROM matches WHERE verdict IS NOT NULL") if has(store, "matches") else []
    seen = {r["match_id"] for r in rows}
    rows += [{"match_id": v["id"], "judge": "human", "example_id": v.get("example_id"),
              "model_a": v["model_a"], "model_b": v["model_b"], "verdict": v["verdict"]}
             for v in inbox.read(workspace, "votes") if v["id"] not in seen]
    return rows


def ratings_by_judge(matches: list[dict], seed: int = 0) -> dict[str, list[rating.RatingRow]]:
    boards = {}
    for judge in sorted({m["judge"] for m in matches}) + ["all"]:
        subset = [m for m in matches if judge == "all" or m["judge"] == judge]
        outcomes = rating.outcomes_from_verdicts([(m["model_a"], m["model_b"], m["verdict"])
                                                  for m in subset])
        boards[judge] = rating.leaderboard(outcomes, n_boot=100, seed=seed)
    return boards


def serve(workspace: str | Path, host: str = "127.0.0.1", port: int = 8501,
          allow_remote: bool = False) -> int:
    """Run `streamlit run app.py` bound to `host` (loopback unless `allow_remote`)."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not allow_remote:
        raise EvalloopError(f"Refusing to serve the app on non-loopback address {host}: it has no "
                            "login. Pass --allow-remote to expose it on purpose.")
    app = Path(__file__).resolve().parents[1] / "app.py"
    print(f"evalloop app on http://{host}:{port} (workspace {workspace})", flush=True)
    # exec, not a child: a supervisor's SIGTERM then stops the server itself
    os.execv(sys.executable, [sys.executable, "-m", "streamlit", "run", str(app),
                              "--server.address", host, "--server.port", str(port),
                              "--server.headless", "true", "--browser.gatherUsageStats", "false",
                              "--", "--workspace", str(Path(workspace).resolve())])
    return 0  # not reached
