"""Failure signatures: *what* went wrong with a prediction, chosen by the shape of its reference.

    labels = known_labels(e.output for e in task_examples)     # closed label set, or empty
    signatures('{"pickup_time": "10:30"}', '{}', ("wrong_answer",), labels)
    # -> ("missing_key:pickup_time",)

- JSON object reference: `invalid_json` (the prediction is not a JSON object), `missing_key:<k>`,
  `extra_key:<k>`, `wrong_value:<k>`.
- JSON list reference: `invalid_json`, `missing_element:<x>`, `extra_element:<x>` (elements as
  plain strings or canonical JSON).
- label reference (the task's references form a closed set of short labels):
  `label:<gold>-><predicted>`, or `label:<gold>->unknown` when the prediction is no known label.
- free text, or a structured prediction that differs only in form: the failing checks'
  categories, unchanged.

Signatures are sorted and deduplicated. Pure: no model, no I/O.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence

MAX_LABEL_CHARS = 40  # a label is a short name, not a sentence
MAX_LABEL_WORDS = 4
MAX_PART_CHARS = 40  # keys, elements and labels are clipped so one odd value stays readable
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?```$", re.DOTALL)


def parse_json(text: str):
    """The JSON value of `text` (a surrounding markdown code fence is allowed), else None."""
    text = (text or "").strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _canonical(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True,
                                                           ensure_ascii=False)


def _clip(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_PART_CHARS else text[:MAX_PART_CHARS - 3] + "..."


def _normal_label(text: str) -> str:
    return (text or "").strip().strip("\"'`.").strip().lower()


def known_labels(references: Iterable[str]) -> frozenset[str]:
    """The task's label set when its references look like one, else an empty set.

    References form a label set when none is JSON, every one is short (at most MAX_LABEL_WORDS
    words) and they repeat: at most half as many distinct values as references, and at least
    two references per label on average. A free-text task has mostly distinct answers."""
    refs = [r.strip() for r in references]
    if len(refs) < 4 or any(not r or isinstance(parse_json(r), (dict, list)) for r in refs):
        return frozenset()
    if any(len(r) > MAX_LABEL_CHARS or len(r.split()) > MAX_LABEL_WORDS for r in refs):
        return frozenset()
    distinct = Counter(_normal_label(r) for r in refs)
    if len(distinct) < 2 or len(distinct) > len(refs) / 2:
        return frozenset()
    return frozenset(distinct)


def signatures(reference: str, prediction: str, categories: Sequence[str] = (),
               labels: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """Signatures of one failed prediction (see the module docstring). `categories` are the
    failing checks' categories: the signature of a free-text reference, and the fallback when
    the structure matches but a check still failed (extra text, spacing)."""
    gold = parse_json(reference)
    if isinstance(gold, dict):
        found = _object_signatures(gold, parse_json(prediction))
    elif isinstance(gold, list):
        found = _list_signatures(gold, parse_json(prediction))
    elif labels and _normal_label(reference) in labels:
        found = _label_signatures(_normal_label(reference), _normal_label(prediction), labels)
    else:
        found = []
    return tuple(sorted(set(found or categories or ("wrong_answer",))))


def _object_signatures(gold: dict, pred) -> list[str]:
    if not isinstance(pred, dict):
        return ["invalid_json"]
    out = [f"missing_key:{_clip(k)}" for k in gold if k not in pred]
    out += [f"extra_key:{_clip(k)}" for k in pred if k not in gold]
    out += [f"wrong_value:{_clip(k)}" for k in gold
            if k in pred and _canonical(gold[k]) != _canonical(pred[k])]
    return out


def _list_signatures(gold: list, pred) -> list[str]:
    if not isinstance(pred, list):
        return ["invalid_json"]
    want, got = {_canonical(x) for x in gold}, {_canonical(x) for x in pred}
    return ([f"missing_element:{_clip(x)}" for x in want - got]
            + [f"extra_element:{_clip(x)}" for x in got - want])


def _label_signatures(gold: str, predicted: str, labels: frozenset[str]) -> list[str]:
    if predicted == gold:
        return []  # same label, different form (case, quotes): the checks say what failed
    shown = predicted if predicted in labels else "unknown"
    return [f"label:{_clip(gold)}->{_clip(shown)}"]


def expected_parts(reference: str) -> tuple[str, ...]:
    """What the reference asks for, for telling apart failures that share a coarse signature
    (`invalid_json`): an object's keys, a list's elements, `{}` / `[]` when empty."""
    gold = parse_json(reference)
    if isinstance(gold, dict):
        return tuple(sorted(_clip(k) for k in gold)) or ("{}",)
    if isinstance(gold, list):
        return tuple(sorted({_clip(_canonical(x)) for x in gold})) or ("[]",)
    return ()


def signature_kind(signature: str) -> str:
    """`missing_key:pickup_time` -> `missing_key`; a category is its own kind."""
    return signature.split(":", 1)[0]
