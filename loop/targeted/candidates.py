"""What the targeted-data strategies take and give: the failures they target (`ClusterTarget`
of `FailureCase`s), reviewer corrections, a `Request` for more candidates of one cluster, the
`StrategyContext` every strategy reads (the pool, the embedder, the generator or teacher, the
pool's answers), and the `Candidate` each proposes (loop.targeted.curate decides on it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from loop.core.prompts import user_message
from loop.core.records import Example, content_hash
from loop.targeted.answer_classes import PoolAnswers
from loop.targeted.teacher import Teacher


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
    """A seed from any parts (content-hashed): the same parts, the same draw."""
    return int(content_hash(*parts, length=8), 16)


def as_train(example: Example, output: str | None = None) -> Example:
    """The example as a train row (its output replaced when given), with the id of its content."""
    out = example.output if output is None else output
    return Example(Example.make_id(example.instruction, example.input, out), example.instruction,
                   out, example.input, example.category, "train")
