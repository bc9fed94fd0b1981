"""Targeted-data strategies: each turns failure clusters into candidate training examples.

    candidates = STRATEGIES["retrieval"](ctx, [Request(cluster, want=20, offset=0, round=0)])

A strategy is `(StrategyContext, Sequence[Request]) -> list[Candidate]`; a request asks for
`want` more candidates for one cluster, continuing its stream from `offset` (so a second round
gets new ones). Strategies propose; `loop.targeted.curate` decides. Registered strategies:

  retrieval    pool rows near the cluster's failing inputs (template text removed) that have
               what the failures lack (read from their signatures: the missing key, the label
               the model confused, the reference's shape), plus a few of the confused label.
               A cluster whose failures are all format-only (no JSON, a label outside the set)
               says nothing about content: it gets a seeded random draw of the pool instead
               ("coverage" rows; docs/targeting.md measured retrieval no better than random
               draws there, and worse on one task)
  generator    a task generator function (`[targeted] generator = "demo"` or "module:function")
  teacher      a stronger model writes new pairs from the failing items (loop.targeted.teacher)
  corrections  reviewer-corrected outputs, with priority
"""

from __future__ import annotations

import difflib
import importlib
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from loop.targeted import curate as cur
from evals.answers import AnswerModel, shape
from evals.signatures import Signature, is_format_only, signatures
from loop.targeted.answer_classes import Need, PoolAnswers, needs
from loop.core.errors import ConfigError
from loop.core.prompts import user_message
from loop.core.records import Example, content_hash
from loop.data.tasks import Task
from loop.targeted.teacher import FailureView, Teacher, parse_pairs, teacher_prompt

log = logging.getLogger(__name__)

CORRECTIONS_GROUP = "corrections"  # the cluster of a correction whose item is not a failure here


@dataclass(frozen=True)
class FailureCase:
    example: Example  # the failing dev item: input and reference
    output: str  # what the model answered
    categories: tuple[str, ...]  # failure categories (wrong_answer, format, ...)
    signatures: tuple[str, ...] = ()  # as stored (missing_key:k, label:g->p, ...), for people


@dataclass(frozen=True)
class ClusterTarget:
    cluster_id: str
    label: str
    failures: tuple[FailureCase, ...]


@dataclass(frozen=True)
class Correction:
    correction_id: str
    example: Example  # the corrected item, with its split
    corrected_output: str
    prediction_id: str | None = None
    reviewer: str | None = None


@dataclass(frozen=True)
class Candidate:
    """A proposed training example and where it came from. `reason` set: already rejected."""

    example: Example
    strategy: str
    cluster_id: str
    failure_ids: tuple[str, ...]
    source: dict = field(default_factory=dict)
    priority: int = 0
    reason: str | None = None
    detail: str = ""
    own_ref: str = ""  # the dev item a correction rewrites: not contamination for that one


@dataclass(frozen=True)
class Request:
    cluster: ClusterTarget
    want: int
    offset: int
    round: int


Embed = Callable[[Sequence[str]], np.ndarray]  # texts -> L2-normalised rows
Generator = Callable[[str, int, int], list[Example]]  # (category, n, seed) -> examples
AnswerCheck = Callable[[Sequence[Example]], list[str | None]]  # -> failure detail or None


@dataclass(frozen=True)
class StrategyContext:
    seed: int
    pool: tuple[Example, ...]  # the task's train split
    embed: Embed
    generator: tuple[str, Generator] | None = None
    teacher: Teacher | None = None
    per_prompt: int = 3
    check: AnswerCheck | None = None
    corrections: tuple[Correction, ...] = ()
    cluster_of: dict[str, str] = field(default_factory=dict)  # failing example id -> cluster
    vary: Callable[[str], str] | None = None  # question -> its varying part (loop.core.template)
    answers: PoolAnswers | None = None  # the pool's references read with the task's answer model
    pool_bonus: np.ndarray | None = None  # per pool row, added to its retrieval score


def question(example: Example) -> str:
    return user_message(example)


def varying(ctx: StrategyContext, example: Example) -> str:
    """What retrieval compares: the question without the task's shared template text."""
    return ctx.vary(question(example)) if ctx.vary else question(example)


def derive_seed(*parts: object) -> int:
    return int(content_hash(*parts, length=8), 16)


def _as_train(example: Example, output: str | None = None) -> Example:
    out = example.output if output is None else output
    return Example(Example.make_id(example.instruction, example.input, out), example.instruction,
                   out, example.input, example.category, "train")


# ---------------------------------------------------------------------------- strategies

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
                _as_train(ctx.pool[j]), "retrieval", req.cluster.cluster_id,
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
            out.append(Candidate(_as_train(ctx.pool[int(j)]), "coverage", cid,
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


def generator(ctx: StrategyContext, requests: Sequence[Request]) -> list[Candidate]:
    """New examples from the task's generator, for the categories of the cluster's failures
    (shared out in proportion, at least one each), with a seed per cluster, category and round."""
    if ctx.generator is None:
        raise ConfigError("The 'generator' strategy needs [targeted] generator = NAME in the "
                          f"task TOML (known: {', '.join(sorted(GENERATORS))}, or module:function).")
    name, fn = ctx.generator
    out: list[Candidate] = []
    for req in requests:
        cats = Counter(f.example.category for f in req.cluster.failures)
        total = sum(cats.values())
        for cat, count in sorted(cats.items()):
            k = max(1, math.ceil(req.want * count / total))
            seed = derive_seed(ctx.seed, req.cluster.cluster_id, cat, req.round)
            try:
                made = fn(cat, k, seed)
            except ValueError as exc:  # the generator does not know this category
                log.warning("generator %s made nothing for category %s: %s", name, cat, exc)
                continue
            ids = tuple(f.example.id for f in req.cluster.failures if f.example.category == cat)
            out += [Candidate(_as_train(ex), "generator", req.cluster.cluster_id, ids,
                              {"generator": name, "seed": seed, "category": cat, "index": i})
                    for i, ex in enumerate(made)]
    return out


def teacher(ctx: StrategyContext, requests: Sequence[Request]) -> list[Candidate]:
    """Self-instruct pairs from a teacher model, one prompt per failing item (rotating through
    the cluster), each answer parsed and checked before use; junk is kept, rejected, with why."""
    if ctx.teacher is None:
        raise ConfigError("The 'teacher' strategy needs a [targeted.teacher] section with a "
                          "model (and base_url for an OpenAI-compatible endpoint).")
    k = ctx.per_prompt
    jobs: list[tuple[ClusterTarget, FailureCase, int, int]] = []
    for req in requests:
        fails = req.cluster.failures
        first = math.ceil(req.offset / k)
        for idx in range(first, first + math.ceil(req.want / k)):
            jobs.append((req.cluster, fails[idx % len(fails)], idx // len(fails),
                         derive_seed(ctx.seed, req.cluster.cluster_id, idx)))
    prompts = [teacher_prompt(FailureView(f.example.instruction, f.example.input,
                                          f.example.output, f.output, f.categories), k, var)
               for _, f, var, _ in jobs]
    texts = ctx.teacher.complete(prompts, [job[3] for job in jobs]) if prompts else []
    out: list[Candidate] = []
    for (cluster, fail, var, seed), prompt, text in zip(jobs, prompts, texts):
        source = {"teacher": ctx.teacher.name, "failure_id": fail.example.id,
                  "prompt_hash": content_hash(prompt), "variation": var, "seed": seed}
        pairs = parse_pairs(text)[:k]
        if not pairs:
            raw = Example(content_hash(text), fail.example.instruction, text[:2000],
                          fail.example.input, fail.example.category, "train")
            out.append(Candidate(raw, "teacher", cluster.cluster_id, (fail.example.id,), source,
                                 reason="unparseable",
                                 detail="no instruction/input/output JSON in the answer"))
            continue
        made = [Example(Example.make_id(p["instruction"], p["input"], p["output"]),
                        p["instruction"], p["output"], p["input"], fail.example.category, "train")
                for p in pairs]
        verdicts = ctx.check(made) if ctx.check else [None] * len(made)
        out += [Candidate(ex, "teacher", cluster.cluster_id, (fail.example.id,), source,
                          reason="failed_suite" if why else None, detail=why or "")
                for ex, why in zip(made, verdicts)]
    return out


def corrections(ctx: StrategyContext, requests: Sequence[Request]) -> list[Candidate]:
    """Every reviewer correction (latest per item), with priority, whether or not its cluster
    asked for more (repeats in later rounds have the same ids and are merged). A correction of a
    dev item may contain that item; one of a test item is left to decontamination to reject."""
    return [Candidate(
        _as_train(c.example, c.corrected_output), "corrections",
        ctx.cluster_of.get(c.example.id, CORRECTIONS_GROUP), (c.example.id,),
        {"correction_id": c.correction_id, "reviewer": c.reviewer,
         "prediction_id": c.prediction_id, "split": c.example.split}, priority=1,
        own_ref=f"dev:{c.example.id}" if c.example.split == "dev" else "")
        for c in ctx.corrections]


def replay(pool: Sequence[Example], k: int, seed: int) -> list[Candidate]:
    """A seeded sample of original train rows, mixed in to limit forgetting."""
    rng = np.random.default_rng(derive_seed("replay", seed))
    picks = rng.permutation(len(pool))[:k] if len(pool) else []
    return [Candidate(_as_train(pool[i]), "replay", "replay", (), {"pool_id": pool[i].id})
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
    return [Candidate(_as_train(ctx.pool[i]), "replay", "replay", (),
                      {"pool_id": ctx.pool[i].id, **({"like": who} if who else {})})
            for i, who in chosen]


# its names are the settings' StrategyName (loop.core.settings; tests/test_settings.py checks)
STRATEGIES: dict[str, Callable[[StrategyContext, Sequence[Request]], list[Candidate]]] = {
    "corrections": corrections, "retrieval": retrieval, "generator": generator, "teacher": teacher,
}


# ---------------------------------------------------------------------------- answer checks

def answer_check(task: Task):
    """Checks a teacher's pairs: the answer against the task's answer model (and the length of
    the category's train/dev answers), then the task's suite (required checks, the pair's own output as prediction and reference,
    which exercises format, JSON, regex, stop-phrase and repetition checks)."""
    refs: dict[str, list[str]] = defaultdict(list)
    for split in ("train", "dev"):
        for e in task.splits.get(split, ()):
            refs[e.category].append(e.output)
    suite = _suite_scorer(task)

    def check(examples: Sequence[Example]) -> list[str | None]:
        shapes = [cur.answer_shape(e.output, task.answers, refs.get(e.category, []), e.category)
                  for e in examples]
        suites = suite(examples) if suite else [None] * len(examples)
        return [s or q for s, q in zip(shapes, suites)]

    return check


def _suite_scorer(task: Task):
    """The task's suite on self-referenced pairs: every check that compares with the reference
    passes trivially, so any failed check (required or not) is a format problem: stop phrases,
    repetition, invalid JSON, a regex miss."""
    try:
        from evals.rules import CheckInput
        from evals.suites import load_suite, score_suite
    except ImportError:  # scoring not installed: the shape check alone
        return None
    # no judge model on candidates; similarities are all 1 (self-referenced), so a free-text
    # default needs no calibrated threshold
    suite = load_suite(task.settings, task.answers).without_judge()

    def score(examples: Sequence[Example]) -> list[str | None]:
        items = [CheckInput(e.instruction, e.input, e.output, e.output) for e in examples]
        scores = score_suite(suite, items, [1.0] * len(items) if suite.needs_similarity else None)
        failed = [[c.check for c in s.checks if not c.passed] for s in scores]
        return [f"failed checks: {', '.join(f)} (suite v{suite.version})" if f else None
                for f in failed]

    return score


# ---------------------------------------------------------------------------- task generators

def _demo(category: str, n: int, seed: int) -> list[Example]:
    from loop.data.demo_task import generate_examples

    return generate_examples(category, n, seed, pool=True)  # pool facts only, never held-out


GENERATORS: dict[str, Generator] = {"demo": _demo}


def register_generator(name: str, fn: Generator) -> None:
    GENERATORS[name] = fn


def resolve_generator(name: str) -> Generator:
    """A registered name, or 'package.module:function' with signature (category, n, seed)."""
    if name in GENERATORS:
        return GENERATORS[name]
    module, _, attr = name.partition(":")
    if attr:
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"[targeted] generator '{name}' cannot be imported: {exc}.") \
                from None
        if callable(fn):
            return fn
    near = difflib.get_close_matches(name, list(GENERATORS), n=1)
    hint = f" Did you mean '{near[0]}'?" if near else ""
    raise ConfigError(f"Unknown [targeted] generator '{name}'.{hint} Known: "
                      f"{', '.join(sorted(GENERATORS))}, or 'package.module:function'.")
