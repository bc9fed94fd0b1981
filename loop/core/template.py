"""What a task's items share (a fixed instruction, a template) and what varies between them.

    template = Template.fit([user_message(e) for e in examples])
    template.varying("Extract the slots ... Message: 13")   # -> "Message: 13"

Real tasks ask one fixed instruction for every row; embedded whole, two rows look alike because of
the instruction, not because of what the user wrote. Clustering, retrieval and curation therefore
compare only the varying part. A word n-gram is template text when it occurs in at least `share`
of the fitted texts (and in `min_docs` of them); the words it covers are dropped. Pure and
deterministic: no model, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

_WORD = re.compile(r"\S+")
_MULT = np.int64(1_000_003)


def _word_codes(words: Sequence[str], vocab: dict[str, int]) -> np.ndarray:
    return np.fromiter((vocab.setdefault(w.lower(), len(vocab) + 1) for w in words),
                       dtype=np.int64, count=len(words))


def _gram_hashes(codes: np.ndarray, n: int) -> np.ndarray:
    """Rolling hash of each window of n word codes (int64 wrap-around is fine for a hash)."""
    if len(codes) < n:
        return np.empty(0, dtype=np.int64)
    out = np.zeros(len(codes) - n + 1, dtype=np.int64)
    with np.errstate(over="ignore"):
        for k in range(n):
            out = out * _MULT + codes[k:len(codes) - n + 1 + k]
    return out


@dataclass(frozen=True)
class Template:
    """Sorted hashes of the word n-grams shared by most texts of a task."""

    n: int
    grams: np.ndarray
    vocab: dict[str, int]
    n_texts: int

    @classmethod
    def fit(cls, texts: Iterable[str], n: int = 4, share: float = 0.5,
            min_docs: int = 3) -> Template:
        texts = list(texts)
        vocab: dict[str, int] = {}
        per_doc = [np.unique(_gram_hashes(_word_codes(_WORD.findall(t), vocab), n))
                   for t in texts]
        grams = np.empty(0, dtype=np.int64)
        if per_doc:
            uniq, df = np.unique(np.concatenate(per_doc), return_counts=True)
            grams = uniq[df >= max(min_docs, share * len(texts))]
        return cls(n=n, grams=grams, vocab=vocab, n_texts=len(texts))

    def template_mask(self, text: str) -> tuple[list[re.Match], np.ndarray]:
        """The text's words and, per word, whether a template n-gram covers it."""
        matches = list(_WORD.finditer(text))
        covered = np.zeros(len(matches), dtype=bool)
        if not len(self.grams) or len(matches) < self.n:
            return matches, covered
        codes = np.fromiter((self.vocab.get(m.group().lower(), 0) for m in matches),
                            dtype=np.int64, count=len(matches))
        hits = np.flatnonzero(np.isin(_gram_hashes(codes, self.n), self.grams))
        for k in range(self.n):
            covered[hits + k] = True
        return matches, covered

    def varying(self, text: str) -> str:
        """`text` without its template words (line breaks kept); the whole text when nothing
        would be left, so an item that is all template still has something to compare."""
        matches, covered = self.template_mask(text)
        if not covered.any():
            return text.strip()
        if covered.all():
            return text.strip()
        lines: list[list[str]] = [[]]
        last = 0
        for m, is_template in zip(matches, covered):
            lines.extend([] for _ in range(text.count("\n", last, m.start())))
            last = m.start()
            if not is_template:
                lines[-1].append(m.group())
        return "\n".join(" ".join(words) for words in lines if words)

    def shared_share(self, text: str) -> float:
        """The share of the text's words that are template words."""
        _, covered = self.template_mask(text)
        return float(covered.mean()) if len(covered) else 0.0
