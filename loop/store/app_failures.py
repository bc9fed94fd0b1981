"""The failures page's reads of the snapshot: failures by filter (bound parameters only; free text
through `contains(lower(column), lower(?))`), the filters' choices, and one item's check and
rubric results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from loop.store.app_queries import column_values, has
from loop.store.db import Store


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
    values = column_values
    return {
        "task": values(store, "SELECT DISTINCT task_id AS v FROM failures ORDER BY v"),
        "model": values(store, "SELECT DISTINCT model_id AS v FROM failures ORDER BY v"),
        "cycle": values(store, "SELECT cycle_id AS v FROM cycles ORDER BY started_at DESC")
        if has(store, "cycles") else [],
        "category": values(store, "SELECT DISTINCT unnest(categories) AS v FROM failures "
                                  "ORDER BY v"),
        "check": values(store, "SELECT DISTINCT unnest(failed_checks) AS v FROM failures "
                               "ORDER BY v"),
        # a snapshot older than the signatures migration has no such column
        "signature": values(store, "SELECT unnest(signatures) AS v FROM failures GROUP BY v "
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
