"""Rewards from a task's own suite, for RL on the train pool (loop/train/grpo.py).

    reward = SuiteReward(suite, pool_examples, held_out=dev + test)
    reward(completions=["{...}", ...], item_id=["ex1", ...])    # trl's reward_funcs call
    reward.score(example, "{...}")                                # -> RewardParts

One completion's reward, in [-PENALTY * 2, 1]:

    PASS_WEIGHT * (every required check of the suite passes)       1/0, the gate's own verdict
  + PARTIAL_WEIGHT * partial credit by answer kind:
        JSON object   per-key F1 (a key counts when its value is right)
        JSON list     element F1 (elements compared in canonical JSON)
        label         1 for the right label (the task's label set, evals.answers)
        text          similarity to the reference (cosine when the suite scores similarity,
                      else a character-level ratio)
  - PENALTY for each of `too_long` and `repetition` that fails (with the suite's params)

The reward only knows the pool rows it was built with: it looks references up by item id, and
refuses to be built with a row that is, by id or by prompt text, a held-out (dev or test) item,
or to score an id it was not built with. The gate's splits never reach it.

A rubric check is left out (a judge model per sampled completion is too slow for RL); the
remaining required checks decide "passed". Text is read as evaluation reads it: cut after the
first complete JSON value when the task's answers are JSON (`stop_at_json`). Answers are read
with the task's answer model (evals/answers.py), as the checks and signatures read them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from evals.answers import AnswerModel, canonical, infer_answers, normalize, parse_json, shape
from evals.rules import CheckInput, repetition, too_long
from evals.suites import Suite, score_suite
from loop.core.errors import EvalloopError
from loop.core.records import Example, content_hash
from loop.models.decode import json_end

REWARD_VERSION = "suite-reward-1"  # part of a GRPO run's id: bump when rewards change
PASS_WEIGHT, PARTIAL_WEIGHT, PENALTY = 0.5, 0.5, 0.1
PENALISED = ("too_long", "repetition")
Similarity = Callable[[Sequence[str], Sequence[str]], list[float]]  # (outputs, refs) -> cosines


class HeldOutLeak(EvalloopError):
    """A dev or test item was about to reach the reward."""


@dataclass(frozen=True)
class RewardParts:
    kind: str  # object | list | label | text
    passed: bool
    partial: float  # in [0, 1]
    penalties: tuple[str, ...]  # failed too_long / repetition
    total: float


# ---------------------------------------------------------------------------- answers (one place)

def answer_kind(reference: str, labels: frozenset[str]) -> str:
    """What a reference is: a JSON object, a JSON list, a label of the task's set, or text."""
    found = shape(reference)
    if found != "other":
        return found
    return "label" if labels and normalize(reference) in labels else "text"


def parse_answer(kind: str, text: str):
    """The answer in `text` as evaluation's checks read it (None: no answer of that kind)."""
    if kind in ("object", "list"):
        value = parse_json(text)
        return value if isinstance(value, dict if kind == "object" else list) else None
    return normalize(text)


def visible_text(text: str, stop_at_json: bool) -> str:
    """What evaluation keeps of a generated text: cut after its first JSON value if asked."""
    end = json_end(text) if stop_at_json else None
    return (text[:end] if end is not None else text).strip()


# ---------------------------------------------------------------------------- partial credit

def _f1(right: int, n_got: int, n_want: int) -> float:
    if n_got == n_want == 0:
        return 1.0
    precision, recall = right / n_got if n_got else 0.0, right / n_want if n_want else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def partial_credit(kind: str, reference: str, output: str, similarity: float | None = None
                   ) -> float:
    """Credit in [0, 1] for how close `output` is to `reference` (see the module docstring)."""
    got = parse_answer(kind, output)
    if kind == "object":
        gold = parse_json(reference, strict=True)
        if got is None:
            return 0.0
        right = sum(1 for k, v in got.items() if k in gold and canonical(gold[k]) == canonical(v))
        return _f1(right, len(got), len(gold))
    if kind == "list":
        if got is None:
            return 0.0
        want, have = {canonical(x) for x in parse_json(reference, strict=True)}, \
            {canonical(x) for x in got}
        return _f1(len(want & have), len(have), len(want))
    if kind == "label":
        return float(got == normalize(reference))
    if similarity is not None:
        return min(max(float(similarity), 0.0), 1.0)
    return difflib.SequenceMatcher(None, got, normalize(reference)).ratio()


def combine(kind: str, passed: bool, partial: float, penalties: Sequence[str]) -> RewardParts:
    total = PASS_WEIGHT * passed + PARTIAL_WEIGHT * partial - PENALTY * len(penalties)
    return RewardParts(kind, passed, partial, tuple(penalties), round(total, 6))


# ---------------------------------------------------------------------------- the reward

def _prompt_key(example: Example) -> str:
    return content_hash(normalize(example.instruction), normalize(example.input))


def held_out_rows(pool: Sequence[Example], held_out: Sequence[Example]) -> list[Example]:
    """Pool rows that are held-out items: the same id, or the same prompt text (real pools
    repeat short test messages)."""
    ids, prompts = {e.id for e in held_out}, {_prompt_key(e) for e in held_out}
    return [e for e in pool if e.id in ids or _prompt_key(e) in prompts]


def check_held_out(pool: Sequence[Example], held_out: Sequence[Example]) -> None:
    """Raise when a pool row is a held-out item (see `held_out_rows`)."""
    leaked = [e.id for e in held_out_rows(pool, held_out)]
    if leaked:
        raise HeldOutLeak(f"{len(leaked)} reward prompt(s) are dev/test items (e.g. "
                          f"{', '.join(leaked[:3])}): rewards come from the train pool only.")


class SuiteReward:
    """The task's suite as a reward over pool rows; a trl reward function when called."""

    __name__ = "suite_reward"  # trl names its logged reward metrics after the function

    def __init__(self, suite: Suite, pool: Sequence[Example], held_out: Sequence[Example] = (),
                 stop_at_json: bool = False, similarity: Similarity | None = None,
                 answers: AnswerModel | None = None):
        check_held_out(pool, held_out)
        self.suite = suite.without_judge()
        if self.suite.needs_similarity and similarity is None:
            raise ValueError("the suite scores similarity: pass a similarity function")
        self.examples = {e.id: e for e in pool}
        answers = answers or infer_answers([e.output for e in pool])  # Task.answers, normally
        self.labels = answers.labels if answers.kind == "label" else frozenset()
        self.stop_at_json, self.similarity = stop_at_json, similarity
        self._params = {c.name: dict(c.params) for c in self.suite.checks}

    def identity(self) -> list:
        """What a training run hashes: the reward's definition, not its pool."""
        return [REWARD_VERSION, self.suite.version, self.suite.check_versions(),
                self._params, self.stop_at_json]

    def score_many(self, examples: Sequence[Example], outputs: Sequence[str]
                   ) -> list[RewardParts]:
        for e in examples:
            if self.examples.get(e.id) != e:
                raise HeldOutLeak(f"item {e.id} is not a pool row this reward was built with")
        texts = [visible_text(o, self.stop_at_json) for o in outputs]
        items = [CheckInput(e.instruction, e.input, e.output, t) for e, t in zip(examples, texts)]
        sims = self.similarity(texts, [e.output for e in examples]) if self.similarity else None
        verdicts = score_suite(self.suite, items, sims if self.suite.needs_similarity else None)
        penalties = [[] for _ in items]
        for name, fn in (("too_long", too_long), ("repetition", repetition)):
            for k, result in enumerate(fn(items, **self._params.get(name, {}))):
                if not result.passed:
                    penalties[k].append(name)
        out = []
        for k, (e, text, verdict) in enumerate(zip(examples, texts, verdicts)):
            kind = answer_kind(e.output, self.labels)
            text_sim = sims[k] if sims is not None and kind == "text" else None
            out.append(combine(kind, verdict.passed, partial_credit(kind, e.output, text,
                                                                    text_sim), penalties[k]))
        return out

    def score(self, example: Example, output: str) -> RewardParts:
        return self.score_many([example], [output])[0]

    def __call__(self, completions: Sequence, item_id: Sequence[str], **_) -> list[float]:
        """trl's reward function: completions (text, or chat messages) and the dataset's
        `item_id` column -> one float each."""
        missing = [i for i in item_id if i not in self.examples]
        if missing:
            raise HeldOutLeak(f"item {missing[0]} is not a pool row this reward was built with")
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        parts = self.score_many([self.examples[i] for i in item_id], texts)
        return [p.total for p in parts]
