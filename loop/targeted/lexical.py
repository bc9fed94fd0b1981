"""Word-level overlap, for decontamination: hashed word n-grams of reference documents with
template text left out (`build_ngram_index`, `ngram_overlap`: the GPT-3 / lm-eval 13-gram rule),
and a lexical shortlist of the references worth embedding at all (`lexical_shortlist`). Pure:
texts in, arrays and indices out; loop.targeted.curate applies them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Lower-cased word tokens: what n-grams and exact-match keys are made of."""
    return _WORD.findall(text.lower())


def gram_hashes(text: str, n: int) -> np.ndarray:
    """Unique hashed word n-grams; a text shorter than n is one gram (so short items still match).
    Python's str hash is salted per process: an index is only used in the process that built it."""
    toks = words(text)
    if not toks:
        return np.empty(0, dtype=np.int64)
    if len(toks) < n:
        return np.array([hash(" ".join(toks))], dtype=np.int64)
    return np.unique(np.array([hash(" ".join(toks[i:i + n])) for i in range(len(toks) - n + 1)],
                              dtype=np.int64))


@dataclass(frozen=True)
class NgramIndex:
    """Distinctive n-grams of reference documents, sorted by hash for vectorised lookup."""

    n: int
    hashes: np.ndarray  # sorted
    docs: np.ndarray  # reference index of each hash entry
    sizes: np.ndarray  # distinctive n-grams per reference
    labels: tuple[str, ...]


def build_ngram_index(texts: Sequence[str], labels: Sequence[str], n: int = 13,
                      template_df: int = 5, background: Sequence[str] = ()) -> NgramIndex:
    """Index the references' n-grams, leaving out template text: n-grams found in `template_df`
    or more documents of references + background (e.g. the train pool, which shares the task's
    instruction templates). Without this, a long shared instruction would match every item."""
    grams = [gram_hashes(t, n) for t in texts]
    pool = [gram_hashes(t, n) for t in background]
    everything = np.concatenate(grams + pool) if grams or pool else np.empty(0, dtype=np.int64)
    uniq, df = np.unique(everything, return_counts=True)
    template = uniq[df >= template_df]
    kept = [g[~np.isin(g, template)] for g in grams]
    docs = np.concatenate([np.full(len(g), i, dtype=np.int64) for i, g in enumerate(kept)]
                          or [np.empty(0, dtype=np.int64)])
    hashes = np.concatenate(kept or [np.empty(0, dtype=np.int64)])
    order = np.argsort(hashes, kind="stable")
    return NgramIndex(n=n, hashes=hashes[order], docs=docs[order],
                      sizes=np.array([len(g) for g in kept], dtype=np.int64), labels=tuple(labels))


def ngram_overlap(index: NgramIndex, text: str, skip: str = "") -> tuple[float, int]:
    """(best share of one reference's distinctive n-grams present in `text`, that reference);
    the reference labelled `skip` is left out."""
    grams = gram_hashes(text, index.n)
    if not len(grams) or not len(index.hashes):
        return 0.0, -1
    lo = np.searchsorted(index.hashes, grams, side="left")
    hi = np.searchsorted(index.hashes, grams, side="right")
    hits = np.concatenate([index.docs[a:b] for a, b in zip(lo, hi) if b > a]
                          or [np.empty(0, dtype=np.int64)])
    if not len(hits):
        return 0.0, -1
    counts = np.bincount(hits, minlength=len(index.sizes))
    share = counts / np.maximum(index.sizes, 1)
    if skip in index.labels:
        share[index.labels.index(skip)] = 0.0
    best = int(np.argmax(share))
    return float(share[best]), best


def lexical_shortlist(item_texts: Sequence[str], ref_texts: Sequence[str],
                      min_share: float = 0.3, max_df: float = 0.01) -> list[int]:
    """Indices of references that share at least `min_share` of their distinctive words (3+
    letters, in at most `max_df` of the references) with some item. Only these can reach a high
    question cosine, so only these need embedding: this keeps tens of thousands of benchmark
    questions from being encoded on every run. A heuristic: a paraphrase that replaces nearly
    every word escapes it (the n-gram and exact checks still see the whole set)."""
    ref_words = [{w for w in words(t) if len(w) > 2} for t in ref_texts]
    df = Counter(w for ws in ref_words for w in ws)
    cap = max(2, max_df * len(ref_texts))
    postings: dict[str, list[int]] = {}
    sizes = []
    for j, ws in enumerate(ref_words):
        rare = [w for w in ws if df[w] <= cap]
        sizes.append(len(rare))
        for w in rare:
            postings.setdefault(w, []).append(j)
    keep: set[int] = set()
    for text in item_texts:
        hits = Counter(j for w in set(words(text)) for j in postings.get(w, ()))
        keep.update(j for j, count in hits.items() if count >= min_share * sizes[j])
    return sorted(keep)
