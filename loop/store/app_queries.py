"""Read queries for the review app: the published snapshot, merged with the review inbox.

The app never opens the main database (a running cycle holds it): every page opens
`<workspace>/snapshot.duckdb` read-only for one render (`snapshot`) and adds inbox records that
no writer has ingested yet, so a review or vote shows at once. Every filter value is a bound
parameter; free text goes through `contains(lower(column), lower(?))`, so SQL metacharacters in a
search are plain characters. SQL text here is built only from constants in this module.

    with snapshot(workspace) as store:
        page = filter_failures(store, FailureFilter(model="m", search="iso date"))
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from loop.store import inbox
from loop.store.db import SNAPSHOT_NAME, Store

# inbox kind -> (table, id column); the record's `id` becomes the id column on ingest
INBOX_TABLES = {"reviews": ("reviews", "review_id"), "corrections": ("corrections",
                                                                     "correction_id"),
                "votes": ("matches", "match_id")}


@contextmanager
def snapshot(workspace: str | Path) -> Iterator[Store | None]:
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
    """The table exists and has rows (an older snapshot may predate a migration)."""
    return store is not None and table in store.tables() and store.count(table) > 0


def _values(store: Store, sql: str, params: list | None = None) -> list[str]:
    return [r["v"] for r in store.query(sql, params or []) if r["v"] is not None]


def model_names(store: Store | None) -> dict[str, str]:
    if not has(store, "models"):
        return {}
    return {r["model_id"]: r["name"] for r in store.query("SELECT model_id, name FROM models")}


# ------------------------------------------------------------------ inbox merge

def with_inbox(workspace: str | Path, store: Store | None, kind: str) -> list[dict]:
    """All rows of the kind's table in the snapshot plus inbox records not in it yet."""
    table, key = INBOX_TABLES[kind]
    rows = store.query(f"SELECT * FROM {table}") if has(store, table) else []
    seen = {r[key] for r in rows}
    for record in inbox.read(workspace, kind):
        if record.get("id") not in seen:
            rows.append({key: record["id"], **{k: v for k, v in record.items() if k != "id"}})
            seen.add(record["id"])
    return rows


def pending_inbox(workspace: str | Path, store: Store | None) -> dict[str, int]:
    """Inbox records per kind that the snapshot does not hold yet (a writer ingests them)."""
    out = {}
    for kind, (table, key) in INBOX_TABLES.items():
        records = inbox.read(workspace, kind)
        if records:
            known = {r["v"] for r in store.query(f"SELECT {key} AS v FROM {table}")
                     } if has(store, table) else set()
            out[kind] = len({r.get("id") for r in records} - known)
    return out


def all_matches(workspace: str | Path, store: Store | None) -> list[dict]:
    """Stored matches plus inbox votes (so a vote counts at once); errors dropped."""
    return [m for m in with_inbox(workspace, store, "votes") if m.get("verdict")]


# ------------------------------------------------------------------ overview

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


def benchmark_headlines(store: Store) -> list[dict]:
    """Headline rows (task = benchmark) of every benchmarked model, oldest first."""
    if not has(store, "benchmark_results"):
        return []
    return store.query("""
        SELECT model_id, model_name, benchmark, benchmark_version, metric, value, stderr, n,
               limit_n, shots, higher_is_better, backend, created_at
        FROM benchmark_results WHERE task = benchmark AND value IS NOT NULL
        ORDER BY created_at, benchmark, metric""")


def current_champion(store: Store, task_id: str | None = None) -> str | None:
    """The latest champion's model id (for the task when given); else the latest cycle's."""
    for table, column, order in (("champions", "model_id", "since"),
                                 ("cycles", "champion_id", "started_at")):
        if has(store, table):
            sql = f"SELECT {column} AS v FROM {table}"
            rows = _values(store, sql + (" WHERE task_id = ?" if task_id else "") +
                           f" ORDER BY {order} DESC LIMIT 1", [task_id] if task_id else [])
            if rows:
                return rows[0]
    return None


# ------------------------------------------------------------------ failures

@dataclass(frozen=True)
class FailureFilter:
    """Failures-page filters; None or "" means any. `tagged` are prediction ids a reviewer
    tagged with `category` (they match it too); `hide` are prediction ids to leave out."""

    task: str | None = None
    model: str | None = None
    cycle: str | None = None
    category: str | None = None
    cluster: str | None = None
    check: str | None = None
    search: str = ""
    tagged: tuple[str, ...] = ()
    hide: tuple[str, ...] = ()
    signature: str | None = None  # a failure signature (`evals.signatures`), e.g. invalid_json


@dataclass(frozen=True)
class FailurePage:
    rows: list[dict]
    total: int  # failures matching the filter (rows holds at most `limit` of them)


def cycle_run_ids(store: Store, cycle_id: str) -> list[str]:
    """Run ids a cycle's stages recorded in their results (any nested "run_id" key)."""
    if not has(store, "cycle_stages"):
        return []
    found: list[str] = []

    def walk(value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k == "run_id" and isinstance(v, str):
                    found.append(v)
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for r in store.query("SELECT result FROM cycle_stages WHERE cycle_id = ? AND result IS NOT "
                         "NULL", [cycle_id]):
        walk(json.loads(r["result"]))
    return sorted(set(found))


def _failure_where(store: Store, flt: FailureFilter) -> tuple[list[str], list] | None:
    """WHERE terms and their parameters; None when the filter can match nothing."""
    where, params = [], []
    for column, value in (("f.task_id", flt.task), ("f.model_id", flt.model),
                          ("f.cluster_id", flt.cluster)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    if flt.cycle:
        runs = cycle_run_ids(store, flt.cycle)
        if not runs:
            return None
        where.append("list_contains(?, f.run_id)")
        params.append(runs)
    if flt.category:
        if flt.tagged:
            where.append("(list_contains(f.categories, ?) OR f.prediction_id IN "
                         "(SELECT unnest(?)))")
            params += [flt.category, list(flt.tagged)]
        else:
            where.append("list_contains(f.categories, ?)")
            params.append(flt.category)
    if flt.check:
        where.append("list_contains(f.failed_checks, ?)")
        params.append(flt.check)
    if flt.signature:
        if not _has_column(store, "failures", "signatures"):
            return None
        where.append("list_contains(f.signatures, ?)")
        params.append(flt.signature)
    if flt.hide:
        where.append("f.prediction_id NOT IN (SELECT unnest(?))")  # a hash anti-join
        params.append(list(flt.hide))
    if flt.search:  # semi-joins: scan the texts once, never join them to every failure
        scope = "model_id = ? AND " if flt.model else ""
        where.append(
            "(f.prediction_id IN (SELECT prediction_id FROM predictions WHERE " + scope +
            "contains(lower(output), lower(?))) OR EXISTS (SELECT 1 FROM examples e WHERE "
            "e.task_id = f.task_id AND e.split = f.split AND e.example_id = f.example_id AND ("
            "contains(lower(e.instruction), lower(?)) OR contains(lower(coalesce(e.input, '')), "
            "lower(?)) OR contains(lower(e.output), lower(?)))))")
        params += ([flt.model] if flt.model else []) + [flt.search] * 4
    return where, params


def filter_failures(store: Store, flt: FailureFilter, limit: int = 200) -> FailurePage:
    """The first `limit` failures matching every filter (by run, then example) and the total.

    Two statements: the filter runs on the narrow `failures` table (materialised once for the
    count and the page), then only the page's texts are fetched, by primary key."""
    terms = _failure_where(store, flt)
    if terms is None or not has(store, "failures"):
        return FailurePage([], 0)
    where, params = terms
    keys = store.query(f"""
        WITH hit AS MATERIALIZED (
            SELECT f.run_id, f.example_id, f.prediction_id FROM failures f
            {"WHERE " + " AND ".join(where) if where else ""})
        SELECT (SELECT count(*) FROM hit) AS total, page.*
        FROM (SELECT * FROM hit ORDER BY run_id, example_id LIMIT ?) page""",
                       params + [int(limit)])
    if not keys:
        return FailurePage([], 0)
    pids = sorted({k["prediction_id"] for k in keys})
    marks = ", ".join("?" for _ in pids)  # an IN list of bound values uses the primary key
    rows = store.query(f"""
        SELECT f.*, e.category AS example_category, e.instruction, e.input,
               e.output AS reference, p.output, p.prompt, c.label AS cluster_label
        FROM (SELECT unnest(?) AS run_id, unnest(?) AS example_id) k
        JOIN failures f USING (run_id, example_id)
        JOIN examples e ON e.task_id = f.task_id AND e.example_id = f.example_id
             AND e.split = f.split
        JOIN (SELECT prediction_id, output, prompt FROM predictions
              WHERE prediction_id IN ({marks})) p ON p.prediction_id = f.prediction_id
        LEFT JOIN clusters c ON c.run_id = f.run_id AND c.cluster_id = f.cluster_id
        ORDER BY f.run_id, f.example_id""",
                       [[k["run_id"] for k in keys], [k["example_id"] for k in keys], *pids])
    return FailurePage(rows, keys[0]["total"])


def _has_column(store: Store, table: str, column: str) -> bool:
    return bool(store.query("SELECT 1 FROM information_schema.columns WHERE table_name = ? "
                            "AND column_name = ?", [table, column]))


def failure_options(store: Store) -> dict[str, list]:
    """Choices for the failures-page filters: values present in the store."""
    if not has(store, "failures"):
        return {}
    clusters = store.query("SELECT cluster_id, any_value(label) AS label, sum(size) AS size "
                           "FROM clusters GROUP BY cluster_id ORDER BY size DESC, cluster_id"
                           ) if has(store, "clusters") else []
    return {
        "task": _values(store, "SELECT DISTINCT task_id AS v FROM failures ORDER BY v"),
        "model": _values(store, "SELECT DISTINCT model_id AS v FROM failures ORDER BY v"),
        "cycle": _values(store, "SELECT cycle_id AS v FROM cycles ORDER BY started_at DESC")
        if has(store, "cycles") else [],
        "category": _values(store, "SELECT DISTINCT unnest(categories) AS v FROM failures "
                                   "ORDER BY v"),
        "check": _values(store, "SELECT DISTINCT unnest(failed_checks) AS v FROM failures "
                                "ORDER BY v"),
        # a snapshot older than the signatures migration has no such column
        "signature": _values(store, "SELECT unnest(signatures) AS v FROM failures GROUP BY v "
                                    "ORDER BY count(*) DESC, v")
        if _has_column(store, "failures", "signatures") else [],
        "cluster": [(c["cluster_id"], c["label"] or c["cluster_id"]) for c in clusters],
    }


def check_results(store: Store, prediction_id: str, example_id: str) -> list[dict]:
    """Every stored check result of one prediction on one item."""
    if not has(store, "scores"):
        return []
    return store.query("SELECT check_name, check_version, suite_version, passed, required, "
                       "value, detail FROM scores WHERE prediction_id = ? AND example_id = ? "
                       "ORDER BY check_name", [prediction_id, example_id])


def rubric_results(store: Store | None) -> list[dict]:
    """Every stored rubric verdict: prediction id and whether the judge passed it."""
    if not has(store, "scores"):
        return []
    return store.query("SELECT prediction_id, example_id, passed FROM scores "
                       "WHERE check_name = ?", ["rubric"])


# ------------------------------------------------------------------ arena

def arena_choices(store: Store | None) -> list[dict]:
    """(task, split, model) of every finished evaluation run, for picking two versions."""
    if not has(store, "runs"):
        return []
    return store.query("SELECT DISTINCT task_id, split, model_id FROM runs WHERE kind = 'eval' "
                       "AND status = 'done' ORDER BY task_id, split, model_id")


def shared_items(store: Store, task_id: str, split: str, model_a: str, model_b: str
                 ) -> list[dict]:
    """Items both models answered in their latest runs on (task, split), with both outputs."""
    return store.query("""
        WITH latest AS (
            SELECT model_id, run_id FROM runs
            WHERE kind = 'eval' AND status = 'done' AND task_id = ? AND split = ?
            QUALIFY row_number() OVER (PARTITION BY model_id
                                       ORDER BY finished_at DESC NULLS LAST, run_id) = 1),
        outs AS (
            SELECT l.model_id, ri.example_id, p.output FROM latest l
            JOIN run_items ri USING (run_id) JOIN predictions p USING (prediction_id))
        SELECT e.task_id, a.example_id, e.instruction, e.input, e.output AS reference,
               a.output AS output_a, b.output AS output_b
        FROM outs a JOIN outs b ON a.example_id = b.example_id
        JOIN examples e ON e.task_id = ? AND e.split = ? AND e.example_id = a.example_id
        WHERE a.model_id = ? AND b.model_id = ? ORDER BY a.example_id""",
                       [task_id, split, task_id, split, model_a, model_b])


# ------------------------------------------------------------------ benchmarks and training

def training_runs(store: Store) -> list[dict]:
    if not has(store, "training_runs"):
        return []
    return store.query("SELECT train_id, task_id, model_id, status, steps_done, total_steps, "
                       "n_train, train_loss, best_eval_loss, tokens_per_s, peak_mem_mb, device, "
                       "precision, seed, created_at FROM training_runs ORDER BY created_at")


def train_logs(store: Store) -> list[dict]:
    if not has(store, "train_logs"):
        return []
    return store.query("SELECT train_id, step, loss, eval_loss, learning_rate, tokens_per_s, "
                       "peak_mem_mb FROM train_logs ORDER BY train_id, step")


def generated_summary(store: Store) -> list[dict]:
    """Generated candidates per batch, strategy, status and rejection reason."""
    if not has(store, "generated_examples"):
        return []
    return store.query("SELECT batch_id, strategy, status, coalesce(reason, '') AS reason, "
                       "count(*) AS n FROM generated_examples GROUP BY ALL "
                       "ORDER BY batch_id, strategy, status, n DESC")


def generated_examples(store: Store, status: str | None = None, strategy: str | None = None,
                       limit: int = 200) -> list[dict]:
    """Generated items with provenance (strategy, cluster, failures, source) and outcome."""
    if not has(store, "generated_examples"):
        return []
    where, params = [], []
    for column, value in (("g.status", status), ("g.strategy", strategy)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    cluster_label = ("(SELECT any_value(c.label) FROM clusters c WHERE c.cluster_id = "
                     "g.cluster_id)" if "clusters" in store.tables() else "NULL")
    return store.query(
        f"SELECT g.batch_id, g.strategy, g.status, g.reason, g.category, "
        f"{cluster_label} AS cluster, g.failure_ids, g.source, g.instruction, g.input, "
        f"g.output, g.detail FROM generated_examples g "
        f"{'WHERE ' + ' AND '.join(where) if where else ''} "
        f"ORDER BY g.created_at DESC, g.gen_id LIMIT ?", params + [int(limit)])
