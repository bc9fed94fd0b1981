"""What an answer is, decided once per task: its kind, its label set, how a reply is read.

    answers = infer_answers(references)              # or the task TOML's `answer` / `labels`
    answers.describe()        # 'label: 151 labels, inferred from 1,800 references'
    answers.read(reply)       # Reply(value=..., clean=...): the reply as the task's kind sees it

Kinds (`KINDS`), inferred from the task's references in this order:

- `json`: at least JSON_SHARE of the references are JSON objects (slot extraction);
- `labels`: ... are JSON lists (multi-label); the label set is their string elements;
- `number`: ... are numbers;
- `label`: a closed set of short labels: at most MAX_LABEL_WORDS words each (a snake_case name
  is one word, however long), at most half as many distinct values as references;
- `text`: open answers (the median reference has MIN_TEXT_WORDS words or more): scored by
  embedding similarity with a threshold calibrated on the task (`similarity_threshold`);
- `exact`: everything else (short answers, or a task that mixes skills): each item is compared
  exactly, or as JSON when its reference is JSON.

Everything that reads an answer goes through here: the checks (evals/rules.py), the default
suite (evals/suites.py), the failure signatures (evals/signatures.py), the answer classes and
curation rules of targeted data (loop/targeted/). `parse_json` is the one JSON reader of answers
and `canonical` the one canonical form of a value. Pure: no model, no I/O.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

Kind = Literal["json", "labels", "number", "label", "text", "exact"]
KINDS: tuple[str, ...] = get_args(Kind)
JSON_SHARE = 0.9  # this share of references of one shape makes the task's kind
MAX_LABEL_WORDS = 6  # a label is a name, not a sentence
MIN_TEXT_WORDS = 5  # median reference length (words) of an open-answer task
_FENCE = re.compile(r"```[a-zA-Z]*[ \t]*\n?(.*?)```", re.DOTALL)
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


# ---------------------------------------------------------------------------- reading text

def normalize(text: str) -> str:
    """Lower case, collapse whitespace, strip quotes and trailing punctuation: the form in which
    two short answers (and labels) are the same."""
    text = re.sub(r"\s+", " ", (text or "").strip().lower())
    return text.strip("\"'`").rstrip(".!?;:,").strip()


def parse_json(text: str, strict: bool = False):
    """The JSON object or array `text` holds, else None (scalars are not structured answers).

    Strict (references, training answers): the whole text, optionally inside one markdown code
    fence. Lenient (a model's reply): also a fenced block anywhere, or the first object or array
    inside surrounding prose (`Sure: {"a": 1}`) or followed by trailing text."""
    text = (text or "").strip()
    fenced = _FENCE.search(text)
    if strict:
        whole = fenced.group(1).strip() if fenced and fenced.group(0) == text else text
        try:
            value = json.loads(whole)
        except (ValueError, RecursionError):
            return None
        return value if isinstance(value, (dict, list)) else None
    decoder = json.JSONDecoder()
    for candidate in ([fenced.group(1)] if fenced else []) + [text]:
        for match in re.finditer(r"[\[{]", candidate):
            try:
                value, _ = decoder.raw_decode(candidate[match.start():])
            except (ValueError, RecursionError):
                continue
            return value
    return None


def parse_number(text: str, strict: bool = False) -> float | None:
    """The number `text` is (strict), or the one number it holds (`Answer: 1,200.`), else None;
    a reply with several numbers is ambiguous and reads as none."""
    stripped = normalize(text)
    if re.fullmatch(_NUMBER.pattern, stripped):
        return float(stripped.replace(",", ""))
    if strict:
        return None
    found = _NUMBER.findall(text or "")
    return float(found[0].replace(",", "")) if len(found) == 1 else None


def canonical(value) -> str:
    """The canonical form of a JSON value, for comparing: sorted keys, non-ASCII kept, types
    kept (the string "1" and the number 1 differ, as they do for `json_equal`)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def element(value) -> str:
    """How a value is named in a signature or an answer class: a string as itself, anything else
    in its canonical form."""
    return value if isinstance(value, str) else canonical(value)


def canonical_answer(text: str) -> str:
    """Two answers are the same answer when these agree: a structured answer by its parsed
    value, any other by its words (case and punctuation dropped)."""
    value = parse_json(text, strict=True)
    if value is not None:
        return canonical(value)
    return " ".join(re.findall(r"\w+", (text or "").lower()))


def shape(text: str) -> str:
    """One reference's shape: "object", "list" (JSON) or "other"."""
    value = parse_json(text, strict=True)
    return "object" if isinstance(value, dict) else "list" if isinstance(value, list) else "other"


# ---------------------------------------------------------------------------- the answer model

@dataclass(frozen=True)
class Reply:
    """A reply read as the task's kind: `value` is a dict (json), a list (labels), a float
    (number), a normalised string (label, text, exact) or None when the reply is not of the
    kind; `clean` when the whole reply is the answer (no fence, prose or trailing text)."""

    value: object
    clean: bool

    @property
    def valid(self) -> bool:
        return self.value is not None


@dataclass(frozen=True)
class AnswerModel:
    """A task's answers: the kind, the closed label set (label, labels) and how both were found
    (`source`: 'inferred from N references', or the task TOML's keys)."""

    kind: Kind = "exact"
    labels: frozenset[str] = frozenset()
    source: str = "default"
    # a task that mixes skills (`exact`): the answer model of each category that has a kind of
    # its own (a sentiment skill with labels beside a JSON skill), for curation
    by_category: tuple[tuple[str, AnswerModel], ...] = ()

    def for_category(self, category: str) -> AnswerModel:
        """The answers of one category: its own model in a mixed task, else the task's."""
        return dict(self.by_category).get(category, self)

    def read(self, text: str) -> Reply:
        """A reply (or reference) as this task reads it."""
        if self.kind in ("json", "labels"):
            value = parse_json(text)
            want = dict if self.kind == "json" else list
            if not isinstance(value, want):
                return Reply(None, False)
            return Reply(value, parse_json(text, strict=True) == value)
        if self.kind == "number":
            number = parse_number(text)
            return Reply(number, number is not None and parse_number(text, True) is not None)
        return Reply(normalize(text), True)

    def is_label(self, text: str) -> bool:
        return normalize(text) in self.labels

    def describe(self) -> str:
        what = {"json": "JSON objects", "labels": "JSON lists of labels", "number": "numbers",
                "label": "one label each", "exact": "short answers compared exactly",
                "text": "free text: similarity to the reference, threshold calibrated on "
                        "the task"}[self.kind]
        labels = f", {len(self.labels)} labels" if self.labels else ""
        if self.by_category:
            labels += ", by category: " + ", ".join(f"{c} {m.kind}" for c, m in self.by_category)
        return f"answers: {self.kind} ({what}{labels}; {self.source})"


def infer_answers(references: Sequence[str], kind: str | None = None,
                  labels: Iterable[str] | None = None,
                  categories: Sequence[str] | None = None, source: str = "") -> AnswerModel:
    """The task's answer model from its references (see the module docstring); `kind` and
    `labels` (the task TOML's `answer` and `labels`) override the inference. `categories`
    (row-aligned): an `exact` task also gets the model of each category whose references have
    a kind of their own (the same inference, per category)."""
    refs = [r for r in references if r is not None]
    given = frozenset(normalize(x) for x in labels) if labels is not None else None
    if kind is not None:
        source = "answer in the task file"
    else:
        kind = _inferred_kind(refs)
        if given is not None and kind != "labels":
            kind = "label"  # a label set given: one label per answer unless they are lists
        source = f"inferred from {source or f'{len(refs):,} references'}"
    if given is not None:
        return AnswerModel(kind, given, source + "; labels in the task file")
    found = {"label": _label_set, "labels": _element_set}.get(kind)
    by_category: tuple[tuple[str, AnswerModel], ...] = ()
    if kind == "exact" and categories is not None and len(set(categories)) > 1:
        groups: dict[str, list[str]] = {}
        for ref, category in zip(refs, categories):
            groups.setdefault(category, []).append(ref)
        models = ((c, infer_answers(rs, source=f"{len(rs):,} references of {c}"))
                  for c, rs in sorted(groups.items()))
        by_category = tuple((c, m) for c, m in models if m.kind != "exact")
    return AnswerModel(kind, found(refs) if found else frozenset(), source, by_category)


def _inferred_kind(refs: Sequence[str]) -> str:
    if not refs:
        return "exact"
    need = JSON_SHARE * len(refs)
    shapes = Counter(shape(r) for r in refs)
    if shapes["object"] >= need:
        return "json"
    if shapes["list"] >= need:
        return "labels"
    if sum(parse_number(r, strict=True) is not None for r in refs) >= need:
        return "number"
    if _label_set(refs):
        return "label"
    words = sorted(len(r.split()) for r in refs)
    return "text" if words[len(words) // 2] >= MIN_TEXT_WORDS else "exact"


def _label_set(refs: Sequence[str]) -> frozenset[str]:
    """The references' label set when they form one (short, repeating), else empty."""
    if len(refs) < 4 or any(not r.strip() or shape(r) != "other" for r in refs):
        return frozenset()
    distinct = Counter(normalize(r) for r in refs)
    if len(distinct) < 2 or len(distinct) > len(refs) / 2:
        return frozenset()
    if any(len(label.split()) > MAX_LABEL_WORDS for label in distinct):
        return frozenset()
    return frozenset(distinct)


def _element_set(refs: Sequence[str]) -> frozenset[str]:
    """The string elements of list references (a multi-label task's labels)."""
    values = [parse_json(r, strict=True) for r in refs]
    return frozenset(normalize(x) for v in values if isinstance(v, list)
                     for x in v if isinstance(x, str))


# ---------------------------------------------------------------------------- free text

TEXT_QUANTILE = 0.95  # an answer written for another item passes this rarely (1 - quantile)
THRESHOLD_RANGE = (0.5, 0.95)
MAX_CALIBRATION_ROWS = 400


def calibration_sample(n: int, seed: int = 0) -> list[int]:
    """Which of n references calibrate the threshold (all up to MAX_CALIBRATION_ROWS, else a
    seeded sample), so the embedding cost stays bounded."""
    if n <= MAX_CALIBRATION_ROWS:
        return list(range(n))
    return sorted(np.random.default_rng(seed).choice(n, MAX_CALIBRATION_ROWS,
                                                     replace=False).tolist())


def similarity_threshold(vectors: np.ndarray, questions: Sequence[str],
                         quantile: float = TEXT_QUANTILE) -> float:
    """The free-text pass threshold calibrated on a task's own references: the `quantile` of the
    cosine similarities between references of *different* questions (pairs with the same
    question, two valid answers, are left out). A reply passes when it is closer to its own
    reference than an answer written for another item is in `quantile` of cases: on-topic but
    wrong answers rarely pass, a right answer in other words does. Rounded up to 0.01 (so float
    noise of the embedder cannot move it) and kept within THRESHOLD_RANGE.

    `vectors`: unit-normalised reference embeddings, row-aligned with `questions`."""
    v = np.asarray(vectors, dtype=np.float64)
    lo, hi = THRESHOLD_RANGE
    if len(v) < 2:
        return hi
    sims = v @ v.T
    _, q = np.unique(np.asarray(list(questions), dtype=object), return_inverse=True)
    upper = np.triu(np.ones(sims.shape, dtype=bool), k=1) & (q[:, None] != q[None, :])
    if not upper.any():
        return hi
    value = float(np.quantile(sims[upper], quantile))
    return min(hi, max(lo, math.ceil(round(value, 6) * 100) / 100))
