"""Answer shapes and classes: what a task's references look like, what a failure's reference has
that the model missed, and how the training data's answers compare with the pool's.

    kind = answer_kind(pool_outputs)                       # "object" | "list" | "label" | "text"
    answer_classes('{"pickup_time": "10"}', kind)          # -> ("{pickup_time}",)
    rows = answer_distribution(kind, pool, failure_refs, data)   # per class shares, vanished flag
    order = balanced_order(pool_outputs, kind, seed=0, power=0.5)  # rare classes drawn earlier

Targeting reads failure signatures (`missing_key:k`, `label:g->p`, ... `evals.signatures`) as
`Need`s on a pool row's reference. Pure: no model, no I/O.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

KINDS = ("object", "list", "label", "text")
PRESENT = 0.05  # a class this common in the pool or the failures ...
VANISHED = 0.01  # ... is flagged when the training data has less than this


def parse(text: str):
    """The JSON value of a structured answer, else None."""
    stripped = text.strip()
    if stripped[:1] not in "{[":
        return None
    try:
        return json.loads(stripped)
    except ValueError:
        return None


def json_shape(text: str) -> str:
    """One answer's shape: "object", "list" (JSON) or "other"."""
    value = parse(text)
    return "object" if isinstance(value, dict) else "list" if isinstance(value, list) else "other"


def _label(text: str) -> str:
    """A label as evals.signatures names it (case, quotes and a final period dropped)."""
    return (text or "").strip().strip("\"'`.").strip().lower()


def _element(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def answer_kind(references: Sequence[str]) -> str:
    """The task's answer shape, inferred from its references: 90% JSON objects or lists; a
    closed set of short labels (evals.signatures.known_labels); else free text."""
    from evals.signatures import known_labels

    if not references:
        return "text"
    parsed = [parse(r) for r in references]
    for kind, typ in (("object", dict), ("list", list)):
        if sum(isinstance(p, typ) for p in parsed) >= 0.9 * len(references):
            return kind
    return "label" if known_labels(references) else "text"


def answer_classes(text: str, kind: str) -> tuple[str, ...]:
    """The classes one answer belongs to: an object's key set (`{}`, `{a, b}`), each element of a
    list (`[]` when empty), a label; free text has none. Unparseable: `invalid`."""
    if kind == "label":
        return (_label(text),)
    if kind not in ("object", "list"):
        return ()
    value = parse(text)
    if kind == "object":
        return ("{" + ", ".join(sorted(value)) + "}",) if isinstance(value, dict) else ("invalid",)
    if not isinstance(value, list):
        return ("invalid",)
    return tuple(sorted({_element(v) for v in value})) or ("[]",)


def _members(text: str, kind: str) -> frozenset[str]:
    """What `has`/`lacks` look for: an object's keys, a list's elements, the label."""
    if kind == "label":
        return frozenset((_label(text),))
    value = parse(text)
    if isinstance(value, dict):
        return frozenset(value)
    if isinstance(value, list):
        return frozenset(_element(v) for v in value)
    return frozenset()


# ---------------------------------------------------------------------------- needs

@dataclass(frozen=True)
class Need:
    """A property a pool row's reference should have: `has` a key/element/label, `lacks` one,
    or the `same` answer class as a failing item's reference (`value` is that reference)."""

    op: str  # "has" | "lacks" | "same"
    value: str


def needs(signatures: Sequence[str], reference: str) -> tuple[tuple[Need, ...], tuple[Need, ...]]:
    """(primary, contrast) needs of one failure. Primary: rows that teach what the model missed;
    contrast: a few rows of the label it confused the gold one with, to tell them apart. No
    usable signature (free text, none stored): rows with the same answer class as the reference."""
    primary: list[Need] = []
    contrast: list[Need] = []
    for sig in signatures:
        head, _, arg = sig.partition(":")
        if head in ("missing_key", "wrong_value", "missing_element"):
            primary.append(Need("has", arg))
        elif head in ("extra_key", "extra_element"):
            primary.append(Need("lacks", arg))
        elif head == "label" and "->" in arg:
            gold, _, got = arg.rpartition("->")
            primary.append(Need("has", gold))
            if got and got != "unknown":
                contrast.append(Need("has", got))
        elif head == "invalid_json":
            primary.append(Need("same", reference))
    if not primary:
        primary.append(Need("same", reference))
    return tuple(dict.fromkeys(primary)), tuple(dict.fromkeys(contrast))


class PoolAnswers:
    """The pool's references parsed once; `mask(need)` says which rows meet a need (cached)."""

    def __init__(self, outputs: Sequence[str], kind: str):
        from evals.signatures import known_labels

        self.kind = kind
        self.labels = known_labels(outputs) if kind == "label" else frozenset()
        self.members = [_members(o, kind) for o in outputs]
        self.classes = [answer_classes(o, kind) for o in outputs]
        self._cache: dict[Need, np.ndarray] = {}

    def mask(self, need: Need) -> np.ndarray:
        if need not in self._cache:
            if need.op == "same":
                want = answer_classes(need.value, self.kind)
                got = [bool(want) and c == want for c in self.classes]
            else:
                value = _label(need.value) if self.kind == "label" else need.value
                has = [_contains(m, value) for m in self.members]
                got = has if need.op == "has" else [not h for h in has]
            self._cache[need] = np.array(got, dtype=bool)
        return self._cache[need]


def _contains(members: frozenset[str], value: str) -> bool:
    """Signatures clip long keys and elements to 'first chars...': those match by prefix."""
    if value in members:
        return True
    return value.endswith("...") and any(m.startswith(value[:-3]) for m in members)


# ---------------------------------------------------------------------------- sampling

def balanced_order(outputs: Sequence[str], kind: str, seed: int, power: float) -> np.ndarray:
    """A seeded random order of the rows in which the first n hold each answer class about in
    proportion to freq ** power (1: the pool's own mix, as a uniform sample; 0.5: square-root
    sampling, rare classes raised, common ones lowered; 0: classes equal). A row weighs
    freq ** (power - 1) of its rarest class; the order is a weighted draw without replacement
    (Efraimidis-Spirakis keys). Rows without a class (free text) weigh alike."""
    rng = np.random.default_rng(seed)
    classes = [answer_classes(o, kind) for o in outputs]
    counts = Counter(c for cs in classes for c in set(cs))
    total = max(1, len(outputs))
    weights = np.array([max(((counts[c] / total) ** (power - 1) for c in cs), default=1.0)
                        for cs in classes])
    keys = rng.random(len(outputs)) ** (1.0 / weights)
    return np.argsort(-keys, kind="stable")


# ---------------------------------------------------------------------------- distribution

def _shares(answers: Sequence[str], kind: str) -> Counter:
    counts: Counter = Counter()
    for a in answers:
        counts.update(set(answer_classes(a, kind)))
    return counts


def answer_distribution(kind: str, pool: Sequence[str], failures: Sequence[str],
                        data: Sequence[str]) -> dict:
    """Per answer class, the share of pool rows, failing items' references and training rows that
    have it (a list answer counts toward each of its elements). A class present in >= PRESENT of
    the pool or the failures but in < VANISHED of the data is flagged `vanished`."""
    sets = {"pool": pool, "failures": failures, "data": data}
    counts = {name: _shares(answers, kind) for name, answers in sets.items()}
    classes = sorted(set().union(*counts.values()),
                     key=lambda c: (-counts["pool"][c], -counts["failures"][c], c))
    rows = []
    for c in classes:
        share = {name: counts[name][c] / len(answers) if answers else 0.0
                 for name, answers in sets.items()}
        vanished = max(share["pool"], share["failures"]) >= PRESENT and share["data"] < VANISHED
        rows.append({"class": c, **{k: round(v, 4) for k, v in share.items()},
                     "vanished": vanished})
    return {"kind": kind, "n": {name: len(answers) for name, answers in sets.items()},
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
