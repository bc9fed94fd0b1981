"""Preference pairs: each source with its counts and exclusions, ties never paired, human votes
kept apart from automatic judges, test items rejected as contaminated, the JSONL export and its
manifest, and `evalloop pairs`."""

from __future__ import annotations

import contextlib
import json
import zlib

import numpy as np
import pytest
from conftest import write_task

from loop.targeted.pairs import (
    PairSet,
    build_pairs,
    collect_pairs,
    pairs_from_corrections,
    pairs_from_failures,
    pairs_from_matches,
)
from loop.core.pairs import read_pairs
from loop.core.records import Example
from loop.store.db import Store, now
from loop.data.tasks import load_task

COLOURS = ["red", "green", "blue", "yellow"]


def records(n: int, offset: int) -> list[dict]:
    return [{"instruction": "Name the colour mentioned in the sentence. One word.",
             "input": f"Crate {offset + i} was painted {COLOURS[i % 4]}.",
             "output": COLOURS[i % 4]} for i in range(n)]


class BagOfWords:
    """A deterministic fake embedder: hashed word counts."""

    def encode(self, texts):
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, zlib.crc32(word.encode()) % 64] += 1
        return out + 1e-3


@pytest.fixture
def setup(tmp_path):
    """A task (dev and test disjoint), two evaluated models, and votes, corrections, failures."""
    path = write_task(tmp_path / "task", {"train": records(12, 100), "dev": records(6, 200),
                                          "test": records(4, 300)})
    task = load_task(path)
    store = Store(tmp_path / "ws")
    store.put_task(task.name, str(path), task.data_hash,
                   [e for split in task.splits.values() for e in split])
    dev, test = task.split("dev"), task.split("test")
    for model, wrong in (("m1", "purple"), ("m2", None)):
        for split, items in (("dev", dev), ("test", test)):
            run = f"run-{model}-{split}"
            store.start_run(run, "eval", task.name, model, split, {})
            for e in items:
                pid = f"p-{model}-{e.id}"
                store.insert("predictions", [{
                    "prediction_id": pid, "model_id": model, "prompt_hash": "h", "gen_hash": "g",
                    "prompt": e.input, "output": wrong or e.output, "created_at": now()}])
                store.insert("run_items", [{"run_id": run, "example_id": e.id,
                                            "prediction_id": pid}])
            store.finish_run(run, {})

    def match(example, judge, verdict, voter=None):
        return {"match_id": f"x-{example.id}-{judge}-{verdict}", "task_id": task.name,
                "example_id": example.id, "model_a": "m1", "model_b": "m2", "judge": judge,
                "verdict": verdict, "voter": voter, "detail": {}, "created_at": now()}

    store.insert("matches", [
        match(dev[0], "human", "B", "ann"),       # m2 (right) beats m1 -> a human pair
        match(dev[1], "human", "tie", "ann"),     # never a pair
        match(dev[2], "human", "both_bad", "bob"),
        match(dev[3], "human", None, "bob"),      # no verdict (an error)
        match(dev[0], "reference", "B"),          # an automatic judge: kept apart
        match(dev[4], "reference", "tie"),
        match(test[0], "human", "B", "ann"),      # a test item: contaminated
    ])
    store.insert("corrections", [
        {"correction_id": "c-old", "task_id": task.name, "example_id": dev[1].id,
         "prediction_id": f"p-m1-{dev[1].id}", "corrected_output": "grey", "reviewer": "ann",
         "created_at": now()},
        {"correction_id": "c-new", "task_id": task.name, "example_id": dev[1].id,
         "prediction_id": f"p-m1-{dev[1].id}", "corrected_output": dev[1].output,
         "reviewer": "ann", "created_at": now()},
    ])
    store.insert("failures", [
        {"run_id": "run-m1-dev", "example_id": e.id, "prediction_id": f"p-m1-{e.id}",
         "task_id": task.name, "model_id": "m1", "split": "dev"} for e in dev[:3]])
    yield task, store
    with contextlib.suppress(Exception):  # the CLI test closes it first
        store.close()


def test_pairs_from_each_source_with_counts_and_exclusions(setup):
    task, store = setup
    found = collect_pairs(store, task)
    counts = found.counts()
    assert counts["human"] == {"pairs": 2, "excluded": {"both_bad": 1, "no_verdict": 1,
                                                        "tie": 1}}
    assert counts["judge"] == {"pairs": 1, "excluded": {"tie": 1}}
    assert counts["correction"] == {"pairs": 1, "excluded": {"superseded": 1}}
    assert counts["failure"] == {"pairs": 3, "excluded": {}}
    dev0 = task.split("dev")[0]
    human = next(p for p in found.pairs if p.source == "human" and p.example_id == dev0.id)
    assert (human.chosen, human.rejected) == (dev0.output, "purple")
    assert (human.chosen_by, human.rejected_by, human.voter) == ("m2", "m1", "ann")
    judge = next(p for p in found.pairs if p.source == "judge")
    assert judge.judge == "reference" and judge.voter is None
    correction = next(p for p in found.pairs if p.source == "correction")
    assert correction.origin == "c-new" and correction.chosen == task.split("dev")[1].output
    assert correction.rejected == "purple" and correction.chosen_by == "reviewer:ann"
    failure = next(p for p in found.pairs if p.source == "failure")
    assert failure.chosen_by == "reference" and failure.rejected == "purple"


def test_a_tie_never_becomes_a_pair():
    items = {"e": Example("e", "Q?", "yes")}
    rows = [{"match_id": f"m{i}", "example_id": "e", "model_a": "a", "model_b": "b",
             "judge": judge, "verdict": "tie", "output_a": "yes", "output_b": "no"}
            for i, judge in enumerate(("human", "reference", "llm"))]
    pairs, excluded = pairs_from_matches("t", rows, items)
    assert pairs == [] and [e.reason for e in excluded] == ["tie"] * 3
    assert [e.source for e in excluded] == ["human", "judge", "judge"]


def test_unusable_rows_are_excluded_with_reasons():
    items = {"e": Example("e", "Q?", "yes")}
    base = {"example_id": "e", "model_a": "a", "model_b": "b", "judge": "human"}
    pairs, excluded = pairs_from_matches("t", [
        {**base, "match_id": "1", "verdict": "A", "output_a": "yes", "output_b": None},
        {**base, "match_id": "2", "verdict": "A", "output_a": "yes", "output_b": " yes"},
        {**base, "match_id": "3", "verdict": "A", "output_a": "y", "output_b": "n",
         "example_id": "gone"}], items)
    assert pairs == [] and [e.reason for e in excluded] == ["no_output", "same_output",
                                                            "unknown_item"]
    _, excluded = pairs_from_corrections("t", [{"correction_id": "c", "example_id": "e",
                                                "corrected_output": "yes", "output": None}], items)
    assert [e.reason for e in excluded] == ["no_output"]
    _, excluded = pairs_from_failures("t", [{"run_id": "r", "example_id": "e", "model_id": "m",
                                             "reference": " ", "output": "no"}], items)
    assert [e.reason for e in excluded] == ["no_reference"]


def test_a_pair_whose_prompt_is_a_test_item_is_rejected_as_contaminated(setup, tmp_path):
    task, store = setup
    result = build_pairs(store, task, out_dir=tmp_path / "out", embedder=BagOfWords())
    assert result.counts["human"]["excluded"]["contaminated"] == 1
    kept = read_pairs(result.dataset_path)
    test_ids = {e.id for e in task.split("test")}
    assert not any(p.example_id in test_ids for p in kept)
    assert len(kept) == result.n_pairs == 1 + 1 + 1 + 3  # the test-item vote is the only leak

    # a dev row that repeats a test row word for word (real tasks have duplicate rows) leaks too
    copy = {**records(4, 300)[0]}
    path = write_task(tmp_path / "dup", {"train": records(12, 100),
                                         "dev": records(6, 200) + [copy], "test": records(4, 300)})
    dup_task = load_task(path)
    dup_item = dup_task.split("dev")[-1]
    from loop.core.pairs import PreferencePair
    from loop.targeted.pairs import decontaminate

    pair = PreferencePair("failure", dup_task.name, dup_item.id, dup_item.instruction,
                          dup_item.input, dup_item.output, "purple", "reference", "m1", "r")
    clean = PreferencePair("failure", dup_task.name, "d0", dup_task.split("dev")[0].instruction,
                           dup_task.split("dev")[0].input, "red", "purple", "reference", "m1",
                           "r")
    kept, leaked = decontaminate([pair, clean], dup_task, BagOfWords())
    assert kept == [clean] and leaked[0].reason == "contaminated"
    assert "test:" in leaked[0].detail


def test_export_is_standard_jsonl_with_a_manifest(setup, tmp_path):
    task, store = setup
    result = build_pairs(store, task, sources=["human", "failure"], out_dir=tmp_path / "out",
                         embedder=BagOfWords())
    rows = [json.loads(line) for line in open(result.dataset_path)]
    assert rows and all({"prompt", "chosen", "rejected", "source", "pair_id"} <= set(r)
                        for r in rows)
    assert {r["source"] for r in rows} == {"human", "failure"}
    assert all(r["prompt"].endswith(r["input"]) for r in rows)
    manifest = json.loads(open(result.manifest_path).read())
    assert manifest["n_pairs"] == len(rows) and manifest["manifest_hash"] == result.manifest_hash
    assert manifest["counts"]["judge"] == {"pairs": 0, "excluded": {}}  # not asked for
    again = build_pairs(store, task, sources=["human", "failure"], out_dir=tmp_path / "out",
                        embedder=BagOfWords())
    assert again.manifest_hash == result.manifest_hash  # same pairs, same files


def test_identical_pairs_are_counted_once():
    items = {"e": Example("e", "Q?", "yes")}
    rows = [{"run_id": r, "example_id": "e", "model_id": "m", "reference": "yes",
             "output": "no"} for r in ("r1", "r2")]
    pairs, excluded = pairs_from_failures("t", rows, items)
    from loop.targeted.pairs import dedupe

    kept, dups = dedupe(pairs)
    assert len(kept) == 1 and [d.reason for d in dups] == ["duplicate"]
    assert PairSet(tuple(kept), tuple(dups)).counts()["failure"] == {
        "pairs": 1, "excluded": {"duplicate": 1}}


def test_cli_pairs(setup, tmp_path, monkeypatch, capsys):
    import loop.targeted.stage
    from loop import cli

    task, store = setup
    store.close()
    monkeypatch.setattr(loop.targeted.stage, "default_embedder", lambda store: BagOfWords())
    code = cli.main(["pairs", "--task", str(task.settings.path), "--workspace",
                     str(tmp_path / "ws"), "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_pairs"] == 6 and out["counts"]["human"]["excluded"]["contaminated"] == 1
