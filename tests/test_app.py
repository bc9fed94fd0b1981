"""The review app: every page renders on a seeded store (Streamlit AppTest), filters are bound
parameters, actions land in the inbox, show at once and reach the store; pages keep serving while
another process holds the database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from loop.store import inbox
from loop.app import views
from loop.app.serve import serve, streamlit_command
from loop.store.app_failures import FailureFilter, failure_options, filter_failures
from loop.store.app_queries import snapshot
from loop.core.errors import EvalloopError
from loop.store.db import Store, now

APP = str(Path(__file__).resolve().parents[1] / "app.py")
BASE, CAND = "base-0000", "base-0000+ad1"
NAMES = {BASE: "tiny-random", CAND: "tiny-random+/ws/adapters/ad1"}
N = 12
START = now() - timedelta(hours=1)  # recent, so a running cycle's bar ends near "now"
T0 = START


def _ts(minute: int) -> datetime:
    return START + timedelta(minutes=minute)


def _output(model: str, i: int) -> str:
    if model == CAND and i % 2:
        return "red"
    return "it is 100% red_ish" if i == 4 else f"blue {i}"


def _predictions(store: Store) -> None:
    for m, model in enumerate((BASE, CAND)):
        run_id = f"run-{m}"
        store.insert("runs", [{"run_id": run_id, "kind": "eval", "task_id": "t",
                               "model_id": model, "split": "test", "params": {},
                               "status": "done", "started_at": _ts(m), "finished_at": _ts(m + 1),
                               "summary": {"pass_rate": [0.0, 0.5][m]}}])
        for i in range(N):
            pid, out = f"p{m}-{i}", _output(model, i)
            store.insert("predictions", [{"prediction_id": pid, "model_id": model,
                                          "prompt_hash": f"h{i}", "gen_hash": "g",
                                          "prompt": f"<user> Colour of item {i}?",
                                          "output": out, "created_at": T0}])
            store.insert("run_items", [{"run_id": run_id, "example_id": f"e{i}",
                                        "prediction_id": pid}])
            store.insert("scores", [{"prediction_id": pid, "task_id": "t", "example_id": f"e{i}",
                                     "suite_version": "v1", "check_name": check,
                                     "check_version": "1", "passed": passed, "value": None,
                                     "required": True, "detail": {}, "created_at": T0}
                                    for check, passed in (("exact_match", out == "red"),
                                                          ("too_long", i % 3 != 0))])
            if out != "red":
                category = "colour" if i % 2 else "shade"
                store.insert("failures", [{
                    "run_id": run_id, "example_id": f"e{i}", "prediction_id": pid,
                    "task_id": "t", "model_id": model, "split": "test",
                    "categories": ["wrong_answer"] + (["too_long"] if i % 3 == 0 else []),
                    "failed_checks": ["exact_match"] + (["too_long"] if i % 3 == 0 else []),
                    "similarity": 0.4, "cluster_id": f"c-{category}",
                    "signatures": ["wrong_value:colour"] if i % 2 else ["invalid_json"]}])
        store.insert("clusters", [{"cluster_id": f"c-{c}", "run_id": run_id,
                                   "label": f"{c}/wrong_answer: colour item", "size": 3}
                                  for c in ("colour", "shade")])


def _prompt_arm():
    from loop.cycle.results import PromptArmResult
    from loop.evaluation.evaluate import EvalSummary

    def summary(label: str, passed: list[bool]) -> EvalSummary:
        cats = {"colour": passed[::2], "shade": passed[1::2]}
        return EvalSummary(f"run-{label}", "t", NAMES[BASE], BASE, "dev", len(passed),
                           len(passed), 0, sum(passed) / len(passed),
                           {c: {"n": len(v), "pass_rate": sum(v) / len(v)}
                            for c, v in cats.items()}, {}, 0.0, {}, 0, "1",
                           {f"d{i}": p for i, p in enumerate(passed)}, prompt=label)

    return PromptArmResult.compare(summary("zero-shot", [False] * 8),
                                   summary("4-shot random (seed 0)", [True] * 6 + [False] * 2),
                                   summary("candidate", [True] * 7 + [False]), 4, "random", 0.05)


def _cycles(store: Store) -> None:
    """A kept cycle, a promoting one with its gate decision, and one still running."""
    store.insert("cycles", [
        {"cycle_id": "cy0", "task_id": "t", "attempt": 1, "status": "done",
         "champion_id": BASE, "champion_name": NAMES[BASE], "candidate_id": None,
         "candidate_name": None, "started_at": _ts(0), "finished_at": _ts(5)},
        {"cycle_id": "cy1", "task_id": "t", "attempt": 1, "status": "done",
         "champion_id": BASE, "champion_name": NAMES[BASE], "candidate_id": CAND,
         "candidate_name": NAMES[CAND], "started_at": _ts(10), "finished_at": _ts(20)},
        {"cycle_id": "cy2", "task_id": "t", "attempt": 1, "status": "running",
         "champion_id": CAND, "champion_name": NAMES[CAND], "candidate_id": None,
         "candidate_name": None, "started_at": _ts(30), "finished_at": None}])
    store.insert("cycle_stages", [
        {"cycle_id": "cy0", "stage": "eval_champion_dev", "status": "done",
         "result": json.dumps({"run_id": "run-0"})},
        {"cycle_id": "cy1", "stage": "eval_candidate", "status": "done",
         "result": json.dumps({"candidate_test": {"run_id": "run-1"},
                               "champion_test": {"run_id": "run-0"}})},
        {"cycle_id": "cy1", "stage": "prompt_arm", "status": "done",
         "result": json.dumps(_prompt_arm().to_json())},
        {"cycle_id": "cy2", "stage": "benchmarks", "status": "running", "result": None}])
    store.insert("gate_decisions", [{
        "cycle_id": "cy1", "promote": True, "p_value": 0.01, "champion_pass_rate": 0.0,
        "candidate_pass_rate": 0.5, "created_at": _ts(20),
        "reasons": [{"check": "gain", "passed": True, "detail": "0% -> 50%"},
                    {"check": "benchmark:arc_easy/acc", "passed": True, "detail": "+0.05"}]}])
    store.insert("champions", [{"task_id": "t", "model_id": CAND, "model_name": NAMES[CAND],
                                "since": _ts(20), "cycle_id": "cy1",
                                "reason": "promoted by the gate"}])


def seed(workspace: Path) -> None:
    """A small store with every table the pages read: two models, a finished cycle with a gate
    decision, a promotion, reference-judge matches, training logs, benchmarks, generated data."""
    with Store(workspace) as store:
        for model_id, name in NAMES.items():
            store.put_model(model_id, name, "tiny-random")
        store.insert("examples", [{"task_id": "t", "split": "test", "example_id": f"e{i}",
                                   "instruction": f"Colour of item {i}?", "input": "",
                                   "output": "red", "category": ["colour", "shade"][i % 2]}
                                  for i in range(N)])
        _predictions(store)
        _cycles(store)
        store.insert("matches", [{"match_id": f"m{i}", "task_id": "t", "example_id": f"e{i}",
                                  "model_a": BASE, "model_b": CAND, "judge": "reference",
                                  "verdict": "B" if i % 2 else "tie", "created_at": _ts(15)}
                                 for i in range(N)])
        store.insert("training_runs", [{"train_id": "tr1", "task_id": "t", "base": "tiny-random",
                                        "adapter_path": "/ws/adapters/ad1", "model_id": CAND,
                                        "status": "done", "steps_done": 4, "total_steps": 4,
                                        "train_loss": 0.5, "tokens_per_s": 300.0}])
        store.insert("train_logs", [{"train_id": "tr1", "step": s, "loss": 2.0 / s,
                                     "tokens_per_s": 300.0 + s} for s in range(1, 5)])
        store.insert("benchmark_results", [{
            "model_id": m, "benchmark": b, "benchmark_version": "1", "limit_n": 10, "shots": 0,
            "task": b, "metric": metric, "value": v, "stderr": 0.1, "n": 10, "task_version": "1",
            "base": "tiny-random", "model_name": NAMES[m], "higher_is_better": hib,
            "lm_eval_version": "0.4", "backend": "evalloop",
            "created_at": _ts(18)}
            for m, (arc, ce) in ((BASE, (0.5, 2.0)), (CAND, (0.55, 2.1)))
            for b, metric, v, hib in (("arc_easy", "acc", arc, True),
                                      ("forgetting", "token_ce", ce, False))])
        store.insert("generated_examples", [{
            "gen_id": f"g{k}", "batch_id": "cy1", "task_id": "t", "strategy": strategy,
            "cluster_id": "c-colour", "failure_ids": ["e1"], "source": {"pool_id": f"x{k}"},
            "example_id": f"x{k}", "instruction": "Colour?", "output": "red", "status": status,
            "reason": reason, "created_at": _ts(12)}
            for k, (strategy, status, reason) in enumerate((
                ("retrieval", "accepted", None), ("retrieval", "rejected", "duplicate"),
                ("generator", "rejected", "contaminated")))])


@pytest.fixture
def seeded(workspace, monkeypatch) -> Path:
    monkeypatch.setenv("USER", "tester")  # the default reviewer and voter name
    seed(workspace)
    return workspace


def run_page(workspace: Path, page: str, arena_seed: int | None = None,
             reviewer: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    sys.argv = ["app.py", "--workspace", str(workspace)]  # the app reads its workspace flag
    if arena_seed is not None:
        at.session_state["arena_seed"] = arena_seed
    at.run()
    if reviewer is not None:
        widget(at.sidebar, "text_input", "your name (reviews and votes)").set_value(reviewer)
    at.sidebar.radio[0].set_value(page).run()
    assert not at.exception, at.exception
    return at


def page_text(at: AppTest) -> str:
    parts = [str(e.value) for kind in ("markdown", "subheader", "caption", "header", "info",
                                       "success", "text_area", "metric", "code")
             for e in getattr(at, kind)]
    parts += [t.label for t in at.text_area]
    parts += [df.value.to_string() for df in at.dataframe]
    return "\n".join(parts)


def widget(at: AppTest, kind: str, label: str):
    return next(w for w in getattr(at, kind) if w.label == label)


# ------------------------------------------------------------------ pages

@pytest.mark.parametrize("page, expected", [
    ("Overview", ["Latest gate decision: PROMOTED", "benchmark:arc_easy/acc", "Cycles over time",
                  "Prompt arm: the champion 4-shot beside the candidate (dev)",
                  "4-shot prompting of the champion matches the candidate within noise",
                  "a fine-tune is not needed for this", "champion 4-shot",
                  "running: benchmarks (running)", "Where the time went (latest cycle)",
                  "Champion history", "tiny-random+ad1", "promoted by the gate",
                  "Pass rate per evaluation run", "Benchmark trend"]),
    ("Failures", ["18 failures match", "diff: reference to output", "exact_match",
                  "signatures invalid_json",
                  "corrected answer", "similarity to reference 0.400"]),
    ("Arena", ["answer A", "answer B", "0 of 12 shared items judged by tester",
               "Leaderboard for these two models", "all judges"]),
    ("Leaderboard", ["judge: all (combined)", "judge: reference", "Win rate",
                     "Judge agreement with human votes", "no shared pairs yet"]),
    ("Benchmarks & training", ["Benchmarks", "d tiny-random", "-0.05", "(champion)",
                               "Training loss",
                               "Generated data", "contaminated", "duplicate", "pool_id"]),
])
def test_every_page_renders_its_content(seeded, page, expected):
    text = page_text(run_page(seeded, page))
    for snippet in expected:
        assert snippet in text, (snippet, text[:3000])


@pytest.mark.parametrize("page", ["Overview", "Failures", "Arena", "Leaderboard",
                                  "Benchmarks & training"])
def test_pages_on_an_empty_workspace_explain_what_to_do(workspace, page):
    at = run_page(workspace, page)
    assert at.info, page


def test_pages_degrade_when_later_tables_are_missing_or_empty(workspace):
    """A store with only evaluation data (or a snapshot older than a migration) shows info
    messages, not errors."""
    with Store(workspace) as store:
        for model_id, name in NAMES.items():
            store.put_model(model_id, name, "tiny-random")
        for statement in ("DROP VIEW failures_v", "DROP TABLE failures", "DROP TABLE clusters",
                          "DROP TABLE matches", "DROP TABLE benchmark_results",
                          "DROP TABLE train_logs", "DROP TABLE generated_examples",
                          "DROP TABLE cycles"):
            store.execute(statement)
    for page in ("Overview", "Failures", "Arena", "Leaderboard", "Benchmarks & training"):
        assert run_page(workspace, page).info, page


# ------------------------------------------------------------------ failures

def test_failure_filters_are_parameters_and_combine(seeded):
    with snapshot(seeded) as store:
        every = filter_failures(store, FailureFilter())
        assert every.total == len(every.rows) == 18  # every base item, 6 candidate items
        assert {r["model_id"] for r in filter_failures(store, FailureFilter(
            model=CAND)).rows} == {CAND}
        too_long = filter_failures(store, FailureFilter(category="too_long"))
        assert {r["example_id"] for r in too_long.rows} == {"e0", "e3", "e6", "e9"} and \
            too_long.total == 6
        assert filter_failures(store, FailureFilter(check="too_long")).total == 6
        assert filter_failures(store, FailureFilter(cluster="c-colour")).total == 6
        assert {r["run_id"] for r in filter_failures(store, FailureFilter(cycle="cy0")).rows
                } == {"run-0"}
        assert filter_failures(store, FailureFilter(cycle="cy1")).total == 18
        # case-insensitive literal search over instruction, input, reference and output
        assert [(r["model_id"], r["example_id"]) for r in filter_failures(
            store, FailureFilter(search="BLUE 3")).rows] == [(BASE, "e3")]
        assert {r["example_id"] for r in filter_failures(
            store, FailureFilter(search="item 1?")).rows} == {"e1"}
        page = filter_failures(store, FailureFilter(model=BASE, category="too_long"), limit=2)
        assert len(page.rows) == 2 and page.total == 4
        tagged = filter_failures(store, FailureFilter(category="my-tag", tagged=("p0-5",)))
        assert [r["prediction_id"] for r in tagged.rows] == ["p0-5"]
        hidden = filter_failures(store, FailureFilter(model=BASE, hide=("p0-0", "p0-1")))
        assert hidden.total == 10
        signed = filter_failures(store, FailureFilter(signature="wrong_value:colour"))
        assert signed.total == 6 and {r["cluster_id"] for r in signed.rows} == {"c-colour"}
        assert signed.rows[0]["signatures"] == ["wrong_value:colour"]
        assert failure_options(store)["signature"] == ["invalid_json", "wrong_value:colour"]


def test_sql_metacharacters_in_search_return_nothing_extra(seeded):
    """Search text is matched literally: '%' and '_' find the one output holding them, quotes and
    comments find nothing, and no filter value widens the result."""
    with snapshot(seeded) as store:
        literal = {"%": {"e4"}, "_": {"e4"}, "100%": {"e4"}, "' OR 1=1 --": set(),
                   "'; DROP TABLE failures; --": set(), "\\": set(), '"': set(),
                   "%' OR '1'='1": set(), "*": set(), "$1": set()}
        for text, expected in literal.items():
            rows = filter_failures(store, FailureFilter(search=text)).rows
            assert {r["example_id"] for r in rows} == expected, text
            for flt in (FailureFilter(task=text), FailureFilter(category=text),
                        FailureFilter(cycle=text), FailureFilter(cluster=text),
                        FailureFilter(check=text), FailureFilter(signature=text),
                        FailureFilter(model=text, search=text)):
                assert filter_failures(store, flt).total == 0, (text, flt)
        # every instruction ends with "?", the placeholder character: all failures, no error
        assert filter_failures(store, FailureFilter(search="?")).total == 18
        assert filter_failures(store, FailureFilter()).total == 18


def test_review_actions_show_at_once_and_reach_the_store(seeded):
    at = run_page(seeded, "Failures")
    widget(at, "selectbox", "model").set_value(BASE).run()
    widget(at, "text_input", "search text").set_value("blue 5").run()
    assert "1 failures match" in page_text(at)
    widget(at, "button", "mark reviewed").click().run()
    widget(at, "button", "mark the reference wrong").click().run()
    widget(at, "text_area", "corrected answer").set_value("crimson")
    widget(at, "button", "save correction").click().run()
    widget(at, "text_input", "new failure category").set_value("colour-confusion")
    widget(at, "button", "tag").click().run()
    assert not at.exception
    text = page_text(at)
    for shown in ("review history of this item", "reference_wrong", "crimson",
                  "colour-confusion", "tagged colour-confusion"):
        assert shown in text, shown
    # the new category is a filter value at once, matching the tagged failure
    widget(at, "text_input", "search text").set_value("").run()
    widget(at, "selectbox", "failure category").set_value("colour-confusion").run()
    assert "1 failures match" in page_text(at)
    widget(at, "checkbox", "hide reviewed").check().run()
    assert "0 failures match" in page_text(at)
    with Store(seeded) as store:  # a writer ingests the inbox
        reviews = store.query("SELECT action, category, reviewer, prediction_id FROM reviews "
                              "ORDER BY action")
        assert [(r["action"], r["category"]) for r in reviews] == [
            ("reference_wrong", None), ("reviewed", None), ("tag", "colour-confusion")]
        assert {r["prediction_id"] for r in reviews} == {"p0-5"}
        assert {r["reviewer"] for r in reviews} == {"tester"}
        assert store.query("SELECT example_id, prediction_id, corrected_output, reviewer "
                           "FROM corrections") == [{"example_id": "e5", "prediction_id": "p0-5",
                                                    "corrected_output": "crimson",
                                                    "reviewer": "tester"}]


# ------------------------------------------------------------------ arena and leaderboard

def test_blind_votes_record_the_order_and_update_the_leaderboard_at_once(seeded):
    at = run_page(seeded, "Arena", arena_seed=7)
    for k in range(N):
        assert f"{k} of {N} shared items judged by tester" in page_text(at)
        widget(at, "button", "A is better").click().run()
        assert "vote recorded (A is better): A was" in page_text(at)
    text = page_text(at)
    assert "You have judged every shared item" in text and "human votes" in text
    at = run_page(seeded, "Leaderboard")
    assert "judge: human" in page_text(at)
    agreement = next(df.value for df in at.dataframe if "shared pairs" in df.value.columns)
    assert agreement.to_dict("records")[0]["shared pairs"] == N
    with Store(seeded) as store:
        votes = store.query("SELECT * FROM matches WHERE judge = 'human'")
    assert len(votes) == N and {v["example_id"] for v in votes} == {f"e{i}" for i in range(N)}
    for v in votes:  # clicking "A" means the model shown first won
        detail = json.loads(v["detail"])
        assert v["voter"] == "tester" and detail["seed"] == 7 and detail["clicked"] == "A"
        assert v["shown_first"] == detail["shown"][0]
        assert v["verdict"] == ("A" if v["shown_first"] == v["model_a"] else "B")
    assert {v["shown_first"] for v in votes} == {BASE, CAND}  # the order was randomised


def test_vote_record_maps_the_screen_back_to_the_models():
    item = {"task_id": "t", "example_id": "e1"}
    plain = views.vote_record(item, "m1", "m2", False, "A", "v", 3, 0, "test")
    flipped = views.vote_record(item, "m1", "m2", True, "A", "v", 3, 0, "test")
    assert (plain["verdict"], plain["shown_first"]) == ("A", "m1")
    assert (flipped["verdict"], flipped["shown_first"]) == ("B", "m2")
    assert views.vote_record(item, "m1", "m2", True, "both_bad", "v", 3, 0, "t")["verdict"] == \
        "both_bad"
    with pytest.raises(ValueError):
        views.vote_record(item, "m1", "m2", True, "C", "v", 3, 0, "test")


def test_pick_item_is_seeded_and_skips_judged_items():
    items = [{"example_id": f"e{i}"} for i in range(5)]
    assert views.pick_item(items, set(), 1, 0) == views.pick_item(items, set(), 1, 0)
    assert views.pick_item(items, {f"e{i}" for i in range(4)}, 1, 0)[0]["example_id"] == "e4"
    assert views.pick_item(items, {f"e{i}" for i in range(5)}, 1, 0) is None
    flips = {views.pick_item(items, set(), 1, r)[1] for r in range(20)}
    assert flips == {True, False}


def test_judge_agreement_orients_pairs_both_ways():
    matches = [{"judge": "reference", "example_id": "e1", "model_a": "x", "model_b": "y",
                "verdict": "A"},
               {"judge": "human", "example_id": "e1", "model_a": "y", "model_b": "x",
                "verdict": "B"},
               {"judge": "reference", "example_id": "e2", "model_a": "x", "model_b": "y",
                "verdict": "tie"},
               {"judge": "human", "example_id": "e2", "model_a": "x", "model_b": "y",
                "verdict": "A"}]
    assert views.judge_agreement(matches) == {"reference": (0.5, 2)}


# ------------------------------------------------------------------ pure helpers

def test_diff_escapes_untrusted_text_and_marks_changes():
    out = views.diff_html("the answer is red", "the answer is <script>alert(1)</script>")
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert "<del style='background:#fdd'>red</del>" in out and "the answer is " in out


def test_names_are_short_and_unique():
    assert views.short_name("smollm2+/tmp/ws/adapters/0c8c") == "smollm2+0c8c"
    assert views.short_name("smollm2") == "smollm2"
    names = views.display_names({"a1": "m+/x/ad", "b2": "m+/y/ad", "c3": "other"})
    assert names["c3"] == "other" and len(set(names.values())) == 3


def test_benchmark_table_puts_the_champion_first_with_differences():
    rows = [{"model_id": m, "benchmark": b, "benchmark_version": "1", "metric": "x",
             "limit_n": 10, "shots": 0, "value": v, "higher_is_better": hib}
            for m, b, v, hib in (("new", "arc", 0.4, True), ("champ", "arc", 0.5, True),
                                 ("champ", "ce", 2.0, False), ("new", "ce", 1.5, False),
                                 ("new", "mmlu", 0.3, True))]
    table = {r["benchmark"]: r for r in views.benchmark_table(rows, "champ", {"new": "N"})}
    assert list(table["arc"])[5:] == ["champ (champion)", "N", "d N"]
    assert table["arc"]["d N"] == pytest.approx(-0.1) and table["arc"]["better"] == "higher"
    assert table["ce"]["d N"] == pytest.approx(-0.5) and table["ce"]["better"] == "lower"
    assert table["mmlu"]["d N"] is None  # the champion has no comparable result
    assert "d N" not in views.benchmark_table(rows, None, {})[0]


# ------------------------------------------------------------------ serving and concurrency

def test_app_refuses_a_non_loopback_bind_without_the_flag(workspace, monkeypatch):
    execs = []
    monkeypatch.setenv("EVALLOOP_APP_PASSWORD", "s3cret")

    def fake_exec(path, args):
        execs.append(args)
        raise SystemExit(0)  # a real exec never returns

    monkeypatch.setattr(os, "execv", fake_exec)
    for host in ("0.0.0.0", "192.168.1.10", "example.org"):
        with pytest.raises(EvalloopError, match="--allow-remote"):
            serve(workspace, host=host)
    assert not execs
    for host, remote in (("127.0.0.1", False), ("localhost", False), ("::1", False),
                         ("0.0.0.0", True)):
        with pytest.raises(SystemExit):
            serve(workspace, host=host, port=8123, allow_remote=remote)
    assert [args[args.index("--server.address") + 1] for args in execs] == [
        "127.0.0.1", "localhost", "::1", "0.0.0.0"]
    assert ["--login" in args for args in execs] == [False, False, False, True]
    assert not any("s3cret" in a for args in execs for a in args)  # never on the command line
    args = " ".join(streamlit_command(workspace, "127.0.0.1", 8123))
    for flag in ("--server.address 127.0.0.1", "--server.port 8123", "--server.headless true",
                 "--browser.gatherUsageStats false", f"--workspace {workspace.resolve()}"):
        assert flag in args, flag


def test_pages_serve_while_a_cycle_holds_the_database(seeded):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from loop.store.db import Store\n"
        f"s = Store({str(seeded)!r}); print('held', flush=True); time.sleep(120)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(EvalloopError):  # the main database is really locked
            Store(seeded)
        for page in ("Overview", "Failures", "Arena", "Leaderboard", "Benchmarks & training"):
            run_page(seeded, page)
        at = run_page(seeded, "Failures")
        widget(at, "button", "mark reviewed").click().run()
        at = run_page(seeded, "Arena", arena_seed=1)
        widget(at, "button", "both bad").click().run()
        assert "human votes" in page_text(at)  # counted at once, from the inbox
        assert len(inbox.read(seeded, "votes")) == len(inbox.read(seeded, "reviews")) == 1
    finally:
        holder.kill()
        holder.wait()
    with Store(seeded) as store:
        assert store.count("reviews") == 1
        assert store.query("SELECT verdict FROM matches WHERE judge = 'human'") == [
            {"verdict": "both_bad"}]


# ------------------------------------------------------------------ reviewers and login

def test_a_remote_bind_without_the_password_is_refused(workspace):
    env = {k: v for k, v in os.environ.items() if k != "EVALLOOP_APP_PASSWORD"}
    done = subprocess.run([sys.executable, "-m", "loop.cli", "app", "--workspace",
                           str(workspace), "--host", "0.0.0.0", "--allow-remote"],
                          capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.returncode == 2
    assert "EVALLOOP_APP_PASSWORD" in done.stderr and "Traceback" not in done.stderr


def test_login_asks_for_the_password_then_a_name_and_the_vote_records_it(seeded, monkeypatch):
    monkeypatch.setenv("EVALLOOP_APP_PASSWORD", "s3cret")
    at = AppTest.from_file(APP, default_timeout=60)
    sys.argv = ["app.py", "--workspace", str(seeded), "--login"]
    at.session_state["arena_seed"] = 3
    at.run()
    assert not at.sidebar.radio and not at.dataframe  # nothing shown before the login
    widget(at, "text_input", "password").set_value("wrong").run()
    assert "wrong password" in [e.value for e in at.error] and not at.sidebar.radio
    widget(at, "text_input", "password").set_value("s3cret").run()
    assert not [t for t in at.text_input if t.label == "password"]  # logged in
    assert at.session_state["login_password"] == ""  # the typed text is not kept
    assert "s3cret" not in [at.session_state[k] for k in ("login_password", "login_ok",
                                                          "reviewer")]
    name = widget(at.sidebar, "text_input", "your name (reviews and votes)")
    assert name.value == "" and "Enter your name" in page_text(at)  # no OS-user default
    name.set_value("alice")
    at.sidebar.radio[0].set_value("Arena").run()
    widget(at, "button", "tie").click().run()
    assert not at.exception and "judged by alice" in page_text(at)
    assert [v["voter"] for v in inbox.read(seeded, "votes")] == ["alice"]


def test_reviews_and_votes_record_their_reviewer_and_the_overview_counts_them(seeded):
    at = run_page(seeded, "Arena", arena_seed=7, reviewer="bob")
    widget(at, "button", "A is better").click().run()
    at = run_page(seeded, "Failures", reviewer="carol")
    widget(at, "button", "answer is wrong").click().run()
    at = run_page(seeded, "Overview")
    reviewers = next(df.value for df in at.dataframe if "reviewer" in df.value.columns)
    assert reviewers.to_dict("records") == [
        {"reviewer": "bob", "reviews": 0, "corrections": 0, "votes": 1},
        {"reviewer": "carol", "reviews": 1, "corrections": 0, "votes": 0}]
    with Store(seeded) as store:
        assert store.query("SELECT voter FROM matches WHERE judge = 'human'") == [
            {"voter": "bob"}]
        assert store.query("SELECT action, reviewer FROM reviews") == [
            {"action": "answer_wrong", "reviewer": "carol"}]


def _verdict(pid: str, who: str, ok: bool, minute: int = 0) -> dict:
    return {"prediction_id": pid, "reviewer": who, "action": "answer_ok" if ok else
            "answer_wrong", "created_at": f"2025-01-01T00:{minute:02d}:00"}


@pytest.mark.parametrize("rubric, reviews, expected", [
    ([], [_verdict("p1", "a", True)], (None, 0)),  # nothing graded
    ([{"prediction_id": "p1", "passed": True}], [], (None, 0)),  # nothing reviewed
    ([{"prediction_id": "p1", "passed": True}, {"prediction_id": "p2", "passed": False}],
     [_verdict("p1", "a", True), _verdict("p2", "a", True)], (0.5, 2)),
    # a reviewer's latest verdict counts
    ([{"prediction_id": "p1", "passed": False}],
     [_verdict("p1", "a", True, 1), _verdict("p1", "a", False, 2)], (1.0, 1)),
    # majority of reviewers; an even split is left out
    ([{"prediction_id": "p1", "passed": True}, {"prediction_id": "p2", "passed": True}],
     [_verdict("p1", "a", True), _verdict("p1", "b", True), _verdict("p1", "c", False),
      _verdict("p2", "a", True), _verdict("p2", "b", False)], (1.0, 1)),
    # other review actions are no verdict
    ([{"prediction_id": "p1", "passed": True}],
     [{"prediction_id": "p1", "reviewer": "a", "action": "reviewed"}], (None, 0)),
])
def test_rubric_agreement_with_reviewers(rubric, reviews, expected):
    assert views.rubric_agreement(rubric, reviews) == expected


def test_reviewer_agreement_on_verdicts_and_votes_in_either_order():
    reviews = [_verdict("p1", "a", True), _verdict("p1", "b", True), _verdict("p2", "a", True),
               _verdict("p2", "b", False), _verdict("p3", "c", True)]
    vote = {"task_id": "t", "example_id": "e1", "judge": "human"}
    votes = [{**vote, "model_a": "m1", "model_b": "m2", "verdict": "A", "voter": "a"},
             {**vote, "model_a": "m2", "model_b": "m1", "verdict": "B", "voter": "b"},
             {**vote, "model_a": "m1", "model_b": "m2", "verdict": "A", "judge": "reference"}]
    assert views.reviewer_agreement(reviews, votes) == [
        {"reviewers": "a / b", "on": "answer verdicts", "agreement": 0.5, "items": 2},
        {"reviewers": "a / b", "on": "votes", "agreement": 1.0, "items": 1}]
    assert views.reviewer_counts(reviews, [{"reviewer": "c"}], votes) == [
        {"reviewer": "a", "reviews": 2, "corrections": 0, "votes": 1},
        {"reviewer": "b", "reviews": 2, "corrections": 0, "votes": 1},
        {"reviewer": "c", "reviews": 1, "corrections": 1, "votes": 0}]
