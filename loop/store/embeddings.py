"""The `embeddings` table as the vector cache of `evals.similarity.CachedEmbedder`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from loop.store.db import Store
from loop.store.rows import EmbeddingRow, write

INSERT_SLICE = 4096  # embeddings per store insert


class EmbeddingCache:
    """Vectors keyed by (text hash, embedder name) in the store (a `VectorCache`)."""

    def __init__(self, store: Store):
        self.store = store

    def get(self, model: str, text_hashes: Sequence[str]) -> dict[str, np.ndarray]:
        rows = self.store.query(
            "SELECT text_hash, vector FROM embeddings WHERE embed_model = ? AND "
            "list_contains(?, text_hash)", [model, list(text_hashes)])
        return {r["text_hash"]: np.asarray(r["vector"], np.float32) for r in rows}

    def put(self, model: str, vectors: Mapping[str, np.ndarray]) -> None:
        keys = list(vectors)
        # in slices: a vector as a Python list costs ~10x its array, so 100,000 at once would be
        # gigabytes of transient memory
        for start in range(0, len(keys), INSERT_SLICE):
            write(self.store, [EmbeddingRow(h, model, vectors[h].tolist())
                               for h in keys[start:start + INSERT_SLICE]])
