"""The review app's failures-page queries on a synthetic store with 1,000,000 predictions.

    .venv/bin/python bench/app_query.py [--workspace /tmp/evalloop-appbench] [--predictions 1000000]

Builds (once; reused when its marker matches) a store through `Store` with the real migrations:
50 models x 4 tasks x 5,000 test items = 1,000,000 predictions, their run items and two check
scores each, ~40% of them failures with categories, failed checks, similarity and clusters, and
a few cycles. Then it times the failures page's filter query (`loop.store.app_failures.filter_failures`,
first page of 200 plus the total count) on the read-only snapshot for a set of filters: median of
5 runs after a warm-up. Every SQL-metacharacter search must return no error and no rows (the
synthetic texts hold none of those characters), while the plain query returns rows.
Exit status 1 when a query is slower than --budget-ms or a metacharacter search misbehaves.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loop.store.app_failures import FailureFilter, check_results, failure_options, filter_failures
from loop.store.app_queries import snapshot
from loop.store.db import Store

ITEMS_PER_RUN = 5_000
TASKS = 4
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
         "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
         "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "date",
         "colour", "price", "river", "mountain", "answer", "format", "number", "metre", "litre",
         "gram", "second", "minute", "hour", "capital")
EVIL = ("' OR 1=1 --", "'; DROP TABLE failures; --", "%", "_", "%%", "\\", '"', "' OR ''='",
        "a%' OR '1'='1", "*/ SELECT 1; /*", "\x00", "[]", "$1", "?")


def _words(seed: str, n: int) -> str:
    """SQL for n pseudo-random words picked by hash(i, seed, k) (constants only, no user text)."""
    words = "[" + ", ".join(f"'{w}'" for w in WORDS) + "]"
    picks = [f"list_element({words}, 1 + (hash(i, {seed}, {k}) % {len(WORDS)})::INTEGER)"
             for k in range(n)]
    return "concat_ws(' ', " + ", ".join(picks) + ")"


# ids are hashes, as in real stores (content hashes): no zone-map luck for the id lookups
PRED_ID = "left(md5('p' || i::VARCHAR), 16)"
EX_ID = (f"left(md5('e' || ((i // {ITEMS_PER_RUN}) % {TASKS})::VARCHAR || '-' || "
         f"(i % {ITEMS_PER_RUN})::VARCHAR), 16)")
RUN_ID = f"printf('run%04d', i // {ITEMS_PER_RUN})"
TASK_ID = f"printf('task%d', (i // {ITEMS_PER_RUN}) % {TASKS})"
MODEL_ID = f"printf('model-%02d', i // {ITEMS_PER_RUN * TASKS})"


def build(workspace: Path, n_predictions: int) -> None:
    """Fill a fresh store with synthetic rows (bulk SQL inside DuckDB: seconds, not minutes).
    Row i of predictions is item i % 5,000 of task (i // 5,000) % 4 answered by model
    i // 20,000; the SQL holds only constants of this script."""
    runs = n_predictions // ITEMS_PER_RUN
    with Store(workspace) as store:
        ex = store.execute
        ex("INSERT INTO models SELECT printf('model-%02d', m), printf('base+adapter-%02d', m), "
           "'base', NULL, NULL, NULL, TIMESTAMP '2026-01-01' + to_days(m::INTEGER), '{}' "
           f"FROM range({max(runs // TASKS, 1)}) t(m)")
        ex(f"INSERT INTO tasks SELECT printf('task%d', t), 'x.toml', 'h', now() "
           f"FROM range({TASKS}) t(t)")
        ex(f"INSERT INTO examples SELECT {TASK_ID}, 'test', {EX_ID}, "
           f"'Rewrite the ' || {_words('1', 2)} || ' as ' || {_words('2', 1)}, "
           f"{_words('3', 8)}, {_words('4', 3)}, printf('cat%d', i % 5) "
           f"FROM range({TASKS * ITEMS_PER_RUN}) t(i)")
        ex(f"INSERT INTO runs SELECT {RUN_ID}, 'eval', {TASK_ID}, {MODEL_ID}, 'test', '{{}}', "
           f"'done', TIMESTAMP '2026-01-01' + to_days((i // {ITEMS_PER_RUN * TASKS})::INTEGER), "
           f"TIMESTAMP '2026-01-01' + to_days((i // {ITEMS_PER_RUN * TASKS})::INTEGER), "
           f"json_object('pass_rate', 0.3 + (i // {ITEMS_PER_RUN * TASKS}) / 100.0) "
           f"FROM range(0, {runs * ITEMS_PER_RUN}, {ITEMS_PER_RUN}) t(i)")
        ex(f"INSERT INTO predictions SELECT {PRED_ID}, {MODEL_ID}, md5(i::VARCHAR), 'g', "
           f"e.instruction || chr(10) || e.input, {_words('5', 10)}, 0.1, 40, 12, now() "
           f"FROM range({runs * ITEMS_PER_RUN}) t(i) "
           f"JOIN examples e ON e.task_id = {TASK_ID} AND e.example_id = {EX_ID}")
        ex(f"INSERT INTO run_items SELECT {RUN_ID}, {EX_ID}, {PRED_ID} "
           f"FROM range({runs * ITEMS_PER_RUN}) t(i)")
        for check in ("exact_match", "too_long"):
            ex(f"INSERT INTO scores SELECT {PRED_ID}, {TASK_ID}, {EX_ID}, 'v1', '{check}', '1', "
               f"hash(i, 99) % 10 >= 4, NULL, true, NULL, now() "
               f"FROM range({runs * ITEMS_PER_RUN}) t(i)")
        _failures(store, runs)
        _cycles(store, runs)


def _failures(store: Store, runs: int) -> None:
    store.execute(f"""
        INSERT INTO failures SELECT {RUN_ID}, {EX_ID}, {PRED_ID}, {TASK_ID}, {MODEL_ID}, 'test',
            CASE hash(i, 11) % 4 WHEN 0 THEN ['wrong_answer', 'too_long']
                 WHEN 1 THEN ['wrong_answer', 'hallucination'] WHEN 2 THEN ['format']
                 ELSE ['wrong_answer'] END,
            CASE hash(i, 11) % 4 WHEN 0 THEN ['exact_match', 'too_long']
                 WHEN 2 THEN ['json_valid'] ELSE ['exact_match'] END,
            (hash(i, 12) % 1000) / 1000.0,
            printf('r%04d-c%d', i // {ITEMS_PER_RUN}, hash(i, 13) % 10)
        FROM range({runs * ITEMS_PER_RUN}) t(i) WHERE hash(i, 99) % 10 < 4""")
    store.execute("""
        INSERT INTO clusters SELECT DISTINCT cluster_id, run_id, 'cluster ' || cluster_id,
            'wrong_answer', ['alpha'], 1, [], 0 FROM failures""")


def _cycles(store: Store, runs: int) -> None:
    rows = []
    for c in range(min(10, runs // (2 * TASKS))):
        cycle_id = f"cycle{c:02d}"
        rows.append((cycle_id, "eval_champion_dev", {"run_id": f"run{2 * TASKS * c:04d}"}))
        rows.append((cycle_id, "eval_candidate", {
            "candidate_test": {"run_id": f"run{2 * TASKS * c + TASKS:04d}"},
            "champion_test": {"run_id": f"run{2 * TASKS * c:04d}"}}))
        store.insert("cycles", [{"cycle_id": cycle_id, "task_id": "task0", "attempt": 1,
                                 "status": "done", "started_at": f"2026-02-{c + 1:02d}"}])
    store.insert("cycle_stages", [{"cycle_id": c, "stage": s, "status": "done",
                                   "result": json.dumps(r)} for c, s, r in rows])


FILTERS = {
    "no filter": FailureFilter(),
    "task + model": FailureFilter(task="task1", model="model-07"),
    "category": FailureFilter(category="hallucination"),
    "check": FailureFilter(check="json_valid"),
    "cluster": FailureFilter(cluster="r0042-c3"),
    "cycle": FailureFilter(cycle="cycle03"),
    "search": FailureFilter(search="yankee zulu"),
    "search + model + category": FailureFilter(model="model-12", category="too_long",
                                               search="tango"),
    "search, no match": FailureFilter(search="no such text anywhere"),
}


def timed(workspace: Path, flt: FailureFilter, repeats: int = 5) -> tuple[float, int]:
    """Median wall time (ms) of filter_failures on a fresh snapshot connection, and the total."""
    times, total = [], 0
    with snapshot(workspace) as store:
        filter_failures(store, flt)  # warm-up: file pages into the OS cache
        for _ in range(repeats):
            t0 = time.perf_counter()
            page = filter_failures(store, flt)
            times.append((time.perf_counter() - t0) * 1000)
            total = page.total
    return statistics.median(times), total


def page_extras(workspace: Path) -> None:
    """What else a failures-page render costs: opening the snapshot, the filter choices, one
    item's check results, and the whole page through Streamlit's AppTest."""
    from streamlit.testing.v1 import AppTest

    def median_ms(fn, repeats: int = 5) -> float:
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
        return statistics.median(times)

    def open_close():
        with snapshot(workspace):
            pass

    figures = {"open + close snapshot": median_ms(open_close)}
    with snapshot(workspace) as store:
        row = filter_failures(store, FailureFilter(), limit=1).rows[0]
        figures |= {"filter choices (failure_options)": median_ms(lambda: failure_options(store)),
                   "one item's check results": median_ms(lambda: check_results(
                       store, row["prediction_id"], row["example_id"]))}
    app = str(Path(__file__).resolve().parents[1] / "app.py")
    sys.argv = ["app.py", "--workspace", str(workspace)]
    at = AppTest.from_file(app, default_timeout=120)
    at.run()
    figures["whole failures page (AppTest rerun)"] = median_ms(
        lambda: at.sidebar.radio[0].set_value("Failures").run(), repeats=3)
    for name, ms in figures.items():
        print(f"{name:<40}{ms:>8.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/evalloop-appbench"))
    parser.add_argument("--predictions", type=int, default=1_000_000)
    parser.add_argument("--budget-ms", type=float, default=300.0)
    args = parser.parse_args()

    marker, layout = args.workspace / "bench.json", {"predictions": args.predictions, "layout": 2}
    if not marker.exists() or json.loads(marker.read_text()) != layout:
        for name in ("evalloop.duckdb", "evalloop.duckdb.wal", "snapshot.duckdb"):
            (args.workspace / name).unlink(missing_ok=True)
        t0 = time.perf_counter()
        build(args.workspace, args.predictions)
        marker.write_text(json.dumps(layout))
        print(f"built {args.workspace} in {time.perf_counter() - t0:.0f} s")
    with snapshot(args.workspace) as store:
        counts = {t: store.count(t) for t in ("predictions", "failures", "scores", "examples")}
    print("rows: " + ", ".join(f"{t} {n:,}" for t, n in counts.items()))

    ok = True
    print(f"\n{'filter':<28}{'median ms':>10}{'matches':>10}")
    for name, flt in FILTERS.items():
        ms, total = timed(args.workspace, flt)
        ok &= ms < args.budget_ms
        print(f"{name:<28}{ms:>10.1f}{total:>10,}{'' if ms < args.budget_ms else '  SLOW'}")
    print()

    page_extras(args.workspace)
    with snapshot(args.workspace) as store:
        baseline = filter_failures(store, FailureFilter()).total
        bad = []
        for evil in EVIL:
            for flt in (FailureFilter(search=evil), FailureFilter(task=evil),
                        FailureFilter(category=evil), FailureFilter(cycle=evil),
                        FailureFilter(model="model-03", search=evil)):
                page = filter_failures(store, flt)
                if page.total or page.rows:
                    bad.append((flt, page.total))
        after = filter_failures(store, FailureFilter()).total
    print(f"{len(EVIL)} SQL-metacharacter strings x 5 filters: "
          f"{'no errors, no rows' if not bad else f'EXTRA ROWS: {bad}'}; "
          f"unfiltered total {baseline:,} before and {after:,} after")
    ok &= not bad and baseline == after and baseline > 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
