"""Failure records and failure clusters (pure functions over records and arrays).

A prediction fails when a required check fails; the failure carries the categories of every check
it failed and its signatures (`evals.signatures`: what went wrong, by the reference's shape).

Clusters combine *what went wrong* with *what varied*. On a task with one fixed instruction the
whole prompt is mostly the same text, so a failure is embedded by `Template.varying` of its user
message (the input, the requested slot), and it is described by its cluster keys: its signatures,
plus what the reference expected when the signature alone is coarse (`invalid_json` on a `{}`
answer is another failure than on a `{"pickup_time": ...}` answer). Clustering is agglomerative,
average linkage, on a mixed cosine similarity

    sim = (1 - w) * cos(varying-text vectors) + w * cos(unit one-hot of cluster keys)

With w = 0.5 and a 0.35 distance threshold, failures without a shared key are never merged
(their distance is at least 0.5) and failures with the same keys merge while their inputs are
moderately alike (text distance below 0.7): the signature decides the cluster, the input splits
it. One mixed distance rather than "group by signature, then cluster each group" lets failures
with overlapping signature sets (two missing keys, one of them shared) still meet. A base model
that fails every item the same way (`invalid_json`) still splits: an empty expected answer is
a key as strong as a signature, each expected key or element a weaker one (PART_WEIGHT).

Clusters are named by their dominant signatures and two typical inputs, e.g.
`missing_key:pickup_time · "around 10:30", "at noon"`. Cluster ids hash their member ids, so
clustering the same failures twice gives the same ids.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from evals.answers import AnswerModel
from evals.signatures import Signature, expected_parts, signatures
from evals.suites import ItemScore
from loop.core.prompts import user_message
from loop.core.records import Example, content_hash
from loop.core.template import Template

SIGNATURE_WEIGHT = 0.5
COARSE = {"invalid_json"}  # signatures that say nothing about what the reference wanted
# Cluster keys added to a coarse signature: whether the reference is empty weighs as much as a
# signature (answering {} is another skill than extracting), each expected key or element less,
# so references that share some parts ("booking, change" and "booking") still group by input.
EMPTY, NONEMPTY, PART = "expects:nothing", "expects:something", "expects:"
PART_WEIGHT = 0.5
QUOTE_CHARS = 28


@dataclass(frozen=True)
class Failure:
    example_id: str
    prediction_id: str
    example_category: str
    categories: tuple[str, ...]
    failed_checks: tuple[str, ...]
    similarity: float
    text: str  # what varies in what the model was asked (the whole user message without template)
    signatures: tuple[str, ...] = ()
    expected: tuple[str, ...] = ()  # the reference's keys / elements (`evals.signatures`)

    @property
    def keys(self) -> tuple[str, ...]:
        """What clusters group on: the signatures, and what the reference expected when
        every signature is coarse."""
        sigs = self.signatures or self.categories
        if all(s in COARSE for s in sigs) and self.expected:
            empty = self.expected in (("{}",), ("[]",))
            return tuple(sigs) + (EMPTY if empty else NONEMPTY,) + (
                () if empty else tuple(f"{PART}{p}" for p in self.expected))
        return tuple(sigs)


@dataclass(frozen=True)
class Cluster:
    cluster_id: str
    label: str
    dominant_category: str
    top_terms: tuple[str, ...]
    example_ids: tuple[str, ...]
    signatures: tuple[str, ...] = ()  # the members' dominant signatures

    @property
    def size(self) -> int:
        return len(self.example_ids)


def collect_failures(examples: Sequence[Example], prediction_ids: Sequence[str],
                     scores: Sequence[ItemScore], similarities: Sequence[float],
                     outputs: Sequence[str] | None = None, template: Template | None = None,
                     answers: AnswerModel = AnswerModel()) -> list[Failure]:
    """Failed items as records. `outputs` (row-aligned) give signatures, else the categories
    stand in; `template` (fitted on all the task's user messages) strips shared text;
    `answers` is the task's answer model (`Task.answers`: kind and label set). Signatures are
    kept in their stored form (`str(Signature)`, never clipped)."""
    out = []
    for k, (example, pid, score, sim) in enumerate(zip(examples, prediction_ids, scores,
                                                       similarities)):
        if score.passed:
            continue
        categories = tuple(score.categories or ("wrong_answer",))
        message = user_message(example)
        sigs = (tuple(str(s) for s in signatures(answers, example.output, outputs[k],
                                                 categories, source=message))
                if outputs is not None else categories)
        out.append(Failure(example.id, pid, example.category, categories,
                           tuple(r.check for r in score.checks if not r.passed), float(sim),
                           template.varying(message) if template else message.strip(),
                           sigs, expected_parts(example.output)))
    return out


def cluster_failures(failures: Sequence[Failure], vectors: np.ndarray,
                     distance_threshold: float = 0.35, max_terms: int = 3,
                     signature_weight: float = SIGNATURE_WEIGHT) -> list[Cluster]:
    """Group failures by cluster keys and varying input (vectors: embeddings of `f.text`,
    row-aligned with `failures`)."""
    if not failures:
        return []
    order = sorted(range(len(failures)), key=lambda k: failures[k].example_id)
    items, text = [failures[k] for k in order], _unit(np.asarray(vectors, dtype=np.float32)[order])
    keys = _key_matrix([f.keys for f in items])
    labels = _cluster_labels(text, keys, distance_threshold, signature_weight)
    terms = _top_terms([f.text for f in items], labels, max_terms)
    quote = _quoter([f.text for f in items])
    clusters = []
    for label in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == label)
        members = [items[i] for i in idx]
        dominant = Counter(c for f in members for c in f.categories).most_common(1)[0][0]
        sigs = _dominant(members)
        ids = tuple(f.example_id for f in members)
        centre = text[idx].mean(axis=0)
        typical = [items[i].text for i in idx[np.argsort(-(text[idx] @ centre), kind="stable")]]
        clusters.append(Cluster(content_hash("cluster", ids, length=12),
                                _name(members, sigs, typical, quote), dominant,
                                terms.get(label, ()), ids, sigs))
    return sorted(clusters, key=lambda c: (-c.size, c.cluster_id))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _key_matrix(rows: Sequence[Sequence[str]]):
    """Sparse weighted one-hot of each failure's cluster keys, rows scaled to unit length
    (an expected part weighs PART_WEIGHT, every other key 1)."""
    from scipy.sparse import csr_matrix

    vocab: dict[str, int] = {}
    indptr, indices, data = [0], [], []
    for keys in rows:
        weights: dict[int, float] = {}
        for k in keys:
            part = k.startswith(PART) and k not in (EMPTY, NONEMPTY)
            weights[vocab.setdefault(k, len(vocab))] = PART_WEIGHT if part else 1.0
        cols = sorted(weights)
        norm = np.sqrt(sum(w * w for w in weights.values())) or 1.0
        indices += cols
        data += [weights[c] / norm for c in cols]
        indptr.append(len(indices))
    return csr_matrix((np.asarray(data, dtype=np.float32), indices, indptr),
                      shape=(len(rows), max(len(vocab), 1)))


MAX_EXACT = 2000  # average linkage needs all pairwise distances: O(n^2) memory beyond this
BLOCK = 4096


def _cluster_labels(text: np.ndarray, keys, distance_threshold: float,
                    weight: float = SIGNATURE_WEIGHT) -> np.ndarray:
    """Agglomerative clusters (average linkage on the mixed cosine distance). Above MAX_EXACT
    failures, a seeded sample of MAX_EXACT is clustered and every other failure joins the
    cluster whose centroid is most similar, block by block, so 20,000 failures need megabytes,
    not the gigabytes of 2e8 distances. `text` rows are unit vectors, `keys` a sparse matrix."""
    from scipy.sparse import csr_matrix
    from sklearn.cluster import AgglomerativeClustering

    n = len(text)
    if n == 1:
        return np.zeros(1, dtype=int)
    exact = np.arange(n) if n <= MAX_EXACT else np.sort(
        np.random.default_rng(0).choice(n, MAX_EXACT, replace=False))
    t, k = text[exact], keys[exact]
    sim = (1 - weight) * (t @ t.T) + weight * (k @ k.T).toarray()
    distance = np.clip(1.0 - sim, 0.0, 2.0).astype(np.float64)
    sample_labels = AgglomerativeClustering(
        n_clusters=None, metric="precomputed", linkage="average",
        distance_threshold=distance_threshold).fit_predict(distance)
    if len(exact) == n:
        return sample_labels
    n_clusters = sample_labels.max() + 1
    member = csr_matrix((np.ones(len(exact), dtype=np.float32), (sample_labels,
                         np.arange(len(exact)))), shape=(n_clusters, len(exact)))
    sizes = np.asarray(member.sum(axis=1)).ravel()[:, None]
    text_centroids = np.asarray(member @ t) / sizes
    key_centroids = (member @ k).multiply(1.0 / sizes).tocsr()
    labels = np.concatenate([np.argmax(
        (1 - weight) * (text[i:i + BLOCK] @ text_centroids.T)
        + weight * (keys[i:i + BLOCK] @ key_centroids.T).toarray(), axis=1)
        for i in range(0, n, BLOCK)])
    labels[exact] = sample_labels
    return labels


def _dominant(members: Sequence[Failure], k: int = 2) -> tuple[str, ...]:
    """Signatures held by at least half the members (at most k), else the most common one."""
    counts = Counter(s for f in members for s in (f.signatures or f.categories))
    ranked = sorted(counts.items(), key=lambda x: (-x[1], x[0]))
    common = [s for s, c in ranked if c * 2 >= len(members)][:k]
    return tuple(common or [ranked[0][0]])


_FIELD = re.compile(r"^[A-Za-z][\w ]{0,30}:\s+")  # a field name opening a line ("Message: ")


def _quoter(texts: Sequence[str]):
    """Short quotes of what varies: the input's rarest line among the failing inputs (the
    user's message rather than a requested-slot line many share), without a field name that
    opens many lines, so the quote shows what the user wrote."""
    lines = [[line.strip() for line in t.splitlines() if line.strip()] for t in texts]
    line_df = Counter(line for ls in lines for line in set(ls))
    field_df = Counter(m.group() for ls in lines for line in set(ls) if (m := _FIELD.match(line)))

    def quote(text: str) -> str:
        own = [line.strip() for line in text.splitlines() if line.strip()] or [text.strip()]
        line = min(reversed(own), key=lambda x: line_df[x])  # ties: the later line
        field = _FIELD.match(line)
        if field and field_df[field.group()] >= 3 and line[field.end():].strip():
            line = line[field.end():]
        shown = " ".join(line.split())
        return shown if len(shown) <= QUOTE_CHARS else shown[:QUOTE_CHARS - 3] + "..."

    return quote


def _name(members: Sequence[Failure], sigs: tuple[str, ...], typical: Sequence[str],
          quote) -> str:
    name = " + ".join(Signature.parse(s).display() for s in sigs)
    if all(s in COARSE for s in sigs):
        expected = Counter(p for f in members for p in f.expected).most_common(2)
        if expected:
            name += f" (expects {', '.join(p for p, _ in expected)})"
    quotes = []
    for text in typical:
        q = quote(text)
        if q and q not in quotes:
            quotes.append(q)
        if len(quotes) == 2:
            break
    shown = ", ".join(json.dumps(q, ensure_ascii=False) for q in quotes)
    return f"{name} · {shown}" if quotes else name


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


def signature_counts(rows: Sequence[tuple[str, Sequence[str]]], n_items: int) -> list[dict]:
    """Per signature, over (example id, signatures) rows: count, share of evaluated items and
    two example ids, most common first."""
    by_sig: dict[str, list[str]] = {}
    for example_id, sigs in rows:
        for s in sigs:
            by_sig.setdefault(s, []).append(example_id)
    return [{"signature": s, "count": len(ids), "share": len(ids) / max(n_items, 1),
             "examples": ids[:2]}
            for s, ids in sorted(by_sig.items(), key=lambda x: (-len(x[1]), x[0]))]


def summarize(failures: Sequence[Failure], clusters: Sequence[Cluster], n_items: int) -> dict:
    """Per category, per signature and per cluster: count, share of evaluated items, two
    example ids."""
    by_cat: dict[str, list[str]] = {}
    for f in failures:
        for c in f.categories:
            by_cat.setdefault(c, []).append(f.example_id)
    return {
        "n_items": n_items, "n_failures": len(failures),
        "categories": [{"category": c, "count": len(ids), "share": len(ids) / n_items,
                        "examples": ids[:2]}
                       for c, ids in sorted(by_cat.items(), key=lambda x: -len(x[1]))],
        "signatures": signature_counts(
            [(f.example_id, f.signatures or f.categories) for f in failures], n_items),
        "clusters": [cluster_row(c.cluster_id, c.label, c.size, n_items, c.dominant_category,
                                 c.top_terms, c.example_ids, c.signatures) for c in clusters],
    }


def cluster_row(cluster_id: str, label: str, size: int, n_items: int, dominant_category: str,
                top_terms: Sequence[str], example_ids: Sequence[str],
                signatures: Sequence[str] | None) -> dict:
    return {"cluster_id": cluster_id, "label": label, "size": size,
            "share": size / max(n_items, 1), "dominant_category": dominant_category,
            "signatures": list(signatures or ()), "top_terms": list(top_terms),
            "examples": list(example_ids[:2]), "example_ids": list(example_ids)}
