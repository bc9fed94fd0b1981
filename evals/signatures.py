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
- free text, or a structured reply that differs only in form: the failing checks' categories.

A `Signature` is a record; `str(sig)` is its stored form (never clipped, so it reads back with
`Signature.parse`), `sig.display()` a clipped one for tables. Sorted and deduplicated. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from evals.answers import AnswerModel, canonical, element, normalize, parse_json, parse_number

UNKNOWN = "unknown"  # the predicted label when the reply is none of the task's labels
DISPLAY_CHARS = 40  # keys, elements and labels shown in tables are clipped to this
KEYED = ("missing_key", "extra_key", "wrong_value", "missing_element", "extra_element")


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
               categories: Sequence[str] = ()) -> tuple[Signature, ...]:
    """Signatures of one failed prediction (see the module docstring). `categories` are the
    failing checks' categories: the signature of a free-text reference, and the fallback when
    the structure matches but a check still failed (extra text, spacing)."""
    gold = parse_json(reference, strict=True)
    if isinstance(gold, dict):
        found = _object_signatures(gold, parse_json(prediction))
    elif isinstance(gold, list):
        found = _list_signatures(gold, parse_json(prediction))
    elif answers.labels and answers.is_label(reference):
        found = _label_signatures(normalize(reference), normalize(prediction), answers.labels)
    elif answers.kind == "number":
        found = _number_signatures(reference, prediction)
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

