"""Pool rows chosen by nearness: the `retrieval` strategy (rows near a cluster's failing inputs
that have what the failures lack, read from their signatures), `coverage` rows (a seeded draw of
rows of the references' shape, for clusters whose failures are all format-only), and `replay`
(original rows near the dev items the model passed, so that passing skills are kept).
`nearest` is the chunked top-k search they share.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from evals.answers import AnswerModel, shape
from evals.signatures import Signature, is_format_only, signatures
from loop.core.prompts import user_message
from loop.core.records import Example
from loop.targeted.answer_classes import Need, PoolAnswers, needs
from loop.targeted.candidates import (
    Candidate,
    ClusterTarget,
    FailureCase,
    Request,
    StrategyContext,
    as_train,
    derive_seed,
    varying,
)


NEED_BONUS = 2.0  # above any cosine gap: a row with what the failure lacks ranks first
CONTRAST_EVERY = 4  # one contrast query (the confused label) per this many confused failures


def _pool_answers(ctx: StrategyContext) -> PoolAnswers:
    return ctx.answers or PoolAnswers([e.output for e in ctx.pool], AnswerModel("text"))


def failure_signatures(case: FailureCase, answers: AnswerModel) -> tuple[Signature, ...]:
    """What went wrong, as records: signed again from the reference and the output with the
    task's answer model (the same function made the stored strings, and records need no
    string splitting)."""
    return signatures(answers, case.example.output, case.output, case.categories,
                      source=user_message(case.example))


def failure_needs(case: FailureCase, answers: PoolAnswers) -> tuple[tuple[Need, ...],
                                                                    tuple[Need, ...]]:
    """The failure's (primary, contrast) needs (`answer_classes.needs`)."""
    return needs(failure_signatures(case, answers.answers), case.example.output)


@dataclass(frozen=True)
class _Query:
    failure: int  # index in the cluster's failures
    needs: tuple[Need, ...]
    role: str  # "primary" | "contrast"


def _queries(cluster: ClusterTarget, answers: PoolAnswers) -> list[_Query]:
    """One primary query per failure; contrast queries for each confused label, one per
    CONTRAST_EVERY failures that confused it (so "a few", in proportion)."""
    out, confused = [], defaultdict(list)
    for fi, case in enumerate(cluster.failures):
        primary, contrast = failure_needs(case, answers)
        out.append(_Query(fi, primary, "primary"))
        for need in contrast:
            confused[need].append(fi)
    for need, fis in confused.items():
        out += [_Query(fi, (need,), "contrast") for fi in fis[::CONTRAST_EVERY]]
    return out


def _meets(answers: PoolAnswers, wanted: tuple[Need, ...], cache: dict) -> np.ndarray:
    """Per pool row, the share of `wanted` its reference meets."""
    if wanted not in cache:
        cache[wanted] = np.mean([answers.mask(n) for n in wanted], axis=0) if wanted else \
            np.zeros(len(answers.members))
    return cache[wanted]


def fixability(ctx: StrategyContext, cluster: ClusterTarget) -> float:
    """The share of the cluster's failures for which some pool row has everything it lacks."""
    if not cluster.failures or not ctx.pool:
        return 0.0
    answers, cache = _pool_answers(ctx), {}
    return float(np.mean([_meets(answers, failure_needs(f, answers)[0], cache).max() >= 1
                          for f in cluster.failures]))


def format_only(ctx: StrategyContext, cluster: ClusterTarget) -> bool:
    """Whether every failure of the cluster is a format failure only (`invalid_json`, or a label
    outside the task's set): the model did not answer in the task's form at all, so the failure
    shows what the reference is, not what the model got wrong."""
    answers = _pool_answers(ctx).answers
    return bool(cluster.failures) and all(is_format_only(failure_signatures(case, answers))
                                          for case in cluster.failures)


def retrieval(ctx: StrategyContext, requests: Sequence[Request]) -> list[Candidate]:
    """Pool rows near the failing inputs (varying parts), those meeting the failure's needs
    first, interleaved over the cluster's failures so that every failure gets rows; coverage
    rows for format-only clusters."""
    if not ctx.pool or not requests:
        return []
    coverage = [r for r in requests if format_only(ctx, r.cluster)]
    out = _coverage(ctx, coverage) if coverage else []
    requests = [r for r in requests if r not in coverage]
    if not requests:
        return out
    pool_vecs = ctx.embed([varying(ctx, e) for e in ctx.pool])
    answers, cache = _pool_answers(ctx), {}
    for req in requests:
        fails = req.cluster.failures
        queries = _queries(req.cluster, answers)
        stop = req.offset + req.want
        vecs = ctx.embed([varying(ctx, f.example) for f in fails])
        meets = [_meets(answers, q.needs, cache) for q in queries]  # shared arrays, not copies
        # Each query's `stop` best rows hold `stop` distinct rows, enough for the picks.
        extra = 0.0 if ctx.pool_bonus is None else ctx.pool_bonus
        ranked, sims = nearest(vecs[[q.failure for q in queries]], pool_vecs, stop,
                               bonus=lambda lo, hi: NEED_BONUS * np.stack(meets[lo:hi]) + extra)
        for j, qi in _interleave(ranked, stop)[req.offset:]:
            q = queries[qi]
            out.append(Candidate(
                as_train(ctx.pool[j]), "retrieval", req.cluster.cluster_id,
                (fails[q.failure].example.id,),
                {"pool_id": ctx.pool[j].id, "similarity": round(float(sims[qi, j]), 4),
                 "role": q.role, "meets": round(float(meets[qi][j]), 3),
                 "needs": [f"{n.op}:{n.value}"[:80] for n in q.needs]}))
    return out


def _coverage(ctx: StrategyContext, requests: Sequence[Request]) -> list[Candidate]:
    """Per format-only cluster, a seeded random order of the pool rows whose reference has the
    shape of the cluster's references (a JSON object, a list, other: in a task that mixes
    skills, a failed JSON skill draws JSON rows), seeded by the cluster and read from the
    request's offset: rounds continue the stream; a row two clusters draw is one duplicate for
    curation, as with retrieval."""
    shapes = [shape(e.output) for e in ctx.pool]
    out = []
    for req in requests:
        cid = req.cluster.cluster_id
        wanted = {shape(f.example.output) for f in req.cluster.failures}
        order = [int(j) for j in np.random.default_rng(derive_seed("coverage", ctx.seed, cid))
                 .permutation(len(ctx.pool)) if shapes[int(j)] in wanted]
        for j in order[req.offset:req.offset + req.want]:
            out.append(Candidate(as_train(ctx.pool[int(j)]), "coverage", cid,
                                 tuple(f.example.id for f in req.cluster.failures[:3]),
                                 {"pool_id": ctx.pool[int(j)].id, "role": "coverage"}))
    return out


def _interleave(ranked: np.ndarray, stop: int) -> list[tuple[int, int]]:
    """(row, query) picks, one new row per query per pass: a query whose next row another
    query took moves on to its next one, so queries with the same neighbours still each get
    their share. The sequence does not depend on `stop`, so later rounds continue it."""
    picked: list[tuple[int, int]] = []
    seen: set[int] = set()
    ptr = [0] * len(ranked)
    while len(picked) < stop:
        before = len(picked)
        for qi, row in enumerate(ranked):
            while ptr[qi] < len(row) and int(row[ptr[qi]]) in seen:
                ptr[qi] += 1
            if ptr[qi] < len(row) and len(picked) < stop:
                seen.add(int(row[ptr[qi]]))
                picked.append((int(row[ptr[qi]]), qi))
        if len(picked) == before:
            break
    return picked


def nearest(queries: np.ndarray, rows: np.ndarray, k: int, chunk: int = 256,
            bonus: Callable[[int, int], np.ndarray] | None = None,
            ) -> tuple[np.ndarray, dict[tuple[int, int], float]]:
    """Per query, the indices of its k most similar rows (dot product, plus `bonus(lo, hi)` for
    queries lo..hi when given), best first, ties by index (what a stable full argsort gives),
    and {(query, row): similarity} for them (the plain dot product).

    Queries go in chunks and only the top k survive each, so memory stays O(chunk x rows)
    rather than O(queries x rows) for a 100,000-row pool.
    """
    k = min(k, len(rows))
    ranked = np.empty((len(queries), k), dtype=np.int64)
    sims: dict[tuple[int, int], float] = {}
    for start in range(0, len(queries), chunk):
        plain = queries[start:start + chunk] @ rows.T
        block = plain if bonus is None else plain + bonus(start, start + len(plain))
        for offset, row in enumerate(block):
            # every row tied with the k-th best is kept, so the stable order is exact
            kth = np.partition(row, len(row) - k)[len(row) - k]
            candidates = np.flatnonzero(row >= kth)
            order = candidates[np.lexsort((candidates, -row[candidates]))][:k]
            ranked[start + offset] = order
            sims.update({(start + offset, int(j)): float(plain[offset, j]) for j in order})
    return ranked, sims


def replay(pool: Sequence[Example], k: int, seed: int) -> list[Candidate]:
    """A seeded sample of original train rows, mixed in to limit forgetting."""
    rng = np.random.default_rng(derive_seed("replay", seed))
    picks = rng.permutation(len(pool))[:k] if len(pool) else []
    return [Candidate(as_train(pool[i]), "replay", "replay", (), {"pool_id": pool[i].id})
            for i in picks]


REPLAY_PER_PASSED = 3  # pool rows replayed near one passed dev item, at most


def replay_like(ctx: StrategyContext, passed: Sequence[Example], k: int) -> list[Candidate]:
    """Replay that keeps passing skills: pool rows nearest to the dev items the model passed,
    interleaved over them, at most REPLAY_PER_PASSED per item (one passed item must not fill the
    replay with its near copies); the rest a seeded random sample."""
    if not passed or not ctx.pool:
        return replay(ctx.pool, k, ctx.seed)
    order = np.random.default_rng(derive_seed("replay", ctx.seed)).permutation(len(passed))
    like = [passed[i] for i in order]
    depth = min(len(ctx.pool), REPLAY_PER_PASSED, max(1, math.ceil(k / len(like))) + 2)
    ranked, _ = nearest(ctx.embed([varying(ctx, e) for e in like]),
                        ctx.embed([varying(ctx, e) for e in ctx.pool]), depth)
    picks: dict[int, str] = {}
    for d in range(ranked.shape[1]):
        for li in range(len(like)):
            picks.setdefault(int(ranked[li, d]), like[li].id)
    chosen = list(picks.items())[:k]
    if len(chosen) < k:  # few passed items or a small pool: top up at random
        chosen += [(int(i), "") for i in np.random.default_rng(ctx.seed).permutation(
            len(ctx.pool)) if int(i) not in picks][:k - len(chosen)]
    return [Candidate(as_train(ctx.pool[i]), "replay", "replay", (),
                      {"pool_id": ctx.pool[i].id, **({"like": who} if who else {})})
            for i, who in chosen]
