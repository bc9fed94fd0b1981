"""lm-eval benchmarks on local data: cached per fingerprint, adapters separate, clear errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import random_adapter
from loop.evaluation.benchmarks import run_benchmarks
from loop.core.errors import BenchmarkDataError, ConfigError
from loop.store.db import Store

DATA = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
pytestmark = pytest.mark.skipif(not (DATA / "arc_easy" / "test.jsonl").is_file(),
                                reason=f"benchmark data not found at {DATA}")


def test_cached_rerun_and_adapter_rows(workspace, tmp_path):
    adapter = random_adapter(tmp_path / "adapter")
    with Store(workspace) as store:
        base = run_benchmarks(store, "tiny-random", ["arc_easy"], 8, DATA, progress=False)
        tuned = run_benchmarks(store, f"tiny-random+{adapter}", ["arc_easy"], 8, DATA,
                               progress=False)
        assert base[0].model_id != tuned[0].model_id
        assert all(r.n == 8 and r.limit == 8 for r in base + tuned)
        ids = {r["model_id"] for r in store.query("SELECT DISTINCT model_id FROM "
                                                  "benchmark_results")}
        assert ids == {base[0].model_id, tuned[0].model_id}
        samples = store.query("SELECT count(*) AS n FROM benchmark_samples WHERE model_id = ?",
                              [base[0].model_id])[0]["n"]
        assert samples == 8
        start = time.perf_counter()
        again = run_benchmarks(store, "tiny-random", ["arc_easy"], 8, DATA, progress=False)
        assert time.perf_counter() - start < 5
        assert all(r.cached for r in again)
        assert [(r.metric, r.value) for r in again] == [(r.metric, r.value) for r in base]
        rows = store.count("benchmark_results")
    with Store(workspace) as store:
        assert store.count("benchmark_results") == rows


def test_same_limit_selects_the_same_items(workspace, tmp_path, monkeypatch):
    with Store(workspace) as store:
        run_benchmarks(store, "tiny-random", ["arc_easy"], 6, DATA, progress=False)
        first = [json.loads(r["doc"])["id"] if r["doc"] else r["doc_id"] for r in store.query(
            "SELECT doc, doc_id FROM benchmark_samples ORDER BY doc_id")]
    monkeypatch.setenv("EVALLOOP_HOME", str(tmp_path / "home"))  # scored, not read from there
    with Store(workspace.parent / "other") as store:
        run_benchmarks(store, "tiny-random", ["arc_easy"], 6, DATA, progress=False)
        second = [json.loads(r["doc"])["id"] if r["doc"] else r["doc_id"] for r in store.query(
            "SELECT doc, doc_id FROM benchmark_samples ORDER BY doc_id")]
    assert first == second and len(first) == 6


def test_missing_data_names_the_task_and_the_expected_file(workspace, tmp_path):
    empty = tmp_path / "no-data"
    empty.mkdir()
    with Store(workspace) as store:
        with pytest.raises(BenchmarkDataError) as err:
            run_benchmarks(store, "tiny-random", ["arc_easy"], 4, empty, progress=False)
    assert "arc_easy" in str(err.value) and str(empty) in str(err.value)


def test_bench_compare_prints_paired_deltas(workspace, tmp_path, capsys):
    from loop.cli import main

    adapter = random_adapter(tmp_path / "adapter")
    args = ["bench", "--workspace", str(workspace), "--tasks", "arc_easy", "--limit", "6",
            "--benchmark-data", str(DATA)]
    assert main([*args, "--model", f"tiny-random+{adapter}", "--compare", "tiny-random",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    ours = {r["metric"]: r for r in report["results"]}
    other = {r["metric"]: r for r in report["compare"]}
    assert ours["acc"]["model_id"] != other["acc"]["model_id"]
    assert ours["acc"]["n"] == other["acc"]["n"] == 6
    with Store(workspace) as store:  # the same seeded items for both models
        docs = store.query("SELECT model_id, list(doc_id ORDER BY doc_id) AS ids "
                           "FROM benchmark_samples GROUP BY model_id")
    assert len(docs) == 2 and docs[0]["ids"] == docs[1]["ids"]
    assert main([*args, "--model", f"tiny-random+{adapter}", "--compare", "tiny-random"]) == 0
    table = capsys.readouterr().out
    header = next(line for line in table.splitlines() if line.startswith("benchmark"))
    assert "other" in header and "delta" in header
    row = next(line for line in table.splitlines() if " acc " in line)
    delta = ours["acc"]["value"] - other["acc"]["value"]
    assert f"{other['acc']['value']:.4f}" in row and f"{delta:+.4f}" in row


def test_bench_seconds_and_seed_score_the_items_a_cycle_scores(workspace, capsys):
    from evals.benchmark_sizing import size_items
    from loop.cli import main
    from loop.core.settings import BenchmarksSettings
    from loop.evaluation.benchmarks import cycle_items

    tasks = ["arc_easy", "arc_challenge"]
    counts = size_items(tasks, 0.5)  # a cycle's [benchmarks] seconds = 0.5 on these tasks
    assert counts == cycle_items(BenchmarksSettings(tasks=tuple(tasks), seconds=0.5))
    assert counts["arc_easy"] > counts["arc_challenge"] >= 2  # cheaper ARC-Easy gets more
    args = ["bench", "--workspace", str(workspace), "--model", "tiny-random", "--tasks", *tasks,
            "--benchmark-data", str(DATA), "--json"]
    assert main([*args, "--seconds", "0.5", "--seed", "0"]) == 0
    rows = [r for r in json.loads(capsys.readouterr().out) if r["metric"] == "acc"]
    assert {(r["benchmark"], r["n"], r["seed"]) for r in rows} == {
        (b, k, 0) for b, k in counts.items()}
    with Store(workspace) as store:  # a cycle at seed 0 and these counts reads them back
        again = run_benchmarks(store, "tiny-random", tasks, counts, DATA, progress=False,
                               seed=0)
        assert again and all(r.cached for r in again)
        other = run_benchmarks(store, "tiny-random", tasks, counts, DATA, progress=False,
                               seed=1234)  # bench's default seed: other items
        assert not any(r.cached for r in other)
    assert main([*args, "--seconds", "0.5"]) == 0  # the default seed's run, now cached
    assert {r["seed"] for r in json.loads(capsys.readouterr().out)} == {1234}
    with pytest.raises(SystemExit):  # one way of sizing at a time
        main([*args, "--seconds", "0.5", "--limit", "6"])
    assert "not allowed with" in capsys.readouterr().err
    assert main([*args, "--seconds", "0"]) == 2
    assert "--seconds must be positive" in capsys.readouterr().err


def test_paired_deltas_pairs_items_and_the_same_model_differs_by_zero(workspace, tmp_path):
    from evals.paired import GOLD_LOGPROB
    from loop.core.settings import BenchmarksSettings
    from loop.evaluation.benchmarks import paired_deltas

    settings = BenchmarksSettings(tasks=("arc_easy",), data_dir=str(DATA))
    adapter = random_adapter(tmp_path / "adapter")
    with Store(workspace) as store:
        same = paired_deltas(store, "tiny-random", "tiny-random", settings, 12, 0, False)
        other = paired_deltas(store, "tiny-random", f"tiny-random+{adapter}", settings, 12, 0,
                              False)
    acc = same["paired"]["arc_easy/acc"]
    assert acc["n"] == 12 and acc["delta"] == acc["lower"] == acc["upper"] == 0.0
    assert 0 < acc["mde"] < 1 and same["pooled"]["pooled/accuracy"]["delta"] == 0.0
    gold = same["paired"][f"arc_easy/{GOLD_LOGPROB}"]
    assert gold["unit"] == "nats" and gold["delta"] == 0.0
    # the paired difference is the difference of the headline values (same items)
    diff = other["candidate"]["arc_easy/acc"] - other["champion"]["arc_easy/acc"]
    assert other["deltas"]["arc_easy/acc"] == pytest.approx(diff)
    assert other["paired"][f"arc_easy/{GOLD_LOGPROB}"]["delta"] != 0.0


def _doc_ids(store: Store, model_id: str) -> list[int]:
    return [r["doc_id"] for r in store.query(
        "SELECT doc_id FROM benchmark_samples WHERE model_id = ? ORDER BY doc_id", [model_id])]


def test_another_seed_scores_other_items_and_replaces_the_stored_run(workspace):
    with Store(workspace) as store:
        first = run_benchmarks(store, "tiny-random", ["arc_easy"], 6, DATA, progress=False,
                               seed=1)
        ids = _doc_ids(store, first[0].model_id)
        other = run_benchmarks(store, "tiny-random", ["arc_easy"], 6, DATA, progress=False,
                               seed=2)
        assert not any(r.cached for r in other) and {r.seed for r in other} == {2}
        assert len(_doc_ids(store, first[0].model_id)) == 6  # no seed-1 items left beside them
        assert _doc_ids(store, first[0].model_id) != ids
        again = run_benchmarks(store, "tiny-random", ["arc_easy"], 6, DATA, progress=False,
                               seed=2)
        assert all(r.cached for r in again)


def test_per_benchmark_counts(workspace):
    with Store(workspace) as store:
        rows = run_benchmarks(store, "tiny-random", ["arc_easy", "arc_challenge"],
                              {"arc_easy": 5, "arc_challenge": 3}, DATA, progress=False)
        assert {(r.benchmark, r.n, r.limit) for r in rows if r.metric == "acc"} == {
            ("arc_easy", 5, 5), ("arc_challenge", 3, 3)}
        with pytest.raises(ConfigError):
            run_benchmarks(store, "tiny-random", ["arc_easy"], {"arc_easy": 0}, DATA)


def test_a_fresh_workspace_reads_a_base_model_run_from_the_user_cache(workspace, tmp_path,
                                                                      monkeypatch):
    import loop.evaluation.benchmarks as stage

    monkeypatch.setenv("EVALLOOP_HOME", str(tmp_path / "home"))
    adapter = random_adapter(tmp_path / "adapter")
    with Store(workspace) as store:
        base = run_benchmarks(store, "tiny-random", ["arc_easy"], 7, DATA, progress=False,
                              seed=3)
        run_benchmarks(store, f"tiny-random+{adapter}", ["arc_easy"], 7, DATA, progress=False,
                       seed=3)
        ids = _doc_ids(store, base[0].model_id)
    kept = list((tmp_path / "home" / "benchmarks").glob("*.json"))
    assert len(kept) == 1  # the base model's run only

    def no_model(*args):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(stage, "make_lm", no_model)
    with Store(workspace.parent / "fresh") as store:
        again = run_benchmarks(store, "tiny-random", ["arc_easy"], 7, DATA, progress=False,
                               seed=3)
        assert all(r.cached for r in again)
        assert [(r.metric, r.value) for r in again] == [(r.metric, r.value) for r in base]
        assert _doc_ids(store, base[0].model_id) == ids
        assert store.count("models") == 1
        with pytest.raises(AssertionError, match="loaded"):  # another seed is not kept
            run_benchmarks(store, "tiny-random", ["arc_easy"], 7, DATA, progress=False, seed=4)
