"""What targeted data is checked against, shared by the targeted stage and preference pairs:
the task's dev and test items and the configured benchmark questions (with n-gram indexes), and
a per-stage embedding memo.

    embed = EmbeddingMemo(default_embedder(store))
    refs = curation_references(task, task.settings.targeted, task.varying_part())
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from loop.core.settings import TargetedSettings
from loop.targeted import curate as cur
from loop.targeted.lexical import NgramIndex, build_ngram_index
from loop.targeted.inputs import benchmark_questions, curate_config
from loop.targeted.candidates import question


class EmbeddingMemo:
    """Any `encode(list[str]) -> array` embedder, with rows renormalised and each text encoded
    once per stage (the scoring embedder also caches across runs in DuckDB)."""

    def __init__(self, embedder):
        self.embedder, self.cache, self.dim = embedder, {}, None

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if missing or self.dim is None:
            batch = missing or [""]
            vecs = np.asarray(self.embedder.encode(batch), dtype=np.float32)
            vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
            self.dim = vecs.shape[1]
            self.cache.update(zip(batch, vecs))
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self.cache[t] for t in texts])


@dataclass(frozen=True)
class CurationReferences:
    """What curation checks against: task items (dev, test) and benchmark questions."""

    task: list[cur.Reference]
    bench: list[cur.Reference]
    indexes: list[NgramIndex]


def curation_references(task, cfg: TargetedSettings, vary: Callable[[str], str]
                        ) -> CurationReferences:
    """Dev and test items (varying question + answer) and benchmark questions, with n-gram
    indexes. Template text is left out, so only what varies can make two items the same."""
    refs = [cur.Reference(f"{split}:{e.id}", vary(question(e)), e.output)
            for split in ("dev", "test") for e in task.splits.get(split, ())]
    pool_texts = [f"{vary(question(e))}\n{e.output}" for e in task.splits.get("train", ())]
    c = curate_config(cfg)
    indexes = [build_ngram_index([f"{r.question}\n{r.answer}" for r in refs],
                                     [r.label for r in refs], c.ngram, c.template_df, pool_texts)]
    bench = benchmark_questions(cfg.benchmark_data) if cfg.benchmark_data else []
    if bench:
        indexes.append(build_ngram_index([b.question for b in bench], [b.label for b in bench],
                                             c.ngram, c.template_df))
    return CurationReferences(refs, bench, indexes)
