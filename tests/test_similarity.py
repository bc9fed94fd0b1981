"""Embedding similarity with the embedded MiniLM: ordering and the DuckDB cache."""

from __future__ import annotations

from evals.similarity import CachedEmbedder, Embedder, cosine_pairs
from loop.store.db import Store


def test_paraphrase_is_closer_than_unrelated_text_and_cache_avoids_reencoding(workspace):
    with Store(workspace) as store:
        embedder = CachedEmbedder(store, Embedder())
        ref = "The package will arrive within three business days."
        sims = cosine_pairs(embedder, ["Your parcel should be delivered in three working days.",
                                       "Bananas are rich in potassium."], [ref, ref])
        assert sims[0] > sims[1] + 0.3
        assert embedder.encoded == 3  # the reference is encoded once
    with Store(workspace) as store:  # a new process-level cache: vectors come from DuckDB
        again = CachedEmbedder(store, Embedder())
        assert cosine_pairs(again, ["Bananas are rich in potassium."], [ref]) == [sims[1]]
        assert again.encoded == 0
        assert store.count("embeddings") == 3
