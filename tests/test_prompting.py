"""Few-shot prompts and prompt variants: shots come from the train pool only (seeded, or the
nearest rows), render as earlier chat turns, are stored per item and reused on rerun."""

from __future__ import annotations

import json
import re
import zlib

import numpy as np
import pytest

from conftest import classification_records, write_task
from loop.cli import main
from loop.core.errors import ConfigError, TaskDataError
from loop.core.prompts import build_prompt
from loop.core.records import Example
from loop.data.tasks import load_task
from loop.evaluation.prompting import (PromptSetting, choose_shots, nearest_shots,
                                       render_prompts, resolve_prompt, shot_pool)
from loop.store.db import Store
from loop.store.runs import run_shots


def _task_with_a_leak(tmp_path, extra: str = ""):
    """A pool that also holds a copy of a test item's question and of a dev item."""
    test, dev = classification_records(6), classification_records(4, offset=200)
    train = classification_records(30, offset=100)
    leak_test = {**test[2], "output": "purple"}  # same question as a test item, other answer
    leak_dev = dict(dev[1])
    return load_task(write_task(tmp_path / "leaky", {"train": train + [leak_test, leak_dev],
                                                     "dev": dev, "test": test}, extra))


def test_random_shots_are_seeded_shared_and_never_dev_or_test(tmp_path):
    task = _task_with_a_leak(tmp_path)
    held_out_ids = {e.id for s in ("dev", "test") for e in task.splits[s]}
    held_out_questions = {(e.instruction, e.input) for s in ("dev", "test")
                          for e in task.splits[s]}
    pool = shot_pool(task)
    assert len(pool) == 30  # both leaked rows left out
    items = task.splits["test"]
    first = choose_shots(task, items, PromptSetting(shots=4, seed=0))
    assert first == choose_shots(task, items, PromptSetting(shots=4, seed=0))
    assert first != choose_shots(task, items, PromptSetting(shots=4, seed=1))
    assert len(set(first)) == 1 and len(first[0]) == 4  # one shared set: one shared prefix
    for seed in range(50):
        for shots in choose_shots(task, items, PromptSetting(shots=8, seed=seed)):
            assert all(s.split == "train" and s.id not in held_out_ids for s in shots)
            assert not {(s.instruction, s.input) for s in shots} & held_out_questions


def test_an_item_is_never_its_own_shot(tmp_path):
    task = _task_with_a_leak(tmp_path)
    pool = shot_pool(task)
    first_four = choose_shots(task, pool[:1], PromptSetting(shots=4, seed=3))[0]
    shots = choose_shots(task, first_four, PromptSetting(shots=4, seed=3))
    for item, item_shots in zip(first_four, shots):
        assert item not in item_shots and len(item_shots) == 4
    nearest = nearest_shots(pool, pool[:5], 3, _bag_of_words, lambda t: t)
    assert all(item not in s for item, s in zip(pool[:5], nearest))


def _bag_of_words(texts):
    """A deterministic stand-in for the sentence embedder: hashed word counts."""
    vecs = np.zeros((len(texts), 256), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in re.findall(r"\w+", text.lower()):
            vecs[row, zlib.crc32(word.encode()) % 256] += 1
    return vecs


def test_nearest_selection_puts_a_planted_near_neighbour_last(tmp_path):
    instruction = "Name the animal the message is about. One word."
    topics = ["the weather was cold and grey", "my train left late again today",
              "we painted the kitchen wall", "the market sells fresh bread",
              "our team won the final match", "the printer ran out of paper"]
    train = [{"instruction": instruction, "input": f"{t} ({i})", "output": "none"}
             for i, t in enumerate(topics * 3)]
    train.append({"instruction": instruction, "output": "owl",
                  "input": "a small brown owl hooted in the barn at midnight"})
    test = [{"instruction": instruction, "output": "owl",
             "input": "a brown owl hooted loudly in the old barn"}]
    task = load_task(write_task(tmp_path / "near", {"train": train, "test": test}))
    setting = PromptSetting(shots=3, selection="nearest")
    with pytest.raises(ConfigError, match="embedder"):
        choose_shots(task, task.splits["test"], setting)
    shots = choose_shots(task, task.splits["test"], setting, _bag_of_words)[0]
    assert shots[-1].output == "owl" and len(shots) == 3  # the nearest sits next to the item
    assert all(s.split == "train" for s in shots)


def test_shots_render_through_the_chat_template_as_earlier_turns():
    from loop.models.loading import load_tokenizer, parse_model_name

    tok = load_tokenizer(parse_model_name("tiny-random"))
    shots = [Example("s1", "Colour?", "red", "a red car"), Example("s2", "Colour?", "blue")]
    item = Example("q", "Colour?", "green", "a green door")
    prompt = build_prompt(tok, item, "Be brief.", shots)
    expected = tok.apply_chat_template([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Colour?\n\na red car"}, {"role": "assistant", "content": "red"},
        {"role": "user", "content": "Colour?"}, {"role": "assistant", "content": "blue"},
        # the instruction was said in the turn before: the item's turn is its input alone
        {"role": "user", "content": "a green door"}],
        tokenize=False, add_generation_prompt=True)
    assert prompt == expected
    assert prompt.index("a red car") < prompt.index("red<|im_end|>") < prompt.index("a green door")
    assert "green" not in prompt.replace("a green door", "")  # the item's answer is not shown
    assert build_prompt(tok, item, "Be brief.") == build_prompt(tok, item, "Be brief.", ())
    # one long instruction shared by every shot is said once, not once per shot
    many = [Example(f"m{i}", "Pick a colour from: " + "red, " * 50, "red", f"car {i}")
            for i in range(4)]
    once = build_prompt(tok, item, None, many)
    assert once.count("Pick a colour from") == 1 and once.index("car 3") < once.index("a green")


def test_without_a_chat_template_shots_are_answered_alpaca_blocks():
    class Plain:
        chat_template = None

    shots = [Example("s1", "Colour?", "red", "a red car")]
    prompt = build_prompt(Plain(), Example("q", "Colour?", "green", "a green door"), None, shots)
    assert prompt == ("### Instruction:\nColour?\n\n### Input:\na red car\n\n### Response:\nred"
                      "\n\n### Input:\na green door\n\n### Response:\n")
    other = build_prompt(Plain(), Example("q", "Shape?", "round", "a wheel"), None, shots)
    assert other.count("### Instruction:") == 2  # a new instruction is said again


PROMPTS_TOML = """
[[prompts]]
name = "strict"
system_prompt = "Answer with one lowercase word."
instruction = "{instruction} No punctuation."
shots = 2

[[prompts]]
name = "plain"
"""


def test_prompt_variants_resolve_reword_and_are_checked(tmp_path):
    from loop.models.loading import load_tokenizer, parse_model_name

    task = _task_with_a_leak(tmp_path, PROMPTS_TOML)
    strict = resolve_prompt(task, "strict")
    assert (strict.shots, strict.selection, strict.label) == (2, "random",
                                                              "strict: 2-shot random (seed 0)")
    assert resolve_prompt(task, "strict", shots=0).label == "strict: zero-shot"
    assert resolve_prompt(task).is_default and resolve_prompt(task, "plain").shots == 0
    with pytest.raises(ConfigError, match="did you mean 'strict'"):
        resolve_prompt(task, "strikt")
    with pytest.raises(TaskDataError, match="pool rows"):
        resolve_prompt(task, shots=30)  # 30 usable pool rows, one is kept spare
    items = task.splits["test"][:2]
    tok = load_tokenizer(parse_model_name("tiny-random"))
    prompts = render_prompts(tok, task, items, strict, choose_shots(task, items, strict))
    assert all("Answer with one lowercase word." in p for p in prompts)
    # the reworded instruction is in the first shot once: the other shot and the item share it
    assert all(p.count("No punctuation.") == 1 for p in prompts)
    problem = tmp_path / "dup"
    with pytest.raises(ConfigError, match="prompt names must be unique: plain"):
        load_task(write_task(problem, {"test": classification_records(2)},
                             '[[prompts]]\nname = "plain"\n[[prompts]]\nname = "plain"\n'))


def test_eval_with_shots_stores_the_rows_shown_and_is_reused(tiny_task, workspace, capsys):
    args = ["eval", "--task", str(tiny_task), "--model", "tiny-random", "--workspace",
            str(workspace), "--json"]
    assert main(args) == 0
    zero = json.loads(capsys.readouterr().out)
    assert main([*args, "--shots", "4"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["prompt"] == "4-shot random (seed 0)" and first["generated"] == 8
    assert first["run_id"] != zero["run_id"]
    task = load_task(tiny_task)
    train_ids = {e.id for e in task.splits["train"]}
    with Store(workspace) as store:
        shown = run_shots(store, first["run_id"])
        assert run_shots(store, zero["run_id"]) == {}
        params = store.query("SELECT params FROM runs WHERE run_id = ?", [first["run_id"]])
        prompts = store.query("SELECT p.prompt FROM run_items ri JOIN predictions p "
                              "USING (prediction_id) WHERE ri.run_id = ?", [first["run_id"]])
    assert set(shown) == {e.id for e in task.splits["test"]}
    assert all(len(ids) == 4 and set(ids) <= train_ids for ids in shown.values())
    assert len({tuple(ids) for ids in shown.values()}) == 1  # random: the same for every item
    assert json.loads(params[0]["params"])["prompt"]["shots"] == 4
    by_id = {e.id: e for e in task.splits["train"]}
    assert all(by_id[i].input in p["prompt"] for i in next(iter(shown.values()))
               for p in prompts)
    assert main([*args, "--shots", "4"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["run_id"], again["generated"], again["reused"]) == (first["run_id"], 0, 8)
    assert main([*args, "--shots", "4", "--shot-selection", "random"]) == 0
    assert json.loads(capsys.readouterr().out)["generated"] == 0


def test_eval_refuses_an_unknown_prompt_before_the_store(tiny_task, workspace, capsys):
    assert main(["eval", "--task", str(tiny_task), "--model", "tiny-random", "--workspace",
                 str(workspace), "--prompt", "nope"]) == 2
    assert "has no prompt named 'nope'" in capsys.readouterr().err
    assert not workspace.exists()


def test_prompt_variants_are_rated_in_the_arena_like_models(tmp_path, workspace, capsys):
    toml = write_task(tmp_path / "arena", {"train": classification_records(20, offset=100),
                                           "test": classification_records(6)},
                      "[generation]\nmax_new_tokens = 4\nbatch_size = 4\n" + PROMPTS_TOML)
    base = ["arena", "--task", str(toml), "--workspace", str(workspace), "--json",
            "--models", "tiny-random"]
    assert main([*base, "--prompts", "default", "strikt"]) == 2
    assert "did you mean 'strict'" in capsys.readouterr().err and not workspace.exists()
    assert main([*base, "--prompts", "default", "plain"]) == 2  # the same prompt twice
    assert "same model and prompt" in capsys.readouterr().err
    assert main([*base, "--prompts", "default", "strict"]) == 0
    result = json.loads(capsys.readouterr().out)
    board = {r["model"]: r for r in result["leaderboard"]}
    assert set(board) == {"tiny-random", "tiny-random@strict"} and result["judged"] == 6
    assert all(r["lower"] <= r["rating"] <= r["upper"] for r in board.values())
    with Store(workspace) as store:
        row = store.query("SELECT parent_id, meta FROM models WHERE name = ?",
                          ["tiny-random@strict"])[0]
        runs = store.query("SELECT params FROM runs WHERE kind = 'eval'")
    assert json.loads(row["meta"])["prompt"]["shots"] == 2
    assert row["parent_id"] == board["tiny-random"]["model_id"]
    assert sorted("prompt" in json.loads(r["params"]) for r in runs) == [False, True]
    assert main([*base, "--prompts", "default", "strict"]) == 0  # nothing judged twice
    assert json.loads(capsys.readouterr().out)["new_matches"] == 0


def _dev_summary(passed: list[bool]):
    from loop.evaluation.evaluate import EvalSummary

    return EvalSummary("r", "t", "m", "m1", "dev", len(passed), len(passed), 0,
                       sum(passed) / len(passed), {"a": {"n": len(passed),
                                                         "pass_rate": sum(passed) / len(passed)}},
                       {}, 0.0, {}, 0, "1", {f"d{i}": p for i, p in enumerate(passed)})


@pytest.mark.parametrize("k_shot, candidate, matches, phrase", [
    ([True] * 18 + [False] * 22, [True] * 20 + [False] * 20, True,
     "a fine-tune is not needed for this"),
    ([True] * 2 + [False] * 38, [True] * 30 + [False] * 10, False, "the candidate beats"),
    ([False] * 40, [False] * 40, False, "neither 4-shot prompting nor the candidate"),
])
def test_the_prompt_arm_says_when_prompting_matches_the_candidate(k_shot, candidate, matches,
                                                                  phrase):
    from loop.cycle.results import PromptArmResult

    arm = PromptArmResult.compare(_dev_summary([False] * 40), _dev_summary(k_shot),
                                  _dev_summary(candidate), 4, "random", 0.05)
    assert arm.prompting_matches is matches and phrase in arm.note
    assert arm.n == 40 and arm.interval[0] <= arm.difference <= arm.interval[1]
    assert arm.per_category["a"] == {"n": 40, "zero_shot": 0.0, "k_shot": sum(k_shot) / 40,
                                     "candidate": sum(candidate) / 40}
    assert PromptArmResult.from_json(json.loads(json.dumps(arm.to_json()))) == arm
