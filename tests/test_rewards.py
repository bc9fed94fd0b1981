"""Rewards from the suite (evals/rewards.py): table-driven partial credit per answer kind, the
penalties, evaluation's JSON cut, and the held-out guard (no dev/test item reaches the reward)."""

from __future__ import annotations

import pytest

from evals.rewards import (PARTIAL_WEIGHT, PASS_WEIGHT, PENALTY, HeldOutLeak, SuiteReward,
                           answer_kind, partial_credit)
from evals.suites import DEFAULT_SUITE, Suite, SuiteCheck
from loop.core.records import Example

LABELS = frozenset({"red", "green", "blue"})
OBJ = '{"city": "Paris", "date": "May 3", "time": "10:00"}'


@pytest.mark.parametrize("reference, output, kind, credit", [
    # JSON object: per-key F1, a key counts when its value is right
    (OBJ, OBJ, "object", 1.0),
    (OBJ, '{"city": "Paris", "date": "May 3"}', "object", 0.8),           # p 1, r 2/3
    (OBJ, '{"city": "Paris", "date": "May 4", "time": "10:00"}', "object", 2 / 3),
    (OBJ, '{"city": "Paris", "date": "May 3", "time": "10:00", "x": 1}', "object", 6 / 7),
    (OBJ, "Paris on May 3", "object", 0.0),                                # no JSON
    (OBJ, '["Paris"]', "object", 0.0),                                     # wrong shape
    ("{}", "{}", "object", 1.0),
    ("{}", '{"city": "Paris"}', "object", 0.0),
    (OBJ, 'Sure: {"city": "Paris"} done', "object", 0.5),                  # prose around JSON
    # JSON list: element F1
    ('["a", "b"]', '["b", "a"]', "list", 1.0),
    ('["a", "b"]', '["a"]', "list", 2 / 3),
    ('["a", "b"]', '["a", "c"]', "list", 0.5),
    ('["a"]', '{"a": 1}', "list", 0.0),
    ("[]", "[]", "list", 1.0),
    # label: the right one or nothing
    ("green", "Green.", "label", 1.0),
    ("green", "red", "label", 0.0),
    ("green", "I think green", "label", 0.0),
    # text: a character-level ratio without a similarity check
    ("the cat sat", "the cat sat", "text", 1.0),
    ("the cat sat", "zzz", "text", 0.0),
])
def test_partial_credit_per_answer_kind(reference, output, kind, credit):
    assert answer_kind(reference, LABELS) == kind
    assert partial_credit(kind, reference, output) == pytest.approx(credit, abs=1e-6)


def test_text_credit_is_the_similarity_when_given():
    assert partial_credit("text", "a b", "c d", similarity=0.7) == pytest.approx(0.7)
    assert partial_credit("text", "a b", "c d", similarity=-0.2) == 0.0
    assert 0.0 < partial_credit("text", "the cat sat", "the cat sits") < 1.0


def pool(n: int = 6) -> list[Example]:
    colours = ["red", "green", "blue"]
    return [Example(f"p{i}", "Name the colour.", colours[i % 3], f"Item {i} is {colours[i % 3]}.",
                    split="train") for i in range(n)]


@pytest.mark.parametrize("output, passed, penalties", [
    ("red", True, ()),
    ("green", False, ()),
    ("red " * 30, False, ("repetition", "too_long")),
])
def test_total_is_pass_plus_partial_minus_penalties(output, passed, penalties):
    reward = SuiteReward(DEFAULT_SUITE, pool())
    parts = reward.score(pool()[0], output)
    assert parts.kind == "label" and parts.passed is passed
    assert sorted(parts.penalties) == sorted(penalties)
    assert parts.total == pytest.approx(PASS_WEIGHT * passed + PARTIAL_WEIGHT * parts.partial
                                        - PENALTY * len(penalties))


def test_rewards_order_answers_by_closeness():
    rows = [Example("j1", "Extract.", OBJ, "msg", split="train")]
    reward = SuiteReward(DEFAULT_SUITE, rows)
    outputs = [OBJ, '{"city": "Paris", "date": "May 3"}',
               '{"city": "Paris", "time": "11:00"}', "no idea"]
    totals = reward(completions=outputs, item_id=["j1"] * 4)
    assert totals[0] == 1.0 and totals == sorted(totals, reverse=True) and totals[-1] == 0.0
    assert len(set(totals)) == 4  # partial credit separates every near-miss


def test_completions_are_read_as_evaluation_cuts_them():
    rows = [Example("j1", "Extract.", OBJ, "msg", split="train")]
    trailing = OBJ + ' {"junk": 1} and more'
    cut = SuiteReward(DEFAULT_SUITE, rows, stop_at_json=True)
    assert cut(completions=[trailing], item_id=["j1"]) == [1.0]
    chat = [[{"role": "assistant", "content": OBJ}]]  # conversational completions
    assert cut(completions=chat, item_id=["j1"]) == [1.0]


def test_a_similarity_suite_needs_and_uses_the_similarity_function():
    suite = Suite("s1", (SuiteCheck("similarity", required=True, params={"threshold": 0.8}),))
    rows = [Example("t1", "Describe.", "A cosy cafe by the river.", "facts", split="train")]
    with pytest.raises(ValueError, match="similarity"):
        SuiteReward(suite, rows)
    reward = SuiteReward(suite, rows, similarity=lambda outs, refs: [0.9] * len(outs))
    parts = reward.score(rows[0], "Some other words entirely")
    assert parts.passed and parts.partial == pytest.approx(0.9)


def test_no_dev_or_test_item_reaches_the_reward():
    train = pool()
    test_item = Example("t0", "Name the colour.", "red", "Item 0 is red.", split="test")
    # the same prompt under another id is still the held-out item
    with pytest.raises(HeldOutLeak, match="train pool only"):
        SuiteReward(DEFAULT_SUITE, train, held_out=[test_item])
    dev_item = Example("p1", "x", "y", split="dev")  # the same id
    with pytest.raises(HeldOutLeak):
        SuiteReward(DEFAULT_SUITE, train, held_out=[dev_item])
    reward = SuiteReward(DEFAULT_SUITE, train[2:], held_out=[test_item, dev_item])
    with pytest.raises(HeldOutLeak):  # an id the reward was not built with
        reward(completions=["red"], item_id=["t0"])
    with pytest.raises(HeldOutLeak):  # a look-alike row with the pool id but other content
        reward.score(Example("p2", "Name the colour.", "red", "changed"), "red")
