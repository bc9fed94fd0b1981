"""Answer classes: what a failure's reference has that the model missed, and how the training
data's answers compare with the pool's, read with the task's answer model (`Task.answers`,
evals/answers.py).

    answer_classes('{"pickup_time": "10"}', task.answers)   # -> ("{pickup_time}",)
    rows = answer_distribution(task.answers, pool, failure_refs, data)   # shares, vanished flag
    order = balanced_order(pool_outputs, task.answers, seed=0, power=0.5)  # rare classes first

Targeting reads failure signatures (`evals.signatures.Signature` records: a missing key, a
confused label) as `Need`s on a pool row's reference. Pure: no model, no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from evals.answers import AnswerModel, element, normalize
from evals.signatures import UNKNOWN, Signature

PRESENT = 0.05  # a class this common in the pool or the failures ...
VANISHED = 0.01  # ... is flagged when the training data has less than this


def answer_classes(text: str, answers: AnswerModel) -> tuple[str, ...]:
    """The classes one answer belongs to: an object's key set (`{}`, `{a, b}`), each element of a
    list (`[]` when empty), a label; other kinds have none. Not of the task's kind: `invalid`.
    The answer is read as the checks read a reply (`AnswerModel.read`)."""
    if answers.kind == "label":
        return (normalize(text),)
    if answers.kind not in ("json", "labels"):
        return ()
    value = answers.read(text).value
    if value is None:
        return ("invalid",)
    if isinstance(value, dict):
        return ("{" + ", ".join(sorted(value)) + "}",)
    return tuple(sorted({element(v) for v in value})) or ("[]",)


def _members(text: str, answers: AnswerModel) -> frozenset[str]:
    """What `has`/`lacks` look for: an object's keys, a list's elements, the label."""
    if answers.kind == "label":
        return frozenset((normalize(text),))
    value = answers.read(text).value if answers.kind in ("json", "labels") else None
    if isinstance(value, dict):
        return frozenset(value)
    if isinstance(value, list):
        return frozenset(element(v) for v in value)
    return frozenset()


# ---------------------------------------------------------------------------- needs

@dataclass(frozen=True)
class Need:
    """A property a pool row's reference should have: `has` a key/element/label, `lacks` one,
    or the `same` answer class as a failing item's reference (`value` is that reference)."""

    op: str  # "has" | "lacks" | "same"
    value: str


def needs(signatures: Sequence[Signature], reference: str
          ) -> tuple[tuple[Need, ...], tuple[Need, ...]]:
    """(primary, contrast) needs of one failure. Primary: rows that teach what the model missed;
    contrast: a few rows of the label it confused the gold one with, to tell them apart. No
    usable signature (free text, none stored): rows with the same answer class as the reference."""
    primary: list[Need] = []
    contrast: list[Need] = []
    for sig in signatures:
        if sig.kind in ("missing_key", "wrong_value", "missing_element"):
            primary.append(Need("has", sig.key))
        elif sig.kind in ("extra_key", "extra_element"):
            primary.append(Need("lacks", sig.key))
        elif sig.kind == "label":
            primary.append(Need("has", sig.gold))
            if sig.predicted and sig.predicted != UNKNOWN:
                contrast.append(Need("has", sig.predicted))
        elif sig.kind == "invalid_json":
            primary.append(Need("same", reference))
    if not primary:
        primary.append(Need("same", reference))
    return tuple(dict.fromkeys(primary)), tuple(dict.fromkeys(contrast))


class PoolAnswers:
    """The pool's references parsed once; `mask(need)` says which rows meet a need (cached)."""

    def __init__(self, outputs: Sequence[str], answers: AnswerModel):
        self.answers = answers
        self.labels = answers.labels if answers.kind == "label" else frozenset()
        self.members = [_members(o, answers) for o in outputs]
        self.classes = [answer_classes(o, answers) for o in outputs]
        self._cache: dict[Need, np.ndarray] = {}

    def mask(self, need: Need) -> np.ndarray:
        if need not in self._cache:
            if need.op == "same":
                want = answer_classes(need.value, self.answers)
                got = [bool(want) and c == want for c in self.classes]
            else:
                value = normalize(need.value) if self.answers.kind == "label" else need.value
                has = [value in m for m in self.members]
                got = has if need.op == "has" else [not h for h in has]
            self._cache[need] = np.array(got, dtype=bool)
        return self._cache[need]


# ---------------------------------------------------------------------------- sampling

def balanced_order(outputs: Sequence[str], answers: AnswerModel, seed: int, power: float
                   ) -> np.ndarray:
    """A seeded random order of the rows in which the first n hold each answer class about in
    proportion to freq ** power (1: the pool's own mix, as a uniform sample; 0.5: square-root
    sampling, rare classes raised, common ones lowered; 0: classes equal). A row weighs
    freq ** (power - 1) of its rarest class; the order is a weighted draw without replacement
    (Efraimidis-Spirakis keys). Rows without a class (free text) weigh alike."""
    rng = np.random.default_rng(seed)
    classes = [answer_classes(o, answers) for o in outputs]
    counts = Counter(c for cs in classes for c in set(cs))
    total = max(1, len(outputs))
    weights = np.array([max(((counts[c] / total) ** (power - 1) for c in cs), default=1.0)
                        for cs in classes])
    keys = rng.random(len(outputs)) ** (1.0 / weights)
    return np.argsort(-keys, kind="stable")


# ---------------------------------------------------------------------------- distribution

def _shares(texts: Sequence[str], answers: AnswerModel) -> Counter:
    counts: Counter = Counter()
    for a in texts:
        counts.update(set(answer_classes(a, answers)))
    return counts


def answer_distribution(answers: AnswerModel, pool: Sequence[str], failures: Sequence[str],
                        data: Sequence[str]) -> dict:
    """Per answer class, the share of pool rows, failing items' references and training rows that
    have it (a list answer counts toward each of its elements). A class present in >= PRESENT of
    the pool or the failures but in < VANISHED of the data is flagged `vanished`."""
    sets = {"pool": pool, "failures": failures, "data": data}
    counts = {name: _shares(texts, answers) for name, texts in sets.items()}
    classes = sorted(set().union(*counts.values()),
                     key=lambda c: (-counts["pool"][c], -counts["failures"][c], c))
    rows = []
    for c in classes:
        share = {name: counts[name][c] / len(texts) if texts else 0.0
                 for name, texts in sets.items()}
        vanished = max(share["pool"], share["failures"]) >= PRESENT and share["data"] < VANISHED
        rows.append({"class": c, **{k: round(v, 4) for k, v in share.items()},
                     "vanished": vanished})
    return {"kind": answers.kind, "n": {name: len(texts) for name, texts in sets.items()},
            "classes": rows, "vanished": [r["class"] for r in rows if r["vanished"]]}


def format_distribution(dist: dict, limit: int = 20) -> str:
    """A plain-text table: the `limit` most common classes plus every vanished one."""
    if not dist or not dist.get("classes"):
        return "answer distribution: no answer classes (free-text answers)"
    n = dist["n"]
    lines = [f"answer classes ({dist['kind']}): share of pool (n={n['pool']}), failures "
             f"(n={n['failures']}), training data (n={n['data']})",
             f"{'class':<40}{'pool':>8}{'failures':>10}{'data':>8}"]
    rows = [r for i, r in enumerate(dist["classes"]) if i < limit or r["vanished"]]
    lines += [f"{r['class'][:39]:<40}{r['pool']:>8.1%}{r['failures']:>10.1%}{r['data']:>8.1%}"
              + ("  VANISHED" if r["vanished"] else "") for r in rows]
    if len(dist["classes"]) > len(rows):
        lines.append(f"... {len(dist['classes']) - len(rows)} more classes")
    return "\n".join(lines)
