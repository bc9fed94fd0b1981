"""A recipe chosen on dev: a few SFT trials on the cycle's data, the best by dev pass rate.

    trials = recipe_trials(config, estimated_s, budget_s)     # which learning rates fit
    best = pick(results)                                      # dev pass rate, then dev loss

The learning rate is what a LoRA on a small model is most sensitive to (loop/train/config.py:
2e-4 -> 1e-3 was +5 points on a slot task); epochs are left to early stopping on dev loss. The
trials are the configured rate, twice it and half it, in that order, as many as the cycle's
training budget holds (one when it holds one): a task where the default rate is wrong gets a
better one, a task where it is right pays one extra run at most.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

RATE_FACTORS = (1.0, 2.0, 0.5)  # tried in this order while the budget lasts
MAX_TRIALS = len(RATE_FACTORS)
# below this many dev items one item moves the pass rate by more than 2.5 points: trials would
# be told apart by noise (the real tasks' dev splits hold 76-200 items)
MIN_DEV_ITEMS = 40


@dataclass(frozen=True)
class Trial:
    learning_rate: float
    train_id: str
    candidate_name: str
    dev_pass_rate: float
    best_eval_loss: float | None
    elapsed_s: float

    def to_json(self) -> dict:
        return asdict(self)


def trial_rates(learning_rate: float, estimated_s: float, budget_s: float | None,
                enabled: bool = True, n_dev: int = MIN_DEV_ITEMS) -> list[float]:
    """The learning rates to try: as many of RATE_FACTORS as `budget_s` holds runs of
    `estimated_s` (all of them when there is no budget), at least the configured one; only the
    configured one when dev has fewer than MIN_DEV_ITEMS items to choose by."""
    if not enabled or n_dev < MIN_DEV_ITEMS:
        return [learning_rate]
    n = MAX_TRIALS if budget_s is None else int(budget_s // max(estimated_s, 1e-6))
    return [learning_rate * f for f in RATE_FACTORS[:max(1, min(n, MAX_TRIALS))]]


def pick(trials: list[Trial]) -> Trial:
    """The highest dev pass rate; ties go to the lower dev loss, then to the earlier trial (the
    configured rate comes first)."""
    def key(item):
        index, t = item
        loss = t.best_eval_loss if t.best_eval_loss is not None else float("inf")
        return (-t.dev_pass_rate, loss, index)
    return min(enumerate(trials), key=key)[1]
