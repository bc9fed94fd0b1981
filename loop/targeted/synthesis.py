"""Strategies that write new examples, and the checks of what they write: `generator` (a task
generator function, `[targeted] generator = "demo"` or "module:function") and `teacher` (a
stronger model writes pairs from the failing items, loop.targeted.teacher); `answer_check` tests
a written pair against the task's answer model and suite before curation sees it.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Sequence

from evals.answers import AnswerModel, normalize
from loop.core.errors import ConfigError
from loop.core.records import Example, content_hash
from loop.data.tasks import Task
from loop.targeted.candidates import (
    Candidate,
    ClusterTarget,
    FailureCase,
    Generator,
    Request,
    StrategyContext,
    as_train,
    derive_seed,
)
from loop.targeted.teacher import FailureView, parse_pairs, teacher_prompt

log = logging.getLogger(__name__)


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
            out += [Candidate(as_train(ex), "generator", req.cluster.cluster_id, ids,
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
        shapes = [answer_shape(e.output, task.answers, refs.get(e.category, []), e.category)
                  for e in examples]
        suites = suite(examples) if suite else [None] * len(examples)
        return [s or q for s, q in zip(shapes, suites)]

    return check


def answer_shape(output: str, answers: AnswerModel, references: Sequence[str],
                 category: str = "") -> str | None:
    """Why a generated answer is not a clean answer of the task's kind (`Task.answers`), or
    None: a JSON task's answer must be exactly a JSON object (a list for `labels`, its elements
    from the label set when there is one), a label's one of the labels (of its `category` in a
    task that mixes skills), a number task's a number; nothing may be empty, and other answers
    not far longer than every reference of its category (`references`)."""
    text = output.strip()
    if not text:
        return "empty output"
    answers = answers.for_category(category)
    kind, reply = answers.kind, answers.read(text)
    if kind in ("json", "labels"):
        what = "a JSON object" if kind == "json" else "a JSON list"
        if not reply.valid:
            return f"not {what}, unlike the task's answers"
        if not reply.clean:
            return f"text around {what}: the answer must be the JSON alone"
        unknown = [x for x in reply.value if kind == "labels" and answers.labels
                   and (not isinstance(x, str) or normalize(x) not in answers.labels)]
        return f"'{str(unknown[0])[:40]}' is not one of the task's labels" if unknown else None
    if kind == "label":
        if reply.value not in answers.labels:
            shown = ", ".join(sorted(answers.labels)[:8])
            return f"'{text[:40]}' is not one of the labels {shown}"
        return None
    if kind == "number":
        return None if reply.clean else "not a number, unlike the task's answers"
    if references and len(text.split()) > max(50, 3 * max(len(r.split()) for r in references)):
        return "far longer than every reference"
    return None


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
