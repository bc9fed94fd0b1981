"""Score a batch of predictions: the task's suite plus embedding similarity to the reference."""

from __future__ import annotations

from collections.abc import Sequence

from evals.answers import calibration_sample, similarity_threshold
from evals.rubric import judge_completer
from evals.rules import CheckInput
from evals.similarity import CachedEmbedder, cosine_pairs
from evals.suites import ItemScore, JudgeFactory, Suite, score_suite
from loop.core.prompts import user_message
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


def calibrated_threshold(references: Sequence[Example], embedder, seed: int = 0) -> float:
    """The free-text similarity threshold of a task (`evals.answers.similarity_threshold`) on a
    seeded sample of its reference items (at most MAX_CALIBRATION_ROWS are embedded)."""
    rows = [references[i] for i in calibration_sample(len(references), seed)]
    vectors = embedder.encode([e.output for e in rows])
    return similarity_threshold(vectors, [user_message(e) for e in rows])
