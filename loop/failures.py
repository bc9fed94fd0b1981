"""Failure records and failure clusters (pure functions over records and arrays).

A prediction fails when a required check fails; the failure carries the categories of every check
it failed. Failing inputs are clustered deterministically (agglomerative, average linkage on
cosine distance, items in id order), each cluster named by its dominant example category, its
dominant failure category and its top TF-IDF terms. Cluster ids hash their member ids, so
clustering the same failures twice gives the same ids.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from evals.suites import ItemScore
from loop.records import Example, content_hash


@dataclass(frozen=True)
class Failure:
    example_id: str
    prediction_id: str
    example_category: str
    categories: tuple[str, ...]
    failed_checks: tuple[str, ...]
    similarity: float
    text: str  # what the model was asked: instruction + input


@dataclass(frozen=True)
class Cluster:
    cluster_id: str
    label: str
    dominant_category: str
    top_terms: tuple[str, ...]
    example_ids: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.example_ids)


def collect_failures(examples: Sequence[Example], prediction_ids: Sequence[str],
                     scores: Sequence[ItemScore], similarities: Sequence[float]) -> list[Failure]:
    out = []
    for example, pid, score, sim in zip(examples, prediction_ids, scores, similarities):
        if score.passed:
            continue
        categories = score.categories or ("wrong_answer",)
        out.append(Failure(example.id, pid, example.category, tuple(categories),
                           tuple(r.check for r in score.checks if not r.passed), float(sim),
                           f"{example.instruction}\n{example.input}".strip()))
    return out


def cluster_failures(failures: Sequence[Failure], vectors: np.ndarray,
                     distance_threshold: float = 0.35, max_terms: int = 3) -> list[Cluster]:
    """Group failures whose inputs are close in embedding space (vectors row-aligned)."""
    if not failures:
        return []
    order = sorted(range(len(failures)), key=lambda k: failures[k].example_id)
    items, vecs = [failures[k] for k in order], vectors[order]
    labels = _cluster_labels(vecs, distance_threshold)
    terms = _top_terms([f.text for f in items], labels, max_terms)
    clusters = []
    for label in sorted(set(labels.tolist())):
        members = [f for f, lab in zip(items, labels) if lab == label]
        dominant = Counter(c for f in members for c in f.categories).most_common(1)[0][0]
        slice_name = Counter(f.example_category for f in members).most_common(1)[0][0]
        ids = tuple(f.example_id for f in members)
        top = terms.get(label, ())
        clusters.append(Cluster(content_hash("cluster", ids, length=12),
                                f"{slice_name}/{dominant}: {' '.join(top)}".strip(),
                                dominant, top, ids))
    return sorted(clusters, key=lambda c: (-c.size, c.cluster_id))


MAX_EXACT = 2000  # average linkage needs all pairwise distances: O(n^2) memory beyond this


def _cluster_labels(vecs: np.ndarray, distance_threshold: float) -> np.ndarray:
    """Agglomerative clusters (cosine, average linkage). Above MAX_EXACT failures, a seeded
    sample of MAX_EXACT is clustered and every other failure joins the cluster whose centroid
    is nearest, so 20,000 failures need megabytes, not the gigabytes of 2e8 distances."""
    from sklearn.cluster import AgglomerativeClustering

    if len(vecs) == 1:
        return np.zeros(1, dtype=int)
    exact = np.arange(len(vecs)) if len(vecs) <= MAX_EXACT else np.sort(
        np.random.default_rng(0).choice(len(vecs), MAX_EXACT, replace=False))
    sample_labels = AgglomerativeClustering(
        n_clusters=None, metric="cosine", linkage="average",
        distance_threshold=distance_threshold).fit_predict(vecs[exact])
    if len(exact) == len(vecs):
        return sample_labels
    unit = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    centroids = np.stack([unit[exact[sample_labels == c]].mean(axis=0)
                          for c in range(sample_labels.max() + 1)])
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    labels = np.concatenate([np.argmax(unit[i:i + 4096] @ centroids.T, axis=1)
                             for i in range(0, len(unit), 4096)])
    labels[exact] = sample_labels
    return labels


def _top_terms(texts: list[str], labels: np.ndarray, k: int) -> dict[int, tuple[str, ...]]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    try:
        vectorizer = TfidfVectorizer(stop_words="english", token_pattern=r"(?u)\b[a-zA-Z]{3,}\b")
        matrix = vectorizer.fit_transform(texts)
    except ValueError:  # no usable vocabulary
        return {}
    vocab = np.array(vectorizer.get_feature_names_out())
    out = {}
    for label in set(labels.tolist()):
        mean = np.asarray(matrix[labels == label].mean(axis=0)).ravel()
        best = np.argsort(-mean, kind="stable")[:k]
        out[label] = tuple(vocab[i] for i in best if mean[i] > 0)
    return out


def summarize(failures: Sequence[Failure], clusters: Sequence[Cluster], n_items: int) -> dict:
    """Per category and per cluster: count, share of evaluated items, two example ids."""
    by_cat: dict[str, list[str]] = {}
    for f in failures:
        for c in f.categories:
            by_cat.setdefault(c, []).append(f.example_id)
    return {
        "n_items": n_items, "n_failures": len(failures),
        "categories": [{"category": c, "count": len(ids), "share": len(ids) / n_items,
                        "examples": ids[:2]}
                       for c, ids in sorted(by_cat.items(), key=lambda x: -len(x[1]))],
        "clusters": [{"cluster_id": c.cluster_id, "label": c.label, "size": c.size,
                      "share": c.size / n_items, "dominant_category": c.dominant_category,
                      "top_terms": list(c.top_terms), "examples": list(c.example_ids[:2]),
                      "example_ids": list(c.example_ids)} for c in clusters],
    }
