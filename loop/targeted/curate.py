"""Pure curation of targeted data: decontamination, duplicates, cluster balance and replay.

    index = build_ngram_index(ref_texts, ref_labels, background=pool_texts)  # lexical.py
    decisions = curate(items, vectors, refs, [index], n=200, n_replay=50)

Every item gets exactly one `Decision`: accepted, or rejected with a reason from `REASONS` and a
detail naming what it collided with. Nothing here reads files, models or the store: the caller
embeds the texts (rows L2-normalised) and passes arrays, so every rule is testable on fakes. The
word n-gram index and the lexical shortlist are loop/targeted/lexical.py's.

An item is the pair (question, answer): question = instruction + input, answer = the output.
On a task with a fixed instruction the caller passes only what varies (`loop.core.template`): shared
template text must not make two items look alike. Two items are "the same item" when their
questions match exactly, or their questions are close in embedding space *and* their answers
agree. Question similarity alone is not enough: on
template-heavy tasks ("Convert 5 hours to minutes" vs "Convert 7 hours to minutes") unrelated
items score above 0.9 while a reworded copy of one item can score 0.85. And agreeing on a rare
answer ("720", a JSON record) is strong evidence of the same item, agreeing on a common answer
("positive", `{}`, `[]`) is not: such answers need a near-verbatim question (close in embedding
*and* in characters, with the same numbers), so "yes" and "yes please", or "13" and "14",
answered `{}` stay two items while the same short input with the same answer is one.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from evals.answers import canonical_answer
from loop.targeted.lexical import NgramIndex, ngram_overlap, words

REASONS = ("failed_suite", "unparseable", "contaminated", "duplicate", "over_budget")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")


@dataclass(frozen=True)
class CurateConfig:
    ngram: int = 13  # n-gram length for overlap (GPT-3 / lm-eval decontamination use 13)
    ngram_overlap: float = 0.5  # share of a reference's distinctive n-grams found in an item
    template_df: int = 5  # an n-gram in this many documents is template text, not item content
    contamination_similarity: float = 0.8  # question cosine, when the answers agree
    label_similarity: float = 0.95  # ... when the shared answer is a label many items have
    verbatim_ratio: float = 0.9  # ... and the questions' characters match this much (difflib)
    label_count: int = 5  # an answer this frequent (and 1% of all answers) is a label
    benchmark_similarity: float = 0.9  # question cosine against benchmark questions (no answers)
    duplicate_similarity: float = 0.95  # question cosine, when the answers agree
    answer_similarity: float = 0.9  # long free-text answers agree above this cosine


@dataclass(frozen=True)
class Item:
    """One candidate as curation sees it. `reason` is set when a strategy already rejected it."""

    key: str
    question: str
    answer: str
    group: str  # the failure cluster it targets ("replay" for replayed train rows)
    priority: int = 0  # higher first (reviewer corrections)
    rank: int = 0  # position within its strategy's list for this group
    replay: bool = False
    reason: str | None = None
    detail: str = ""
    own_ref: str = ""  # a reference this item may contain (a reviewer's correction of a dev item)


@dataclass(frozen=True)
class Reference:
    """An evaluation item that training data must not contain. `answer` None: question-only."""

    label: str  # e.g. "test:3f2a..." or "benchmark:arc_easy/test.jsonl:17"
    question: str
    answer: str | None = None


@dataclass(frozen=True)
class Vectors:
    """L2-normalised embeddings: items' questions and answers, references' questions and answers
    (answers of question-only references may be any row; they are never read)."""

    item_q: np.ndarray
    item_a: np.ndarray
    ref_q: np.ndarray
    ref_a: np.ndarray


@dataclass(frozen=True)
class Decision:
    key: str
    accepted: bool
    reason: str | None = None
    detail: str = ""


# ---------------------------------------------------------------------------- normalisation

def norm_text(text: str) -> str:
    """Case, punctuation and whitespace removed: the key for exact matches."""
    return " ".join(words(text))


def norm_answer(text: str) -> str:
    """Structured answers compare by their parsed value, others by their words
    (`evals.answers.canonical_answer`)."""
    return canonical_answer(text)


def answers_agree(a: str, b: str, cosine: float, threshold: float) -> bool:
    """Equal after normalisation; or long free text close in meaning with the same numbers.
    Short and structured answers never agree by embedding: '300' and '420' are near in space."""
    na, nb = norm_answer(a), norm_answer(b)
    if na == nb:
        return True
    if na.startswith(("{", "[")) or len(na.split()) < 5 or len(nb.split()) < 5:
        return False
    return cosine >= threshold and sorted(_NUMBER.findall(a)) == sorted(_NUMBER.findall(b))


def near_verbatim(a: str, b: str, ratio: float) -> bool:
    """Nearly the same characters after normalisation, and the same numbers: what a common
    answer needs before two questions count as one item."""
    na, nb = norm_text(a), norm_text(b)
    if sorted(_NUMBER.findall(na)) != sorted(_NUMBER.findall(nb)):
        return False
    return na == nb or difflib.SequenceMatcher(None, na, nb, autojunk=False).ratio() >= ratio


def common_answers(answers: Sequence[str], config: CurateConfig) -> set[str]:
    """Normalised answers given label_count times and by 1% of all: labels, `{}`, `[]`."""
    counts = Counter(norm_answer(a) for a in answers)
    floor = max(config.label_count, 0.01 * sum(counts.values()))
    return {a for a, count in counts.items() if count >= floor}


# ---------------------------------------------------------------------------- contamination

def contamination(items: Sequence[Item], refs: Sequence[Reference], vectors: Vectors,
                  indexes: Sequence[NgramIndex], config: CurateConfig,
                  background_answers: Sequence[str] = ()) -> list[str | None]:
    """For each item, a detail naming the reference it leaks, or None when clean. Rules, in order:
    exact question match; n-gram overlap >= ngram_overlap of a reference's distinctive n-grams;
    question cosine >= contamination_similarity with agreeing answers (label_similarity when
    the answer is a label: given label_count times and by 1% of the references and
    `background_answers`, e.g. the train pool's outputs), or >= benchmark_similarity for
    question-only references."""
    exact: dict[str, list[int]] = {}
    for i, ref in enumerate(refs):
        exact.setdefault(norm_text(ref.question), []).append(i)
    labels = common_answers([r.answer for r in refs if r.answer is not None]
                            + list(background_answers), config)
    out: list[str | None] = []
    for start in range(0, len(items), 256):  # bounded memory against large benchmark sets
        chunk = items[start:start + 256]
        sims = vectors.item_q[start:start + 256] @ vectors.ref_q.T if len(refs) else None
        for offset, item in enumerate(chunk):
            row = None if sims is None else sims[offset]
            out.append(_leak(item, start + offset, row, refs, vectors, indexes, exact, labels,
                             config))
    return out


def _leak(item: Item, i: int, sims, refs, vectors: Vectors, indexes: Sequence[NgramIndex],
          exact: dict, labels: set[str], config: CurateConfig) -> str | None:
    for hit in exact.get(norm_text(item.question), ()):
        if refs[hit].label != item.own_ref:
            return f"same question as {refs[hit].label}"
    for index in indexes:
        share, doc = ngram_overlap(index, f"{item.question}\n{item.answer}", item.own_ref)
        if share >= config.ngram_overlap:
            return f"{index.n}-gram overlap {share:.2f} with {index.labels[doc]}"
    if sims is None:
        return None
    for j in np.flatnonzero(sims >= min(config.contamination_similarity,
                                        config.benchmark_similarity)):
        ref = refs[j]
        if ref.label == item.own_ref:
            continue
        if ref.answer is None:
            if sims[j] >= config.benchmark_similarity:
                return f"question similarity {sims[j]:.2f} with {ref.label}"
        elif _same_item(item.question, item.answer, ref.question, ref.answer, float(sims[j]),
                        float(vectors.item_a[i] @ vectors.ref_a[j]), labels, config):
            return f"question similarity {sims[j]:.2f} and same answer as {ref.label}"
    return None


def _same_item(q1: str, a1: str, q2: str, a2: str, q_cos: float, a_cos: float,
               labels: set[str], config: CurateConfig) -> bool:
    """Close questions with agreeing answers; a common answer also needs near-verbatim text."""
    if norm_answer(a2) in labels:
        return q_cos >= config.label_similarity and answers_agree(
            a1, a2, a_cos, config.answer_similarity) and near_verbatim(q1, q2,
                                                                        config.verbatim_ratio)
    return q_cos >= config.contamination_similarity and answers_agree(
        a1, a2, a_cos, config.answer_similarity)


# ---------------------------------------------------------------------------- selection

def precedence(items: Sequence[Item]) -> list[int]:
    """The order in which items claim their place: priority, then rank (which interleaves the
    strategies of a cluster), then input order."""
    return sorted(range(len(items)), key=lambda i: (-items[i].priority, items[i].rank, i))


def duplicates(items: Sequence[Item], order: Sequence[int], q_vecs: np.ndarray,
               a_vecs: np.ndarray, config: CurateConfig,
               labels: set[str] = frozenset()) -> dict[int, str]:
    """Greedy: walking `order`, an item that is the same item as an earlier kept one is a
    duplicate (detail names the kept key); a common answer (`labels`, normalised) also needs a
    near-verbatim question. Returns {index: detail} for the duplicates."""
    kept: list[int] = []
    by_question: dict[str, int] = {}
    dups: dict[int, str] = {}
    for i in order:
        q = norm_text(items[i].question)
        if q in by_question:
            dups[i] = f"same question as {items[by_question[q]].key}"
            continue
        if kept:
            sims = q_vecs[kept] @ q_vecs[i]
            for pos in np.flatnonzero(sims >= config.duplicate_similarity):
                j = kept[pos]
                if not answers_agree(items[i].answer, items[j].answer,
                                     float(a_vecs[i] @ a_vecs[j]), config.answer_similarity):
                    continue
                if norm_answer(items[j].answer) not in labels or near_verbatim(
                        items[i].question, items[j].question, config.verbatim_ratio):
                    dups[i] = f"near duplicate ({sims[pos]:.2f}) of {items[j].key}"
                    break
            if i in dups:
                continue
        kept.append(i)
        by_question[q] = i
    return dups


def balance(items: Sequence[Item], order: Sequence[int], n: int,
            group_order: Sequence[str] = (), weights: dict[str, float] | None = None) -> list[int]:
    """Up to n indices, shared over failure clusters in proportion to `weights` (equal when
    None; a group without a weight gets the largest one): each pick goes to the group with the
    fewest picks per unit of weight (ties: `group_order`). A group that runs out of candidates
    leaves its share to the others."""
    queues: dict[str, list[int]] = {g: [] for g in group_order}
    for i in order:
        queues.setdefault(items[i].group, []).append(i)
    weights = weights or {}
    top = max(weights.values(), default=1.0) or 1.0
    weight = {g: max(weights.get(g, top), 1e-9) for g in queues}
    taken = dict.fromkeys(queues, 0)
    rank = {g: k for k, g in enumerate(queues)}
    chosen: list[int] = []
    while len(chosen) < n:
        open_groups = [g for g in queues if taken[g] < len(queues[g])]
        if not open_groups:
            break
        g = min(open_groups, key=lambda g: ((taken[g] + 1) / weight[g], rank[g]))
        chosen.append(queues[g][taken[g]])
        taken[g] += 1
    return chosen


def allocate(n: int, weights: dict[str, float]) -> dict[str, int]:
    """`n` shared in proportion to `weights` (largest remainders, ties in dict order), at least
    one each while n allows: the per-cluster quota that targeting asks candidates for."""
    if not weights:
        return {}
    total = sum(weights.values()) or 1.0
    exact = {g: n * w / total for g, w in weights.items()}
    out = {g: int(v) for g, v in exact.items()}
    for g in sorted(exact, key=lambda g: -(exact[g] - int(exact[g])))[:n - sum(out.values())]:
        out[g] += 1
    if n >= len(weights):  # every cluster gets at least one, taken from the largest
        for g in [g for g, v in out.items() if v == 0]:
            out[max(out, key=out.get)] -= 1
            out[g] = 1
    return out


def curate(items: Sequence[Item], vectors: Vectors, refs: Sequence[Reference],
           indexes: Sequence[NgramIndex], n: int, n_replay: int = 0,
           config: CurateConfig = CurateConfig(), group_order: Sequence[str] = (),
           background_answers: Sequence[str] = (),
           weights: dict[str, float] | None = None) -> list[Decision]:
    """Decide every item, in input order. Targeted items: strategy rejections, contamination,
    duplicates, then `n` kept by cluster balance (shares by `weights`). Replay items (original
    train rows) pass the same filters, then the first `n_replay` of them are kept."""
    leaks = contamination(items, refs, vectors, indexes, config, background_answers)
    reasons: dict[int, tuple[str, str]] = {}
    for i, item in enumerate(items):
        if item.reason:
            reasons[i] = (item.reason, item.detail)
        elif leaks[i]:
            reasons[i] = ("contaminated", leaks[i])
    order = [i for i in precedence(items) if i not in reasons]
    targeted = [i for i in order if not items[i].replay]
    replay = [i for i in order if items[i].replay]
    # targeted first, so a replayed row never displaces the example that was meant to fix a failure
    labels = common_answers([r.answer for r in refs if r.answer is not None]
                            + list(background_answers), config)
    dups = duplicates(items, targeted + replay, vectors.item_q, vectors.item_a, config, labels)
    reasons.update({i: ("duplicate", d) for i, d in dups.items()})
    chosen = set(balance(items, [i for i in targeted if i not in dups], n, group_order,
                         weights))
    chosen |= set([i for i in replay if i not in dups][:n_replay])
    for i in order:
        if i not in reasons and i not in chosen:
            budget = n_replay if items[i].replay else n
            kind = "replay" if items[i].replay else "targeted"
            reasons[i] = ("over_budget", f"{kind} budget of {budget} reached")
    return [Decision(item.key, i not in reasons, *reasons.get(i, (None, "")))
            for i, item in enumerate(items)]
