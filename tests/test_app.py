"""The review app: every page renders on a seeded store; actions land in the inbox and store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from loop.app_queries import filter_failures, serve, snapshot
from loop.errors import EvalloopError
from loop.store import Store, now

APP = str(Path(__file__).resolve().parents[1] / "app.py")
MODELS = ("base-0000", "base-0000+cand")


def seed(workspace: Path, n: int = 12) -> None:
    """A small store with every table the pages read (two models, a cycle, matches...)."""
    with Store(workspace) as store:
        for model_id in MODELS:
            store.put_model(model_id, model_id.replace("-0000", ""), "tiny-random")
        store.insert("examples", [{"task_id": "t", "split": "test", "example_id": f"e{i}",
                                   "instruction": f"Colour of item {i}?", "input": "",
                                   "output": "red", "category": "colour"} for i in range(n)])
        for m, model_id in enumerate(MODELS):
            run_id = f"run{m}"
            store.insert("runs", [{"run_id": run_id, "kind": "eval", "task_id": "t",
                                   "model_id": model_id, "split": "test", "params": {},
                                   "status": "done", "started_at": now(), "finished_at": now(),
                                   "summary": {}}])
            for i in range(n):
                pid = f"p{m}-{i}"
                output = "red" if (m and i % 2) else f"blue {i}"
                store.insert("predictions", [{"prediction_id": pid, "model_id": model_id,
                                              "prompt_hash": f"h{i}", "gen_hash": "g",
                                              "prompt": f"<user> Colour of item {i}?",
                                              "output": output, "latency_s": 0.1,
                                              "prompt_tokens": 9, "output_tokens": 2,
                                              "created_at": now()}])
                store.insert("run_items", [{"run_id": run_id, "example_id": f"e{i}",
                                            "prediction_id": pid}])
                store.insert("scores", [{"prediction_id": pid, "task_id": "t",
                                         "example_id": f"e{i}", "suite_version": "1",
                                         "check_name": "exact_match", "check_version": "1",
                                         "passed": output == "red", "value": 0.0,
                                         "required": True, "detail": {}, "created_at": now()}])
                if output != "red":
                    store.insert("failures", [{"run_id": run_id, "example_id": f"e{i}",
                                               "prediction_id": pid, "task_id": "t",
                                               "model_id": model_id, "split": "test",
                                               "categories": ["wrong_answer"],
                                               "failed_checks": ["exact_match"],
                                               "similarity": 0.4, "cluster_id": "c1"}])
        store.insert("cycles", [{"cycle_id": "cy1", "task_id": "t", "attempt": 1,
                                 "status": "done", "champion_id": MODELS[0],
                                 "champion_name": "base", "candidate_id": MODELS[1],
                                 "candidate_name": "base+cand", "started_at": now(),
                                 "finished_at": now(), "summary": {}}])
        store.insert("gate_decisions", [{"cycle_id": "cy1", "promote": True, "p_value": 0.01,
                                         "reasons": [{"check": "gain", "passed": True,
                                                      "detail": "0% -> 50%"}],
                                         "champion_pass_rate": 0.0, "candidate_pass_rate": 0.5,
                                         "created_at": now()}])
        store.insert("matches", [{"match_id": f"m{i}", "task_id": "t", "example_id": f"e{i}",
                                  "model_a": MODELS[0], "model_b": MODELS[1],
                                  "judge": "reference", "verdict": "B" if i % 2 else "tie",
                                  "created_at": now()} for i in range(n)])
        store.insert("train_logs", [{"train_id": "tr1", "step": s, "loss": 2.0 / s,
                                     "tokens_per_s": 300.0} for s in range(1, 5)])
        store.insert("benchmark_results", [{
            "model_id": m, "benchmark": "arc_easy", "benchmark_version": "1", "limit_n": 10,
            "shots": 0, "task": "arc_easy", "metric": "acc", "value": 0.5, "stderr": 0.1,
            "n": 10, "task_version": "1", "base": "tiny-random", "model_name": m,
            "lm_eval_version": "0.4", "backend": "evalloop"} for m in MODELS])
        store.insert("generated_examples", [{
            "gen_id": "g1", "batch_id": "b", "task_id": "t", "strategy": "retrieval",
            "example_id": "x", "instruction": "i", "output": "o", "status": "rejected",
            "reason": "duplicate"}])


@pytest.fixture
def seeded(workspace) -> Path:
    seed(workspace)
    return workspace


def run_page(workspace: Path, page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    sys.argv = ["app.py", "--workspace", str(workspace)]  # the app reads its workspace flag
    at.run()
    at.sidebar.radio[0].set_value(page).run()
    assert not at.exception, at.exception
    return at


@pytest.mark.parametrize("page, expected", [
    ("Overview", "Latest gate decision"), ("Failures", "failures shown"),
    ("Arena", "answer A"), ("Leaderboard", "judge: reference"),
    ("Benchmarks & training", "Training loss"),
])
def test_every_page_renders_its_content(seeded, page, expected):
    at = run_page(seeded, page)
    text = " ".join(str(e.value) for e in list(at.markdown) + list(at.subheader) +
                    list(at.caption) + list(at.header) + list(at.text_area))
    text += " ".join(t.label for t in at.text_area)
    assert expected in text, text[:2000]


def test_pages_on_an_empty_workspace_explain_what_to_do(workspace):
    for page in ("Overview", "Failures", "Arena", "Leaderboard"):
        at = run_page(workspace, page)
        assert at.info, page


def test_correction_and_vote_reach_the_store(seeded):
    at = run_page(seeded, "Failures")
    correction = next(t for t in at.text_area if t.label == "corrected answer")
    correction.set_value("red")
    next(b for b in at.button if b.label == "save correction").click().run()
    assert not at.exception
    at = run_page(seeded, "Arena")
    next(b for b in at.button if b.label == "tie").click().run()
    assert not at.exception
    with Store(seeded) as store:  # a writer ingests the inbox
        assert store.query("SELECT corrected_output FROM corrections") == [
            {"corrected_output": "red"}]
        votes = store.query("SELECT judge, verdict FROM matches WHERE judge = 'human'")
        assert votes == [{"judge": "human", "verdict": "tie"}]


def test_sql_metacharacters_in_search_return_nothing_extra(seeded):
    with Store(seeded) as store:
        store.publish_snapshot()
    with snapshot(seeded) as store:
        everything = filter_failures(store)
        assert everything
        for evil in ("' OR 1=1 --", "%", "_", "'; DROP TABLE failures; --", "\\", '"'):
            assert filter_failures(store, search=evil) == []
            assert filter_failures(store, task=evil) == []
            assert filter_failures(store, category=evil) == []
        assert len(filter_failures(store)) == len(everything)


def test_app_refuses_a_non_loopback_bind_without_the_flag(workspace):
    with pytest.raises(EvalloopError, match="--allow-remote"):
        serve(workspace, host="0.0.0.0")
    with pytest.raises(EvalloopError):
        serve(workspace, host="192.168.1.10")


def test_pages_serve_while_a_cycle_holds_the_database(seeded):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from loop.store import Store\n"
        f"s = Store({str(seeded)!r}); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for page in ("Overview", "Failures", "Leaderboard"):
            run_page(seeded, page)
    finally:
        holder.kill()
        holder.wait()
