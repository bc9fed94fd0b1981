"""Failure records and deterministic clusters."""

from __future__ import annotations

import numpy as np

from evals.rules import CheckInput
from evals.suites import DEFAULT_SUITE, score_suite
from loop.failures import cluster_failures, collect_failures, summarize
from loop.records import Example


def _failures():
    examples = [Example(f"d{i}", "Convert the date to ISO format.", "2020-01-0%d" % (i + 1),
                        input=f"January {i + 1}, 2020", category="date") for i in range(4)]
    examples += [Example(f"s{i}", "Classify the sentiment.", "positive",
                         input=f"Great product number {i}", category="sentiment")
                 for i in range(3)]
    outputs = ["January 1, 2020"] * 4 + ["The sentiment is positive and I am sure"] * 3
    scores = score_suite(DEFAULT_SUITE, [CheckInput(e.instruction, e.input, e.output, o)
                                         for e, o in zip(examples, outputs)])
    return collect_failures(examples, [f"p{e.id}" for e in examples], scores, [0.5] * 7)


def test_failures_carry_categories_and_failed_checks():
    failures = _failures()
    assert len(failures) == 7
    assert all("wrong_answer" in f.categories and "exact_match" in f.failed_checks
               for f in failures)


def test_clusters_split_by_input_and_are_deterministic():
    failures = _failures()
    rng = np.random.default_rng(0)
    base = {"date": rng.normal(size=8), "sentiment": rng.normal(size=8)}
    vectors = np.stack([base[f.example_category] + 0.01 * rng.normal(size=8) for f in failures])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    first = cluster_failures(failures, vectors)
    shuffled = list(reversed(failures))
    second = cluster_failures(shuffled, vectors[::-1].copy())
    assert [c.cluster_id for c in first] == [c.cluster_id for c in second]
    assert sorted(c.size for c in first) == [3, 4]
    assert first[0].label.startswith("date/wrong_answer")
    summary = summarize(failures, first, n_items=10)
    assert summary["clusters"][0]["share"] == 0.4 and len(summary["clusters"][0]["examples"]) == 2


def test_many_failures_are_clustered_in_bounded_memory_like_the_exact_method(monkeypatch):
    """Above MAX_EXACT, a seeded sample is clustered and the rest join the nearest centroid:
    well separated groups come out the same as with exact clustering."""
    import loop.failures as failures

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 16)) * 5
    vecs = np.concatenate([c + rng.normal(scale=0.05, size=(60, 16)) for c in centres])
    exact = failures._cluster_labels(vecs, 0.35)
    monkeypatch.setattr(failures, "MAX_EXACT", 50)
    sampled = failures._cluster_labels(vecs, 0.35)
    assert len(set(exact.tolist())) == 4
    # the same partition (label numbers may differ)
    assert len({(a, b) for a, b in zip(exact.tolist(), sampled.tolist())}) == 4
    assert (failures._cluster_labels(vecs, 0.35) == sampled).all()  # seeded
