"""The targeted-data stage: failures of a dev run -> strategies -> curation -> a JSONL dataset.

    result = generate_targeted(store, load_task("task.toml"), run_id)   # a dev eval run
    print(format_result(result))   # loop.targeted.batch

Failures are mined from the dev split only; test items are never used to build data and, with
dev items and configured benchmark questions, are what curation decontaminates against. Every
candidate becomes a `generated_examples` row (strategy, cluster, failure ids, source, status,
reason); the accepted ones are written to `<out_dir>/<batch_id>.jsonl` in the task record format
with a manifest beside it, and a `datasets` row (loop/targeted/batch.py writes them). A batch
that is already complete is returned as stored, so re-running a cycle stage never duplicates
rows. Config: the task TOML's [targeted].
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from loop.targeted import curate as cur
from loop.targeted.lexical import lexical_shortlist
from loop.targeted.answer_classes import PoolAnswers, balanced_order
from loop.targeted.batch import TargetedResult, stored_result, write_batch
from loop.core.errors import TaskDataError
from loop.core.paths import path_part
from loop.core.records import content_hash
from loop.core.settings import TargetedSettings
from loop.store.db import Store
from loop.targeted.candidates import Candidate, ClusterTarget, Request, StrategyContext, question
from loop.targeted.retrieval import fixability, replay_like
from loop.targeted.strategies import CORRECTIONS_GROUP, STRATEGIES
from loop.targeted.synthesis import answer_check, resolve_generator
from loop.targeted.inputs import (
    FailureSet,
    NoFailuresError,
    batch_identity,
    curate_config,
    load_corrections,
    load_failures,
    model_name,
    targeted_config,
)
from loop.data.tasks import Task
from loop.targeted.references import CurationReferences, EmbeddingMemo, curation_references
from loop.targeted.teacher import Teacher, make_teacher

__all__ = ["NoFailuresError", "generate_targeted"]

log = logging.getLogger(__name__)

OVERSAMPLE = 1.5  # candidates asked per accepted example wanted: curation drops some
MAX_ROUNDS = 3  # top-up rounds for clusters whose candidates were rejected


# ---------------------------------------------------------------------------- embeddings + checks

def default_embedder(store: Store):
    """The scoring side's embedder (default all-MiniLM-L6-v2), cached in the store."""
    from evals.similarity import CachedEmbedder
    from loop.store.embeddings import EmbeddingCache

    return CachedEmbedder(EmbeddingCache(store))


# ---------------------------------------------------------------------------- the stage

def generate_targeted(store: Store, task: Task, run_id: str | None = None, *,
                      model: str | None = None, strategies: Sequence[str] | None = None,
                      n: int | None = None, seed: int | None = None, batch_id: str | None = None,
                      out_dir: str | Path | None = None, embedder=None,
                      teacher: Teacher | None = None, failures: FailureSet | None = None,
                      progress: bool = False) -> TargetedResult:
    """Build (or return the stored) targeted dataset for the failures of a dev run: `run_id`,
    else the latest dev run of `model`, else the latest dev run (or `failures` given directly).
    Keyword arguments override the task's [targeted] section."""
    cfg = targeted_config(task.settings, strategies=strategies, n=n, seed=seed)
    failures = failures or load_failures(store, task, run_id, model)
    _check_dev_only(task, failures)
    params = {"task": task.name, "data_hash": task.data_hash, "run_id": failures.run_id,
              **batch_identity(cfg)}
    batch_id = batch_id or content_hash("targeted", params)
    out_dir = Path(out_dir) if out_dir else store.workspace / "data" / path_part(task.name)
    stored = stored_result(store, batch_id, content_hash(params))
    if stored is not None:
        return stored
    embed = EmbeddingMemo(embedder or default_embedder(store))
    pool = tuple(task.splits.get("train", ()))
    vary = task.varying_part()
    bonus = _loss_bonus(store, task, pool, model_name(store, failures.model_id),
                        cfg.loss_weight, progress) \
        if cfg.loss_weight > 0 and "retrieval" in cfg.strategies and pool else None
    ctx = StrategyContext(
        seed=cfg.seed, pool=pool, embed=embed, vary=vary, pool_bonus=bonus,
        answers=PoolAnswers([e.output for e in pool], task.answers),
        generator=(cfg.generator, resolve_generator(cfg.generator)) if cfg.generator else None,
        teacher=teacher or (make_teacher(cfg.teacher) if cfg.teacher else None),
        per_prompt=cfg.teacher.per_prompt if cfg.teacher else 3, check=answer_check(task),
        corrections=load_corrections(store, task) if "corrections" in cfg.strategies else (),
        cluster_of={f.example.id: c.cluster_id for c in failures.clusters for f in c.failures})
    refs = curation_references(task, cfg, vary)
    dev = {e.id: e for e in task.splits.get("dev", ())}
    passed = [dev[i] for i in failures.passed if i in dev]
    items, decisions = _rounds(ctx, cfg, failures, batch_id, refs, passed, progress)
    return write_batch(store, task, failures, batch_id, out_dir, params, items, decisions)


def _loss_bonus(store: Store, task: Task, pool: Sequence, model: str, weight: float,
                progress: bool) -> np.ndarray:
    """`weight` x each pool row's answer-loss percentile under the model that failed (1 = the
    answer it knows least): among rows equally near a failure, retrieval takes the unknown
    ones first."""
    from scipy.stats import rankdata

    from loop.models.answer_loss import answer_losses
    from loop.models.loading import load_model

    losses = answer_losses(load_model(model), pool, task.settings.system_prompt, progress=progress)
    return weight * rankdata(losses) / len(losses)


def random_pool_rows(store: Store, task: Task, n: int, seed: int = 0,
                     exclude: set[str] | frozenset = frozenset(), embedder=None,
                     power: float = 1.0) -> list:
    """`n` pool rows drawn at random (seeded), skipping `exclude` ids, through the same
    decontamination and duplicate rules as targeted data: the baseline targeting must beat
    (bench/targeted_vs_random.py). `power` < 1 draws answer classes in proportion to
    freq ** power instead of freq (answer_classes.balanced_order)."""
    cfg = targeted_config(task.settings, seed=seed)
    pool = [e for e in task.splits.get("train", ()) if e.id not in exclude]
    order = np.random.default_rng(seed).permutation(len(pool)) if power == 1 else \
        balanced_order([e.output for e in pool], task.answers, seed,
                       power)
    vary = task.varying_part()
    ctx = StrategyContext(seed=seed, pool=tuple(pool), embed=EmbeddingMemo(embedder or
                                                                    default_embedder(store)),
                          vary=vary)
    refs = curation_references(task, cfg, vary)
    chosen: list = []
    for start in range(0, len(order), 2 * n):  # curation drops a few: draw again until n
        block = [pool[i] for i in order[start:start + 2 * n]]
        items = [(e.id, Candidate(e, "replay", "replay", (), {"pool_id": e.id}), k)
                 for k, e in enumerate(block)]
        decisions = _curate(ctx, cfg, items, refs, len(block), ["replay"], {"replay": 1.0})
        chosen += [e for e, d in zip(block, decisions) if d.accepted]
        if len(chosen) >= n:
            break
    return chosen[:n]


def _check_dev_only(task: Task, failures: FailureSet) -> None:
    dev = {e.id for e in task.splits.get("dev", ())}
    outside = [f.example.id for c in failures.clusters for f in c.failures if f.example.id not in dev]
    if outside:
        raise TaskDataError(f"{len(outside)} failure(s) are not dev items of task '{task.name}' "
                            f"(e.g. {outside[0]}): targeted data is built from dev failures only.")


def _gen_id(batch_id: str, cand: Candidate) -> str:
    ex = cand.example
    return content_hash(batch_id, cand.strategy, cand.cluster_id, cand.source, ex.instruction,
                        ex.input, ex.output)


def cluster_weights(ctx: StrategyContext, clusters: Sequence[ClusterTarget]) -> dict[str, float]:
    """A cluster's share of the budget: its size, scaled by how fixable it is from the pool
    (the share of its failures some pool row has everything for), so a 3-item cluster does
    not get what a 60-item one gets, and a cluster the pool cannot teach gets less."""
    return {c.cluster_id: len(c.failures) * (0.25 + 0.75 * fixability(ctx, c)) for c in clusters}


def _rounds(ctx: StrategyContext, cfg: TargetedSettings, failures: FailureSet, batch_id: str,
            refs: CurationReferences, passed: Sequence, progress: bool):
    """Ask every strategy for candidates per cluster (budget shared by cluster weight), curate,
    and top up the clusters short of their share (new seeds and further neighbours) for at
    most MAX_ROUNDS rounds."""
    clusters = failures.clusters
    producing = max(1, len([s for s in cfg.strategies if s != "corrections"]))
    weights = cluster_weights(ctx, clusters) if "retrieval" in cfg.strategies else \
        {c.cluster_id: float(len(c.failures)) for c in clusters}
    quota = cur.allocate(cfg.n, weights)
    want = {c.cluster_id: math.ceil(quota[c.cluster_id] * OVERSAMPLE / producing)
            for c in clusters}
    n_replay = round(cfg.n * cfg.replay_share / (1 - cfg.replay_share))
    replayed = [(c, i) for i, c in enumerate(replay_like(ctx, passed, 2 * n_replay + 10))] \
        if n_replay else []
    groups = [c.cluster_id for c in clusters] + [CORRECTIONS_GROUP]
    found: dict[str, tuple[Candidate, int]] = {}
    offsets: Counter = Counter()
    for round_ in range(MAX_ROUNDS):
        before = len(found)
        for name in cfg.strategies:
            requests = [Request(c, want[c.cluster_id], offsets[name, c.cluster_id], round_)
                        for c in clusters if want[c.cluster_id] > 0]
            seen: Counter = Counter()
            for cand in STRATEGIES[name](ctx, requests):
                rank = offsets[name, cand.cluster_id] + seen[cand.cluster_id]
                seen[cand.cluster_id] += 1
                found.setdefault(_gen_id(batch_id, cand), (cand, rank))
            for r in requests:
                offsets[name, r.cluster.cluster_id] += r.want
        items = [(k, c, r) for k, (c, r) in found.items()]
        items += [(_gen_id(batch_id, c), c, r) for c, r in replayed]
        decisions = _curate(ctx, cfg, items, refs, n_replay, groups, weights)
        kept = Counter(c.cluster_id for (_, c, _), d in zip(items, decisions)
                       if d.accepted and c.strategy != "replay")
        spare = Counter(c.cluster_id for (_, c, _), d in zip(items, decisions)
                        if d.reason == "over_budget" and c.strategy != "replay")
        if progress or log.isEnabledFor(logging.INFO):
            log.info("targeted round %d: %d candidates, %d accepted of %d", round_ + 1,
                     len(items), sum(kept.values()), cfg.n)
        # a cluster below its share with no spare candidates needs more; one with spares is
        # only held back by the total budget
        short = {c.cluster_id: quota[c.cluster_id] - kept[c.cluster_id] for c in clusters
                 if kept[c.cluster_id] < quota[c.cluster_id] and not spare[c.cluster_id]}
        if not short or len(found) == before:
            break
        want = {c.cluster_id: math.ceil(2 * short.get(c.cluster_id, 0) / producing)
                for c in clusters}
    total = sum(kept.values())
    if total < cfg.n:
        log.warning("targeted: %d examples accepted of %d requested", total, cfg.n)
        # keep the replay share of what was actually accepted, not of what was asked for
        n_final = round(total * cfg.replay_share / (1 - cfg.replay_share))
        decisions = _curate(ctx, cfg, items, refs, n_final, groups, weights)
    return items, decisions


def _curate(ctx: StrategyContext, cfg: TargetedSettings, items, refs: CurationReferences, n_replay: int,
            group_order: list[str], weights: dict[str, float]):
    vary = ctx.vary or (lambda text: text)
    cur_items = [cur.Item(key, vary(question(c.example)), c.example.output, c.cluster_id,
                          c.priority, rank, c.strategy == "replay", c.reason, c.detail,
                          c.own_ref)
                 for key, c, rank in items]
    # embed only the benchmark questions that share words with some candidate
    shortlist = lexical_shortlist([i.question for i in cur_items],
                                  [b.question for b in refs.bench]) if refs.bench else []
    checked = refs.task + [refs.bench[j] for j in shortlist]
    vectors = cur.Vectors(ctx.embed([i.question for i in cur_items]),
                          ctx.embed([i.answer for i in cur_items]),
                          ctx.embed([r.question for r in checked]),
                          ctx.embed([r.answer or "" for r in checked]))
    return cur.curate(cur_items, vectors, checked, refs.indexes, cfg.n, n_replay,
                      curate_config(cfg), group_order, [e.output for e in ctx.pool], weights)
