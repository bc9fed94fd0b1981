"""Table-driven tests: for each check, cases that must pass and cases that must fail."""

from __future__ import annotations

import pytest

from evals.answers import parse_json
from evals.rules import REGISTRY, CheckInput, get_check
from loop.core.errors import ConfigError


def item(output: str, reference: str = "", input: str = "", instruction: str = "Answer.",
         samples: tuple[str, ...] = ()) -> CheckInput:
    return CheckInput(instruction, input, reference, output, samples)


CASES = [
    # (check, params, item, expected verdict)
    ("exact_match", {}, item("Paris", "Paris"), True),
    ("exact_match", {}, item("  paris. ", "Paris"), True),
    ("exact_match", {}, item("PARIS!", "paris"), True),
    ("exact_match", {}, item("The capital is Paris.", "Paris"), False),
    ("exact_match", {}, item("Lyon", "Paris"), False),
    ("json_equal", {}, item('{"a": 1, "b": "x"}', '{"b": "x", "a": 1}'), True),
    ("json_equal", {}, item('```json\n{"a": 1}\n```', '{"a": 1}'), True),
    ("json_equal", {}, item('Here you go: {"a": 1} hope it helps', '{"a": 1}'), True),
    ("json_equal", {}, item('{"a": "1"}', '{"a": 1}'), False),
    ("json_equal", {}, item("a is one", '{"a": 1}'), False),
    ("number_equal", {}, item("It is 1,200.", "1200"), True),
    ("number_equal", {"tolerance": 0.5}, item("719.6", "720"), True),
    ("number_equal", {}, item("between 700 and 720", "720"), False),
    ("contains", {}, item("I think it is Paris, France", "paris"), True),
    ("contains", {"text": "refund"}, item("We will send a refund.", ""), True),
    ("contains", {"text": "refund"}, item("We cannot help.", ""), False),
    ("not_contains", {}, item("Paris", ""), True),
    ("not_contains", {}, item("As an AI language model, I think Paris", ""), False),
    ("not_contains", {}, item("Paris<|im_end|>", ""), False),
    ("not_contains", {"phrases": ["sorry"]}, item("Sorry, no.", ""), False),
    ("regex", {"pattern": r"\d{4}-\d{2}-\d{2}"}, item("2021-03-05"), True),
    ("regex", {"pattern": r"\d{4}-\d{2}-\d{2}"}, item("March 5, 2021"), False),
    ("regex", {"pattern": r"\d+", "full": False}, item("it is 42"), True),
    ("json_valid", {}, item('{"x": [1, 2]}'), True),
    ("json_valid", {"required_keys": ["name"]}, item('{"name": "A"}'), True),
    ("json_valid", {"required_keys": ["name"]}, item('{"nom": "A"}'), False),
    ("json_valid", {}, item("no json here"), False),
    ("too_long", {}, item("Paris", "Paris"), True),
    ("too_long", {}, item(" ".join(["word"] * 30), "Paris"), False),
    ("too_long", {"max_words": 3}, item("one two three four", ""), False),
    ("repetition", {}, item("The capital of France is Paris, a city on the Seine."), True),
    ("repetition", {}, item("I am sure I am sure I am sure I am sure I am sure"), False),
    ("misspelling", {}, item("the answer is definitely correct"), True),
    ("misspelling", {}, item("the answr is definately corect"), False),
    ("misspelling", {}, item("Zorblax wants the frobnicated widget", "frobnicated",
                             input="zorblax"), True),
    ("hallucination", {}, item("Maria is 34.", input="Maria Lopez is 34 years old."), True),
    ("hallucination", {}, item("Maria Lopez lives in Berlin and is 35.",
                               input="Maria Lopez is 34 years old."), False),
    ("hallucination", {}, item("5000", "5000", instruction="Convert 5 km to meters."), True),
    ("consistency", {}, item("positive", samples=("positive", "Positive.", "positive")), True),
    ("consistency", {}, item("positive", samples=("negative", "negative", "positive")), False),
    ("consistency", {}, item("positive"), True),
]


@pytest.mark.parametrize("name, params, case, expected", CASES,
                         ids=[f"{c[0]}-{k}" for k, c in enumerate(CASES)])
def test_check_verdicts(name, params, case, expected):
    (result,) = get_check(name).fn([case], **params)
    assert result.passed is expected, result
    assert result.check == name and result.version == REGISTRY[name].version


def test_every_registered_check_has_pass_and_fail_cases():
    covered = {(name, expected) for name, _, _, expected in CASES}
    for name in REGISTRY:
        assert (name, True) in covered and (name, False) in covered, name


def test_json_equal_reports_key_precision_and_recall():
    (result,) = get_check("json_equal").fn([item('{"a": 1, "b": 2, "c": 3}', '{"a": 1, "b": 9}')])
    assert not result.passed
    assert result.detail["precision"] == pytest.approx(1 / 3)
    assert result.detail["recall"] == pytest.approx(1 / 2)


def test_reply_json_prefers_fenced_block():
    assert parse_json('x {"a": 1} ```json\n{"b": 2}\n```') == {"b": 2}
    assert parse_json("nothing") is None
    assert parse_json('x {"a": 1}', strict=True) is None  # references: the whole text only
    assert parse_json('```json\n{"a": 1}\n```', strict=True) == {"a": 1}


def test_number_equal_reads_one_number():
    results = get_check("number_equal").fn([item("It is 720.", "720"), item("7 or 720", "720"),
                                             item("1200", "1,200"), item("700", "720")])
    assert [r.passed for r in results] == [True, False, True, False]


def test_unknown_check_suggests_the_closest_name():
    with pytest.raises(ConfigError, match="Did you mean 'exact_match'"):
        get_check("exact_mach")
