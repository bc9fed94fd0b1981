"""Score a batch of predictions: the task's suite plus embedding similarity to the reference."""

from __future__ import annotations

from collections.abc import Sequence

from evals.rubric import judge_completer
from evals.rules import CheckInput
from evals.similarity import CachedEmbedder, cosine_pairs
from evals.suites import ItemScore, JudgeFactory, Suite, score_suite
from loop.core.records import Example


def check_inputs(examples: Sequence[Example], outputs: Sequence[str]) -> list[CheckInput]:
    return [CheckInput(e.instruction, e.input, e.output, o) for e, o in zip(examples, outputs)]


def score_predictions(suite: Suite, examples: Sequence[Example], outputs: Sequence[str],
                      embedder: CachedEmbedder, judge: JudgeFactory = judge_completer
                      ) -> tuple[list[ItemScore], list[float]]:
    """Per-item suite verdicts and output/reference similarities (cached embeddings); a rubric
    check grades with the judge its params name."""
    similarities = cosine_pairs(embedder, outputs, [e.output for e in examples])
    return score_suite(suite, check_inputs(examples, outputs), similarities, judge), similarities
