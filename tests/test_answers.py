"""The answer model (evals/answers.py): one reading of a reply for the check, the signature and
the answer class; the kind and label set inferred once per task, or set in the task TOML."""

from __future__ import annotations

import numpy as np
import pytest

from evals.answers import (KINDS, AnswerModel, infer_answers, parse_json, similarity_threshold)
from evals.rules import CheckInput
from evals.signatures import signatures
from evals.suites import default_suite, score_suite
from loop.core.errors import ConfigError
from loop.core.settings import AnswerKind
from loop.data.tasks import load_task
from loop.targeted.answer_classes import answer_classes
from tests.conftest import write_task

OBJECT = '{"city": "Zürich", "nights": 2}'
LABELS = frozenset({"book_hotel", "café_order", "cancel"})

# (kind, reference, reply, passes): plain, fenced, prefixed with text, non-ASCII, trailing text
CASES = [
    ("json", OBJECT, '{"nights": 2, "city": "Zürich"}', True),
    ("json", OBJECT, '```json\n{"city": "Zürich", "nights": 2}\n```', True),
    ("json", OBJECT, 'Sure: {"city": "Zürich", "nights": 2}', True),
    ("json", OBJECT, '{"city": "Zurich", "nights": 2}', False),  # the ASCII spelling is wrong
    ("json", OBJECT, '{"city": "Zürich", "nights": 2} Hope this helps!', True),
    ("json", OBJECT, 'Sure: {"city": "Zürich"}', False),
    ("json", OBJECT, '{"city": "Zürich", "nights": "2"}', False),  # a string is not the number
    ("json", OBJECT, "Zürich, two nights", False),
    ("labels", '["book_hotel", "café_order"]', '["café_order", "book_hotel"]', True),
    ("labels", '["book_hotel", "café_order"]', '```\n["book_hotel", "café_order"]\n```', True),
    ("labels", '["book_hotel", "café_order"]', 'Intents: ["book_hotel"]', False),
    ("labels", '["book_hotel"]', '["book_hotel"] because the user books', True),
    ("labels", '["book_hotel"]', "book_hotel", False),
    ("label", "book_hotel", "book_hotel", True),
    ("label", "book_hotel", "```\nbook_hotel\n```", True),
    ("label", "book_hotel", "Intent: book_hotel", False),
    ("label", "café_order", "Café_Order.", True),
    ("label", "book_hotel", "book_hotel, because the user wants a room", False),
    ("label", "book_hotel", "cancel", False),
]


@pytest.mark.parametrize("kind, reference, reply, passes", CASES)
def test_check_signature_and_answer_class_agree_on_a_reply(kind, reference, reply, passes):
    answers = AnswerModel(kind, LABELS)
    (score,) = score_suite(default_suite(answers), [CheckInput("q", "", reference, reply)])
    sigs = signatures(answers, reference, reply)
    classes, gold = answer_classes(reply, answers), answer_classes(reference, answers)
    assert score.passed is passes
    # a passing reply has nothing structurally wrong; a failing one says what
    assert ([str(s) for s in sigs] == ["wrong_answer"]) is passes
    assert ("invalid_json" in [s.kind for s in sigs]) is (classes == ("invalid",))
    if passes:
        assert classes == gold
    if kind == "label":
        assert (classes == gold) is passes


def test_one_json_reader_for_replies_and_references():
    assert parse_json('Sure: {"a": 1} and more') == {"a": 1}
    assert parse_json('Sure: {"a": 1}', strict=True) is None
    assert parse_json("7") is None and parse_json('"text"') is None  # not structured answers
    assert parse_json('{"a": "é"}', strict=True) == {"a": "é"}


@pytest.mark.parametrize("references, kind", [
    (['{"a": 1}'] * 9 + ["no"], "json"),
    (['["a"]', '["b", "a"]', "[]"] * 4, "labels"),
    (["12", "1,200", "3.5", "7"] * 3, "number"),
    (["yes", "no", "maybe"] * 4, "label"),
    (["The hotel is near the station and has a pool."] * 3 + ["A quiet room with a view."], "text"),
    (["Paris", "Rome", "2001-02-03", '{"a": 1}'], "exact"),
    ([], "exact"),
])
def test_the_kind_is_inferred_from_the_references(references, kind):
    assert infer_answers(references).kind == kind


def test_the_settings_know_every_kind():
    from typing import get_args

    assert get_args(AnswerKind) == KINDS


def _rows(outputs, prefix="q"):
    return [{"instruction": "Classify the request.", "input": f"{prefix} {i}: {o.replace('_', ' ')}",
             "output": o} for i, o in enumerate(outputs)]


LONG = ["request_replacement_card_for_a_damaged_debit_card",
        "report_an_unrecognised_transaction_on_my_statement",
        "change_the_pin_of_a_newly_delivered_credit_card"]


def test_long_snake_case_labels_are_labels_and_failures_name_them(tmp_path):
    """A label of 48+ characters used to drop the label set for the whole task."""
    toml = write_task(tmp_path / "t", {"train": _rows(LONG * 6), "test": _rows(LONG * 2, "t")})
    task = load_task(toml)
    assert task.answers.kind == "label" and task.answers.labels == frozenset(LONG)
    assert "answers: label" in task.report.line() and "3 labels" in task.report.line()
    (sig,) = signatures(task.answers, LONG[0], LONG[1].upper(), ("wrong_answer",))
    assert str(sig) == f"label:{LONG[0]}->{LONG[1]}"
    (unknown,) = signatures(task.answers, LONG[0], "no idea", ("wrong_answer",))
    assert str(unknown) == f"label:{LONG[0]}->unknown"


class _Words:
    """A bag-of-words embedder: texts sharing words are similar."""

    def __init__(self):
        self.vocab: dict[str, int] = {}

    def encode(self, texts):
        rows = []
        for text in texts:
            v = np.zeros(256)
            for w in text.lower().replace(".", "").split():
                v[self.vocab.setdefault(w, len(self.vocab)) % 256] += 1
            rows.append(v / max(np.linalg.norm(v), 1e-9))
        return np.array(rows)


def test_a_free_text_task_is_scored_by_a_calibrated_similarity(tmp_path):
    from loop.evaluation.evaluate import task_suite

    texts = ["Alma serves Thai food by the river.", "Near the station Bruno offers cheap pasta.",
             "Cleo is a French pub for families.", "Try Dario for Greek dishes in the centre.",
             "Elsa has Indian curries and a garden.", "Fritz sells Mexican tacos late at night.",
             "Greta is a Japanese restaurant with high ratings near the park.",
             "Hugo is an expensive Turkish grill."]
    rows = [{"instruction": "Describe the restaurant in one sentence.", "input": f"Facts {i}",
             "output": t} for i, t in enumerate(texts)]
    task = load_task(write_task(tmp_path / "t", {"train": rows[:6], "test": rows[6:]}))
    assert task.answers.kind == "text"
    suite = task_suite(task, _Words())
    required = [c for c in suite.checks if c.required and c.applies != "json"]
    assert [c.name for c in required] == ["similarity"]  # not exact match
    threshold = required[0].params["threshold"]
    assert 0.5 <= threshold < 1 and f"@{threshold:.2f}" in suite.version
    reference = rows[6]["output"]
    good = "Greta is a Japanese restaurant near the park with high ratings."  # other words
    bad = "Hugo is a Turkish grill."  # an answer for another item
    embed = _Words()
    sims = [float(embed.encode([reference])[0] @ embed.encode([x])[0]) for x in (good, bad)]
    item = CheckInput("q", "", reference, "")
    assert [s.passed for s in score_suite(suite, [item, item], sims)] == [True, False]


def test_similarity_threshold_is_a_quantile_of_other_items_references():
    v = np.eye(4)
    v[1] = [0.6, 0.8, 0, 0]  # close to item 0
    assert similarity_threshold(v, ["a", "b", "c", "d"], quantile=1.0) == 0.6
    # the same question twice: two valid answers, not a calibration pair
    assert similarity_threshold(v, ["a", "a", "c", "d"], quantile=1.0) == 0.5  # range floor
    w = np.array([[1.0, 0.0], [0.7071, 0.7071]])
    assert similarity_threshold(w, ["a", "b"], quantile=1.0) == 0.71  # rounded up to 0.01
    assert similarity_threshold(w[:1], ["a"]) == 0.95  # nothing to calibrate on: the ceiling


def test_the_task_file_overrides_the_kind_and_the_label_set(tmp_path):
    rows = _rows(["yes", "no"] * 6)
    task = load_task(write_task(tmp_path / "a", {"test": rows}, 'answer = "text"\n'))
    assert task.answers.kind == "text" and "answer in the task file" in task.answers.source
    task = load_task(write_task(tmp_path / "b", {"test": rows}, 'labels = ["Yes", "No", "Maybe"]\n'))
    assert task.answers.kind == "label" and task.answers.labels == {"yes", "no", "maybe"}
    (sig,) = signatures(task.answers, "yes", "maybe")
    assert str(sig) == "label:yes->maybe"  # a label the references never used is still known


@pytest.mark.parametrize("toml, message", [
    ('answer = "free"\n', "answer: must be one of"),
    ('answer = 3\n', "answer: must be one of"),
    ('labels = ["only"]\n', "labels"),
    ('labels = "yes,no"\n', "labels"),
    ('answer = "json"\nlabels = ["a", "b"]\n', 'a label set needs answer = "label"'),
    ('labels = ["a", "A"]\n', "labels must be distinct"),
])
def test_bad_answer_settings_are_settings_errors(tmp_path, toml, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_task(write_task(tmp_path / "t", {"test": _rows(["yes", "no"] * 3)}, toml))
