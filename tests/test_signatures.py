"""Failure signatures by reference shape (table-driven), read with the task's answer model."""

from __future__ import annotations

import pytest

from evals.answers import AnswerModel, infer_answers
from evals.signatures import Signature, expected_parts, signatures

LABELS = frozenset({"booking", "cancel", "greet"})

CASES = [
    # (reference, prediction, categories, labels, expected signatures)
    # JSON object references
    ('{"pickup_time": "10:30"}', "Sure, I can help!", (), frozenset(), ("invalid_json",)),
    ('{"pickup_time": "10:30"}', '["pickup_time"]', (), frozenset(), ("invalid_json",)),
    ("{}", "The message has no slot.", (), frozenset(), ("invalid_json",)),
    ('{"pickup_time": "10:30"}', "{}", (), frozenset(), ("missing_key:pickup_time",)),
    ("{}", '{"pickup_city": "Paris"}', (), frozenset(), ("extra_key:pickup_city",)),
    ('{"pickup_time": "10:30", "pickup_city": "Rome"}',
     '{"pickup_time": "10:00", "dropoff_date": "May 3"}', (), frozenset(),
     ("extra_key:dropoff_date", "missing_key:pickup_city", "wrong_value:pickup_time")),
    ('{"a": 1}', '```json\n{"a": 2}\n```', (), frozenset(), ("wrong_value:a",)),
    # same object, another form (spacing): the checks' categories say what failed
    ('{"a": 1}', '{ "a" : 1 }', ("wrong_answer",), frozenset(), ("wrong_answer",)),
    # JSON list references
    ('["booking", "how_much"]', '["booking"]', (), frozenset(), ("missing_element:how_much",)),
    ('["booking"]', '["booking", "greet"]', (), frozenset(), ("extra_element:greet",)),
    ("[]", '["greet"]', (), frozenset(), ("extra_element:greet",)),
    ('["booking"]', "booking", (), frozenset(), ("invalid_json",)),
    ('[{"k": 1}]', '[{"k": 2}]', (), frozenset(), ('extra_element:{"k": 2}',
                                                      'missing_element:{"k": 1}')),
    # label references
    ("booking", "cancel", (), LABELS, ("label:booking->cancel",)),
    ("booking", " Cancel.", (), LABELS, ("label:booking->cancel",)),
    ("booking", "I think the user wants to book", (), LABELS, ("label:booking->unknown",)),
    ("booking", "Booking", ("wrong_answer",), LABELS, ("wrong_answer",)),
    # free text: the failing checks' categories, unchanged
    ("Paris is the capital.", "Lyon.", ("wrong_answer", "too_short"), frozenset(),
     ("too_short", "wrong_answer")),
    ("Paris is the capital.", "Lyon.", (), frozenset(), ("wrong_answer",)),
    ("booking", "cancel", ("wrong_answer",), frozenset(), ("wrong_answer",)),  # no label set
]


@pytest.mark.parametrize("reference, prediction, categories, labels, expected", CASES)
def test_signatures_by_reference_shape(reference, prediction, categories, labels, expected):
    answers = AnswerModel("label" if labels else "exact", labels)
    found = signatures(answers, reference, prediction, categories)
    assert tuple(str(s) for s in found) == expected
    assert all(Signature.parse(str(s)).kind == s.kind for s in found)  # the stored form reads back


def test_long_keys_are_stored_whole_and_clipped_only_for_display():
    (sig,) = signatures(AnswerModel("json"), '{"a": 1}', '{"a": 1, "' + "x" * 200 + '": 2}')
    assert sig == Signature("extra_key", "x" * 200, "", "2")
    assert str(sig) == "extra_key:" + "x" * 200 and Signature.parse(str(sig)).key == "x" * 200
    assert sig.display().startswith("extra_key:xxx") and len(sig.display()) < 60


def test_wrong_values_carry_gold_and_prediction_and_non_ascii_stays_readable():
    (sig,) = signatures(AnswerModel("json"), '{"city": "Zürich"}', 'Sure: {"city": "Zurich"}')
    assert sig == Signature("wrong_value", "city", "Zürich", "Zurich")
    sigs = signatures(AnswerModel("labels"), '["café", 1]', '["cafe", 1]')
    assert {str(s) for s in sigs} == {"missing_element:café", "extra_element:cafe"}


def test_numbers_are_signed_by_value():
    answers = AnswerModel("number")
    assert signatures(answers, "720", "It is 720.") == (Signature("wrong_answer"),)
    assert signatures(answers, "720", "about 700") == (Signature("wrong_number", "", "720.0",
                                                                "700.0"),)
    assert [s.kind for s in signatures(answers, "720", "no idea")] == ["not_a_number"]


@pytest.mark.parametrize("references, expected", [
    (["booking", "cancel", "Booking", "greet", "cancel", "greet"], {"booking", "cancel", "greet"}),
    (["positive", "negative", "positive", "neutral", "negative", "positive"],
     {"positive", "negative", "neutral"}),
    # free text: mostly distinct answers
    (["Paris", "Rome", "Berlin", "Madrid", "Lisbon", "Paris"], set()),
    (["The capital of France is Paris, a city on the Seine."] * 6, set()),  # not short
    (['{"a": 1}', "{}", "{}", "{}", '{"a": 2}', "{}"], set()),  # JSON objects
    (['["x"]', "[]", "[]", "[]"], set()),  # JSON lists
    (["yes", "yes"], set()),  # too few to tell
])
def test_label_sets_fit_only_closed_sets_of_short_answers(references, expected):
    answers = infer_answers(references)
    assert (answers.labels if answers.kind == "label" else frozenset()) == frozenset(expected)
    assert (answers.kind == "label") == bool(expected)


def test_expected_parts_name_what_the_reference_asks_for():
    assert expected_parts('{"pickup_time": "10:30", "pickup_city": "Rome"}') == (
        "pickup_city", "pickup_time")
    assert expected_parts("{}") == ("{}",)
    assert expected_parts('["b", "a", "a"]') == ("a", "b")
    assert expected_parts("[]") == ("[]",)
    assert expected_parts("booking") == ()


# ---------------------------------------------------------------------------- free text

FACTS = ("Write one sentence about the place.\nName: Blue Door\nFood: Thai\nArea: riverside\n"
         "Open late: yes")
DESCRIPTION = "Blue Door is a Thai place by the riverside."  # carries every fact but "yes"


def _text(prediction: str, reference: str = DESCRIPTION, source: str = FACTS) -> list[str]:
    return [str(s) for s in signatures(AnswerModel("text"), reference, prediction,
                                       ("wrong_answer",), source)]


def test_free_text_lengths_are_signed_against_the_reference():
    (long,) = signatures(AnswerModel("text"), "A short answer here.", " ".join(
        f"word{i}" for i in range(12)), ("wrong_answer",))
    assert long == Signature("too_long", "", "4", "12")
    assert _text("Blue Door.") == ["missing_fact:Area", "missing_fact:Food", "too_short"]
    # within twice the reference's words either way: no length signature
    assert _text("Blue Door serves Thai food on the riverside, near the old bridge.") == \
        ["wrong_answer"]


def test_facts_of_the_input_the_reference_carries_are_missing_facts():
    found = signatures(AnswerModel("text"), DESCRIPTION, "Blue Door is a place by the "
                       "riverside.", (), FACTS)
    assert found == (Signature("missing_fact", "Food", "Thai"),)
    # "Open late: yes" is a fact the reference leaves out: an answer need not say it
    assert "missing_fact:Open late" not in _text("Blue Door is a Thai place by the river.")
    # facts in running text are its numbers and names
    prose = "Summarise: Anna Berg paid 120 euros in Oslo on Monday."
    assert _text("Someone paid for something in Oslo today.", "Anna Berg paid 120 euros in "
                 "Oslo.", prose) == ["missing_fact:name", "missing_fact:number"]


def test_numbers_and_names_in_neither_input_nor_reference_are_unsupported():
    found = signatures(AnswerModel("text"), DESCRIPTION, "Blue Door is a Thai place by the "
                       "riverside, run by Marco since 1998.", (), FACTS)
    assert found == (Signature("unsupported", "name", "", "Marco"),
                     Signature("unsupported", "number", "", "1998"))
    assert [str(s) for s in found] == ["unsupported:name", "unsupported:number"]
    assert Signature.parse("unsupported:name") == Signature("unsupported", "name")


def test_repetition_is_signed_and_a_right_length_right_facts_answer_keeps_the_categories():
    loop = "Blue Door is Thai by the riverside, Blue Door is Thai by the riverside, " * 2
    assert "repetition" in _text(loop.strip(), DESCRIPTION + " " + DESCRIPTION)
    assert _text("Blue Door, a Thai place, sits by the riverside.") == ["wrong_answer"]
    # short-answer tasks keep their old signatures: the checks' categories
    assert signatures(AnswerModel("exact"), "Paris.", "Lyon.", ("wrong_answer",),
                      "Capital of France?") == (Signature("wrong_answer"),)
