"""Failure signatures: *what* went wrong with a prediction, chosen by the shape of its reference
and read with the task's answer model (evals/answers.py).

    answers = infer_answers(e.output for e in task_examples)    # or task.answers
    signatures(answers, '{"pickup_time": "10:30"}', '{}', ("wrong_answer",))
    # -> (Signature(kind="missing_key", key="pickup_time", gold="10:30"),)

- JSON object reference: `invalid_json` (the reply holds no JSON object), `missing_key:<k>`,
  `extra_key:<k>`, `wrong_value:<k>` (with the gold and predicted values).
- JSON list reference: `invalid_json`, `missing_element:<x>`, `extra_element:<x>`.
- label reference (a label of the task's set): `label:<gold>-><predicted>`, or
  `label:<gold>->unknown` when the reply is no known label.
- number (a number task): `not_a_number`, or `wrong_number` with the gold and predicted values.
- free text (a text task, or a reference of MIN_TEXT_WORDS words or more), against the
  reference and the item's `source` (what the model was asked): `too_long` / `too_short`
  (over LENGTH_RATIO times the reference's words, or under 1 / LENGTH_RATIO of them),
  `missing_fact:<field>` (a fact of the source that the reference carries and the answer lacks:
  the value of a `Field: value` line, keyed by its field label, or else a number or name,
  keyed `number` or `name`), `unsupported:<number|name>` (a number or name in the answer found
  neither in the source nor in the reference), `repetition` (repeated word 3-grams, as the
  `repetition` check counts them). Facts and names are found generically, never by a task's
  own words.
- anything else, or free text with none of those: the failing checks' categories.

A `Signature` is a record; `str(sig)` is its stored form (never clipped, so it reads back with
`Signature.parse`), `sig.display()` a clipped one for tables. Sorted and deduplicated. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import re

from evals.answers import (MIN_TEXT_WORDS, AnswerModel, canonical, element, normalize,
                           parse_json, parse_number)
from evals.rules import entities, repeated_share, unsupported_entities, words

UNKNOWN = "unknown"  # the predicted label when the reply is none of the task's labels
DISPLAY_CHARS = 40  # keys, elements and labels shown in tables are clipped to this
KEYED = ("missing_key", "extra_key", "wrong_value", "missing_element", "extra_element",
         "missing_fact", "unsupported")
LENGTH_RATIO = 2.0  # an answer this many times longer (or shorter) than the reference
MIN_LENGTH_GAP = 3  # words: a 2-word answer to a 1-word reference is not "too long"
MAX_REPEATED = 0.3  # the repetition check's default max_ratio
_FIELD_LINE = re.compile(r"^\s*([A-Za-z][\w ]{0,30}?)\s*[:=]\s+(\S.*?)\s*$")


@dataclass(frozen=True, order=True)
class Signature:
    """What went wrong: `kind` (missing_key, label, invalid_json, a check category...), the key,
    element or gold label it is about, and the gold and predicted values when there are."""

    kind: str
    key: str = ""
    gold: str = ""
    predicted: str = ""

    def __str__(self) -> str:
        if self.kind == "label":
            return f"label:{self.gold}->{self.predicted}"
        return f"{self.kind}:{self.key}" if self.kind in KEYED else self.kind

    def display(self, width: int = DISPLAY_CHARS) -> str:
        """The stored form with each part clipped, for tables and cluster names."""
        if self.kind == "label":
            return f"label:{_clip(self.gold, width)}->{_clip(self.predicted, width)}"
        return f"{self.kind}:{_clip(self.key, width)}" if self.kind in KEYED else self.kind

    @classmethod
    def parse(cls, text: str) -> Signature:
        """A stored signature string back as a record (gold/predicted values are not stored
        for keyed signatures)."""
        head, sep, arg = text.partition(":")
        if head == "label" and "->" in arg:
            gold, _, predicted = arg.rpartition("->")
            return cls("label", gold, gold, predicted)
        return cls(head, arg) if sep and head in KEYED else cls(text)


def _clip(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[:width - 3] + "..."


def signatures(answers: AnswerModel, reference: str, prediction: str,
               categories: Sequence[str] = (), source: str = "") -> tuple[Signature, ...]:
    """Signatures of one failed prediction (see the module docstring). `categories` are the
    failing checks' categories: the fallback when no signature says more (the structure
    matches but a check still failed: extra text, spacing). `source`: what the model was
    asked (the user message), which free-text signatures compare the answer with."""
    gold = parse_json(reference, strict=True)
    if isinstance(gold, dict):
        found = _object_signatures(gold, parse_json(prediction))
    elif isinstance(gold, list):
        found = _list_signatures(gold, parse_json(prediction))
    elif answers.labels and answers.is_label(reference):
        found = _label_signatures(normalize(reference), normalize(prediction), answers.labels)
    elif answers.kind == "number":
        found = _number_signatures(reference, prediction)
    elif answers.kind == "text" or len(words(reference)) >= MIN_TEXT_WORDS:
        found = text_signatures(reference, prediction, source)
    else:
        found = []
    found = found or [Signature(c) for c in (categories or ("wrong_answer",))]
    return tuple(sorted(set(found)))


def _object_signatures(gold: dict, pred) -> list[Signature]:
    if not isinstance(pred, dict):
        return [Signature("invalid_json")]
    out = [Signature("missing_key", k, element(gold[k])) for k in gold if k not in pred]
    out += [Signature("extra_key", k, "", element(pred[k])) for k in pred if k not in gold]
    out += [Signature("wrong_value", k, element(gold[k]), element(pred[k])) for k in gold
            if k in pred and canonical(gold[k]) != canonical(pred[k])]
    return out


def _list_signatures(gold: list, pred) -> list[Signature]:
    if not isinstance(pred, list):
        return [Signature("invalid_json")]
    want = {canonical(x): element(x) for x in gold}
    got = {canonical(x): element(x) for x in pred}
    return ([Signature("missing_element", want[x], want[x]) for x in want.keys() - got.keys()]
            + [Signature("extra_element", got[x], "", got[x]) for x in got.keys() - want.keys()])


def _label_signatures(gold: str, predicted: str, labels: frozenset[str]) -> list[Signature]:
    if predicted == gold:
        return []  # same label, different form: the checks say what failed
    return [Signature("label", gold, gold, predicted if predicted in labels else UNKNOWN)]


def _number_signatures(reference: str, prediction: str) -> list[Signature]:
    gold, got = parse_number(reference, strict=True), parse_number(prediction)
    if got is None:
        return [Signature("not_a_number", "", element(gold))]
    return [] if got == gold else [Signature("wrong_number", "", element(gold), element(got))]


def text_signatures(reference: str, prediction: str, source: str = "") -> list[Signature]:
    """What a free-text answer got wrong against its reference and source (module docstring):
    length, missing facts, unsupported numbers and names, repetition."""
    gold, got = len(words(reference)), len(words(prediction))
    out = []
    if got > LENGTH_RATIO * gold and got - gold >= MIN_LENGTH_GAP:
        out.append(Signature("too_long", "", str(gold), str(got)))
    elif got * LENGTH_RATIO < gold and gold - got >= MIN_LENGTH_GAP:
        out.append(Signature("too_short", "", str(gold), str(got)))
    said = _words(prediction)
    out += [Signature("missing_fact", field, fact) for field, fact in
            source_facts(source, reference) if not _holds(said, fact)]
    out += [Signature("unsupported", _entity_kind(token), "", token)
            for token in unsupported_entities(prediction, f"{source} {reference}")]
    if repeated_share(prediction) > MAX_REPEATED:
        out.append(Signature("repetition"))
    return out


def source_facts(source: str, reference: str) -> list[tuple[str, str]]:
    """(field, fact) for each fact of the source that the reference carries: the whole value
    of a `Field: value` line (the field labels it), else the numbers and names in the line
    (labelled `number` or `name`). A fact the reference leaves out is not one an answer
    needs."""
    ref = _words(reference)
    facts = []
    for line in source.splitlines():
        field = _FIELD_LINE.match(line)
        label, value = (field.group(1).strip(), field.group(2)) if field else ("", line)
        if field and _holds(ref, value):
            facts.append((label, value))
            continue
        facts += [(_entity_kind(t), t) for t in entities(value) if _holds(ref, t)]
    return list(dict.fromkeys(facts))


def _words(text: str) -> str:
    return " " + " ".join(re.findall(r"\w+", (text or "").lower())) + " "


def _holds(said: str, phrase: str) -> bool:
    """Whether the words of `phrase` stand together in `said` (a `_words` string)."""
    own = _words(phrase)
    return own.strip() != "" and own in said


def _entity_kind(token: str) -> str:
    return "number" if token[:1].isdigit() else "name"


def is_format_only(sigs: Sequence[Signature]) -> bool:
    """Whether a failure is about the answer's form only: no JSON where JSON was due, or no
    known label (the model did not answer in the task's form at all)."""
    return bool(sigs) and all(s.kind == "invalid_json" or (s.kind == "label"
                                                           and s.predicted == UNKNOWN)
                              for s in sigs)


def expected_parts(reference: str) -> tuple[str, ...]:
    """What the reference asks for, for telling apart failures that share a coarse signature
    (`invalid_json`): an object's keys, a list's elements, `{}` / `[]` when empty."""
    gold = parse_json(reference, strict=True)
    if isinstance(gold, dict):
        return tuple(sorted(_clip(k, DISPLAY_CHARS) for k in gold)) or ("{}",)
    if isinstance(gold, list):
        return tuple(sorted({_clip(element(x), DISPLAY_CHARS) for x in gold})) or ("[]",)
    return ()


def signature_kind(signature: str) -> str:
    """`missing_key:pickup_time` -> `missing_key`; a category is its own kind."""
    return signature.split(":", 1)[0]

