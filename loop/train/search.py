"""A recipe chosen on dev: a few SFT trials on the cycle's data, the best by dev pass rate.

    plans = recipe_trials(1e-3, estimated_s, budget_s, champion_trained=True)  # what fits
    best = pick(trials)                                       # dev pass rate, then dev loss

The learning rate is what a LoRA on a small model is most sensitive to (loop/train/config.py:
2e-4 -> 1e-3 was +5 points on a slot task); epochs are left to early stopping on dev loss. The
trials are the configured rate, twice it and half it, in that order, as many as the cycle's
training budget holds (one when it holds one): a task where the default rate is wrong gets a
better one, a task where it is right pays one extra run at most.

Once the champion carries an adapter, the second trial is the configured rate retrained from the
base model on the same data (the pool and the weighted rows: the union of what the cycles
trained on) instead of continuing from the champion: whether a candidate continues or retrains
is decided on dev, each cycle, whenever the budget holds two runs, and the report says which won.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

RATE_FACTORS = (1.0, 2.0, 0.5)  # tried in this order while the budget lasts
# below this many dev items one item moves the pass rate by more than 2.5 points: trials would
# be told apart by noise (the real tasks' dev splits hold 76-200 items)
MIN_DEV_ITEMS = 40

Start = Literal["champion", "base"]  # continue from the champion's adapter / retrain from the base


@dataclass(frozen=True)
class TrialPlan:
    learning_rate: float
    start: Start


@dataclass(frozen=True)
class Trial:
    learning_rate: float
    train_id: str
    candidate_name: str
    dev_pass_rate: float
    best_eval_loss: float | None
    elapsed_s: float
    start: Start = "champion"

    def to_json(self) -> dict:
        return asdict(self)


def recipe_trials(learning_rate: float, estimated_s: float, budget_s: float | None,
                  enabled: bool = True, n_dev: int = MIN_DEV_ITEMS,
                  champion_trained: bool = False) -> list[TrialPlan]:
    """The trials to run: as many as `budget_s` holds runs of `estimated_s` (all of them when
    there is no budget), at least the configured rate from the champion; only that one when dev
    has fewer than MIN_DEV_ITEMS items to choose by. The configured rate, then (champion
    trained) the same rate retrained from the base, then twice and half the rate."""
    start: Start = "champion" if champion_trained else "base"
    plans = [TrialPlan(learning_rate * f, start) for f in RATE_FACTORS]
    if champion_trained:
        plans.insert(1, TrialPlan(learning_rate, "base"))
    if not enabled or n_dev < MIN_DEV_ITEMS:
        return plans[:1]
    n = len(plans) if budget_s is None else int(budget_s // max(estimated_s, 1e-6))
    return plans[:max(1, min(n, len(plans)))]


def pick(trials: list[Trial]) -> Trial:
    """The highest dev pass rate; ties go to the lower dev loss, then to the earlier trial (the
    configured rate comes first)."""
    def key(item):
        index, t = item
        loss = t.best_eval_loss if t.best_eval_loss is not None else float("inf")
        return (-t.dev_pass_rate, loss, index)
    return min(enumerate(trials), key=key)[1]
