"""Arena: matches from stored predictions, idempotent writes, retried errors, leaderboard, plot."""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
import pytest

from evals.arena import format_leaderboard
from evals.judges import LocalCompleter, human_matches
from loop.core.errors import ConfigError
from loop.core.records import content_hash
from loop.store.db import Store, now
from loop.data.tasks import load_task
from loop.evaluation.arena import (Entrant, build_pairs, compute_leaderboard, evaluate_entrants,
                                   judge_agreement, judge_entrants, run_arena, write_heatmap,
                                   write_matches)


class LetterEmbedder:
    """A fake embedder: unit vectors of letter counts (no model to load)."""
    name = "letters"

    def encode(self, texts):
        vectors = np.array([[t.lower().count(c) for c in string.ascii_lowercase] + [1e-3]
                            for t in texts], dtype=float)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def seed_run(store: Store, task, name: str, outputs: dict[str, tuple[str, bool]],
             suite_version: str = "v1") -> Entrant:
    """Store a model's evaluation run as `evaluate` would: predictions, run items, scores."""
    model_id, run_id = f"id-{name}", f"run-{name}"
    store.put_model(model_id, name, "fake")
    store.start_run(run_id, "eval", task.name, model_id, "test", {})
    for example_id, (output, passed) in outputs.items():
        pid = content_hash(model_id, example_id)
        store.insert("predictions", [{"prediction_id": pid, "model_id": model_id,
                                      "prompt_hash": "p", "gen_hash": "g", "prompt": "p",
                                      "output": output, "created_at": now()}])
        store.insert("run_items", [{"run_id": run_id, "example_id": example_id,
                                    "prediction_id": pid}])
        add_score(store, task, pid, example_id, passed, suite_version)
    return Entrant(name, model_id, run_id, suite_version)


def add_score(store, task, pid, example_id, passed, suite_version, check="exact_match"):
    store.insert("scores", [{"prediction_id": pid, "task_id": task.name,
                             "example_id": example_id, "suite_version": suite_version,
                             "check_name": check, "check_version": suite_version,
                             "passed": passed, "value": None, "required": True, "detail": {},
                             "created_at": now()}])


@pytest.fixture
def arena(tiny_task, workspace):
    """A store with three models on the 8 test items: always right, always wrong, half right."""
    task = load_task(tiny_task)
    tests = task.split("test")
    with Store(workspace) as store:
        good = seed_run(store, task, "good", {e.id: (e.output, True) for e in tests})
        bad = seed_run(store, task, "bad", {e.id: ("purple", False) for e in tests})
        half = seed_run(store, task, "half", {e.id: (e.output, True) if k % 2 else
                                              ("purple", False) for k, e in enumerate(tests)})
        yield store, task, good, bad, half


def test_reference_matches_are_written_once_and_rate_the_better_model_higher(arena):
    store, task, good, bad, half = arena
    matches = judge_entrants(store, task, [bad, good], embedder=LetterEmbedder())
    assert len(matches) == 8 and {m.verdict for m in matches} == {"B"}  # good is model_b
    assert {m.model_a for m in matches} == {bad.model_id}
    assert write_matches(store, matches) == 8
    assert judge_entrants(store, task, [good, bad], embedder=LetterEmbedder()) == []  # done
    assert write_matches(store, matches) == 0 and store.count("matches") == 8

    write_matches(store, judge_entrants(store, task, [good, bad, half],
                                        embedder=LetterEmbedder()))
    assert store.count("matches") == 8 * 3
    board = compute_leaderboard(store, task.name, seed=3, save=True)
    assert [r["model"] for r in board] == ["good", "half", "bad"]
    assert board[0]["lower"] > board[2]["upper"] and board[0]["win_rate"] > 0.7
    (snap,) = store.query("SELECT * FROM rating_snapshots")
    assert (snap["n"], snap["seed"], snap["judge"], snap["task_id"]) == (24, 3, "all", "tiny")
    anchored = compute_leaderboard(store, task.name, anchor="half")
    assert [r["rating"] for r in anchored if r["model"] == "half"] == [pytest.approx(1000)]


def test_only_the_first_n_shared_items_and_the_runs_suite_version_count(arena):
    store, task, good, bad, _ = arena
    first = min(e.id for e in task.split("test"))
    # an old suite version failed `good` on this item; the run's version (v1) passed it
    add_score(store, task, content_hash(good.model_id, first), first, False, "v0", "old_check")
    pairs = build_pairs(store, task, good, bad, 3, LetterEmbedder())
    assert [p.example_id for p in pairs] == sorted(e.id for e in task.split("test"))[:3]
    assert all(p.passed_a and not p.passed_b for p in pairs)
    assert pairs[0].similarity_a == pytest.approx(1.0) and pairs[0].similarity_b < 0.9


def test_llm_errors_are_stored_as_errors_then_judged_again(arena):
    store, task, good, bad, _ = arena
    def rambling(prompts):
        return ["Both have merit."] * len(prompts)

    matches = judge_entrants(store, task, [good, bad], "llm", completer=rambling,
                             embedder=LetterEmbedder())
    assert {m.verdict for m in matches} == {None} and all("unparseable" in m.error
                                                          for m in matches)
    assert write_matches(store, matches) == 8
    assert compute_leaderboard(store, task.name) == []  # errors are never wins

    def knows_colours(prompts):  # answer 1 wins when it equals the reference
        return ["[[1]]" if p.split("[Reference answer]\n")[1].split("\n")[0]
                == p.split("[Answer 1]\n")[1].split("\n")[0] else "[[2]]" for p in prompts]

    retried = judge_entrants(store, task, [good, bad], "llm", completer=knows_colours,
                             embedder=LetterEmbedder())
    assert len(retried) == 8 and {m.verdict for m in retried} == {"A"}
    assert write_matches(store, retried) == 0  # same ids, errors replaced
    rows = store.query("SELECT verdict, error, shown_first FROM matches")
    assert {(r["verdict"], r["error"], r["shown_first"]) for r in rows} == {("A", None, None)}

    def must_not_be_called(prompts):
        raise AssertionError("judged again")

    assert judge_entrants(store, task, [good, bad], "llm", completer=must_not_be_called,
                          embedder=LetterEmbedder()) == []
    with pytest.raises(ConfigError, match="judge model"):
        judge_entrants(store, task, [good, bad], "llm", embedder=LetterEmbedder())


def test_agreement_with_human_votes_on_shared_pairs(arena, workspace):
    store, task, good, bad, _ = arena
    write_matches(store, judge_entrants(store, task, [good, bad], embedder=LetterEmbedder()))
    ids = sorted(e.id for e in task.split("test"))
    votes = [  # the reference judge said "good" (model_a) on every item
        {"task_id": "tiny", "example_id": ids[0], "model_a": good.model_id,
         "model_b": bad.model_id, "verdict": "A", "voter": "ana"},
        {"task_id": "tiny", "example_id": ids[1], "model_a": bad.model_id,
         "model_b": good.model_id, "verdict": "B", "voter": "ana"},  # same, other orientation
        {"task_id": "tiny", "example_id": ids[2], "model_a": good.model_id,
         "model_b": bad.model_id, "verdict": "tie", "voter": "ana"},
        {"task_id": "tiny", "example_id": ids[3], "model_a": bad.model_id,
         "model_b": good.model_id, "verdict": "A", "voter": "ana"}]
    assert write_matches(store, human_matches(votes)) == 4
    assert judge_agreement(store, "tiny") == {"reference": {"agreement": 0.5, "shared": 4}}
    human = compute_leaderboard(store, "tiny", judge="human")
    assert {r["n_matches"] for r in human} == {4}


def test_heatmap_png_and_the_text_table(arena, tmp_path):
    store, task, good, bad, half = arena
    assert write_heatmap(store, task.name, tmp_path / "empty.png") is None
    write_matches(store, judge_entrants(store, task, [good, bad, half],
                                        embedder=LetterEmbedder()))
    path = write_heatmap(store, task.name, tmp_path / "plots" / "winrates.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    text = format_leaderboard(compute_leaderboard(store, task.name))
    lines = text.splitlines()
    assert "95% interval" in lines[0] and "win%" in lines[0] and len(lines) == 4
    # good vs half: identical right answers on half the items are ties
    assert lines[1].split()[:2] == ["1", "good"] and "12/0/4" in lines[1]


def test_an_arena_needs_two_different_models(arena):
    store, task, *_ = arena
    with pytest.raises(ConfigError, match="same model"):
        evaluate_entrants(store, task, ["tiny-random", "tiny-random"])
    with pytest.raises(ConfigError, match="at least two"):
        evaluate_entrants(store, task, ["tiny-random"])
    assert store.count("runs") == 3  # refused before evaluating anything


def random_adapter(directory: Path) -> Path:
    """A LoRA adapter with random (non-zero) weights on the tiny model: a different version."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from loop.models.loading import tiny_random_checkpoint

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_random_checkpoint())
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(directory)
    return directory


def test_run_arena_on_the_tiny_model_with_a_tiny_llm_judge(tiny_task, workspace, tmp_path):
    """The real path: evaluate both versions, judge with a local model that cannot answer in
    the verdict format (errors, no ratings), then with the reference judge (ratings, plot)."""
    task = load_task(tiny_task)
    models = ["tiny-random", f"tiny-random+{random_adapter(tmp_path / 'adapter')}"]
    with Store(workspace) as store:
        llm = run_arena(store, task, models, "llm", completer=LocalCompleter("tiny-random"),
                        plot_dir=workspace, progress=False)
        assert llm["judged"] == llm["errors"] == 8 and llm["leaderboard"] == []
        ref = run_arena(store, task, models, "reference", plot_dir=workspace, progress=False)
        assert ref["new_matches"] == 8 and ref["errors"] == 0
        assert sorted(ref["ratings"]) == sorted(models)
        assert {r["n_matches"] for r in ref["leaderboard"]} == {8}
        assert store.count("matches") == 16 and store.count("rating_snapshots") == 1
        assert {r["judged_by"] for r in store.query(
            "SELECT detail->>'judged_by' AS judged_by FROM matches WHERE judge = 'llm'")} == {
            "tiny-random"}
    assert Path(ref["plot"]).is_file()


def test_the_scoring_side_pairs_judges_and_rates_without_a_store():
    """evals.arena on plain records: no store, no evaluation stage."""
    from evals import arena as pairwise
    from loop.core.records import Example

    examples = {f"e{i}": Example(f"e{i}", "colour?", colour, split="test")
                for i, colour in enumerate(["red", "blue", "green"])}
    right = {k: {"output": e.output, "passed": True} for k, e in examples.items()}
    wrong = {k: {"output": "purple", "passed": False} for k in list(examples)[:2]}
    pairs = pairwise.pair_items(examples, right, wrong, None, LetterEmbedder())
    assert [p.example_id for p in pairs] == ["e0", "e1"]  # only items both answered
    blank = pairwise.pending_matches("t", "right", "wrong", pairs, "reference")
    matches = pairwise.judge_pairs(blank, pairs)
    assert [m.verdict for m in matches] == ["A", "A"]
    assert [m.match_id for m in matches] == [m.match_id for m in blank]
    rows = [m.row(now()) for m in matches]
    board = pairwise.leaderboard(pairwise.match_outcomes(rows), {"right": "R"}, n_boot=20)
    assert [(r["model"], r["wins"]) for r in board] == [("R", 2), ("wrong", 0)]
    assert pairwise.judge_agreement(rows) == {"reference": {"agreement": None, "shared": 0}}
