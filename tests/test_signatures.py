"""Failure signatures by reference shape (table-driven) and the label-set fit."""

from __future__ import annotations

import pytest

from evals.signatures import expected_parts, known_labels, signatures

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
    assert signatures(reference, prediction, categories, labels) == expected


def test_long_keys_and_elements_are_clipped():
    (sig,) = signatures('{"a": 1}', '{"a": 1, "' + "x" * 200 + '": 2}')
    assert sig.startswith("extra_key:xxx") and len(sig) < 60


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
def test_known_labels_fit_only_closed_sets_of_short_answers(references, expected):
    assert known_labels(references) == frozenset(expected)


def test_expected_parts_name_what_the_reference_asks_for():
    assert expected_parts('{"pickup_time": "10:30", "pickup_city": "Rome"}') == (
        "pickup_city", "pickup_time")
    assert expected_parts("{}") == ("{}",)
    assert expected_parts('["b", "a", "a"]') == ("a", "b")
    assert expected_parts("[]") == ("[]",)
    assert expected_parts("booking") == ()
