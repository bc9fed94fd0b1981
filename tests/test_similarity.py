"""Embedding similarity with the embedded MiniLM: ordering and the vector cache (DuckDB, or any
object with get/put)."""

from __future__ import annotations

import numpy as np

from evals.similarity import CachedEmbedder, Embedder, cosine_pairs
from loop.store.db import Store
from loop.store.embeddings import EmbeddingCache


def test_paraphrase_is_closer_than_unrelated_text_and_cache_avoids_reencoding(workspace):
    with Store(workspace) as store:
        embedder = CachedEmbedder(EmbeddingCache(store), Embedder())
        ref = "The package will arrive within three business days."
        sims = cosine_pairs(embedder, ["Your parcel should be delivered in three working days.",
                                       "Bananas are rich in potassium."], [ref, ref])
        assert sims[0] > sims[1] + 0.3
        assert embedder.encoded == 3  # the reference is encoded once
    with Store(workspace) as store:  # a new process-level cache: vectors come from DuckDB
        again = CachedEmbedder(EmbeddingCache(store), Embedder())
        assert cosine_pairs(again, ["Bananas are rich in potassium."], [ref]) == [sims[1]]
        assert again.encoded == 0
        assert store.count("embeddings") == 3


class CountingEncoder:
    """A fake embedder: a text's vector is its length and vowel count (no model to load)."""
    name = "fake"

    def __init__(self):
        self.encoded = 0

    def encode(self, texts):
        self.encoded += len(texts)
        return np.array([[len(t), sum(c in "aeiou" for c in t)] for t in texts], np.float32)


class DictCache:
    def __init__(self):
        self.vectors: dict[tuple[str, str], np.ndarray] = {}

    def get(self, model, text_hashes):
        return {h: self.vectors[model, h] for h in text_hashes if (model, h) in self.vectors}

    def put(self, model, vectors):
        self.vectors.update({(model, h): v for h, v in vectors.items()})


def test_any_cache_with_get_and_put_is_filled_once_and_read_back():
    cache = DictCache()
    first = CachedEmbedder(cache, CountingEncoder())
    vectors = first.encode(["abc", "hello", "abc"])
    assert first.encoded == 2 and len(cache.vectors) == 2
    again = CachedEmbedder(cache, CountingEncoder())
    assert np.array_equal(again.encode(["hello", "abc", "abc"]), vectors[[1, 0, 2]])
    assert again.encoded == 0
    assert again.encode([]).shape == (0, 384)
