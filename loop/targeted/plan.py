"""How much of the team's pool a cycle trains on, and which rows: a pure decision from the pool,
the champion's failures and the cycle's time budget.

    mode, reason = choose_mode(PoolFacts(...))
    hard = hard_rows(max_token_nll)                       # focused cycles only
    plan = plan_pool(PoolFacts(...), budget_s=900.0, epochs=2.0, extra_rows=len(hard) + n_targeted)

Two modes (measured in bench/loop_vs_baselines.py, docs/targeting.md):
- `whole_pool`: the champion has never been trained for the task, or most of its dev failures
  are format failures (it does not answer in the task's form yet). Every curated pool row is
  worth training on, as a LoRA on the whole pool would; a few hundred targeted rows teach less
  than the whole pool does.
- `focused`: the champion answers in form and fails on content. Training continues from it on
  the whole pool again, with the rows it still gets wrong weighted up: the pool rows it is
  unsure of (a row whose least likely answer token has probability below 1/2 is one greedy
  decoding may miss; not for free text, whose references are one wording of many) and the rows
  retrieved for its dev failures are trained on a second time in each epoch. Training on those rows with only a little replay (as many known rows as hard
  ones) shifted a 151-label classifier towards the failures' labels: its dev pass rate fell from
  78.7% to 71.3% (docs/targeting.md).

Both fit the time budget: (pool rows + weighted rows) x epochs x seconds per row-epoch <= the
training share of `[cycle] max_minutes`; epochs are cut first (quarter steps), then pool rows,
then weighted rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

PlanMode = Literal["whole_pool", "focused"]

FORMAT_MAJORITY = 0.5  # share of dev failures that are format-only above which format comes first
TRAIN_SHARE = 0.5  # share of a cycle's budget its training may take (evaluations, benchmarks rest)
UNSURE_NLL = math.log(2.0)  # an answer token below probability 1/2: greedy decoding may miss it


@dataclass(frozen=True)
class PoolFacts:
    """What the plan is decided from."""

    pool_rows: int  # curated pool rows available
    champion_trained: bool  # the champion carries an adapter trained for this task
    dev_failures: int
    dev_format_failures: int  # dev failures whose signatures are format-only
    seconds_per_row_epoch: float  # estimated from token counts, never from wall time
    rate_source: str  # how it was estimated


@dataclass(frozen=True)
class PoolPlan:
    mode: PlanMode
    reason: str
    rows: int  # pool rows the cycle trains on (each once per epoch)
    epochs: float
    budget_s: float  # training seconds the cycle's budget allows
    estimated_train_s: float
    seconds_per_row_epoch: float
    rate_source: str
    extra_rows: int = 0  # focused: weighted rows (targeted + unsure) trained beside the pool rows

    def to_json(self) -> dict:
        return asdict(self)


def choose_mode(facts: PoolFacts) -> tuple[PlanMode, str]:
    fmt = facts.dev_format_failures / facts.dev_failures if facts.dev_failures else 0.0
    if not facts.champion_trained:
        return "whole_pool", "the champion has not been trained for this task yet"
    if fmt >= FORMAT_MAJORITY:
        return "whole_pool", f"{fmt:.0%} of the champion's dev failures are format failures"
    return "focused", (f"the champion answers in form ({fmt:.0%} of its dev failures are format "
                       "failures): the pool again, what it still gets wrong weighted up")


def plan_pool(facts: PoolFacts, budget_s: float | None, epochs: float,
              extra_rows: int = 0) -> PoolPlan:
    """Mode, rows and epochs for one cycle; `budget_s` None = no limit. `extra_rows` (focused
    cycles only) are trained beside the pool rows and count against the budget."""
    mode, reason = choose_mode(facts)
    extra = extra_rows if mode == "focused" else 0
    train_budget = None if budget_s is None else budget_s * TRAIN_SHARE
    per_row = max(facts.seconds_per_row_epoch, 1e-6)
    rows = facts.pool_rows
    if train_budget is not None and (rows + extra) * epochs * per_row > train_budget:
        fitting_epochs = train_budget / ((rows + extra) * per_row)
        if fitting_epochs >= 1.0:
            epochs = math.floor(fitting_epochs * 4) / 4  # quarter epochs: fewer, never more
            reason += f"; {epochs:g} epochs fit the time budget"
        else:
            epochs, fit = 1.0, max(1, int(train_budget / per_row))
            extra = min(extra, fit)
            rows = max(0, fit - extra)
            reason += f"; {rows} of {facts.pool_rows} pool rows fit the time budget once"
    return PoolPlan(mode=mode, reason=reason, rows=rows, epochs=epochs,
                    budget_s=train_budget or 0.0,
                    estimated_train_s=(rows + extra) * epochs * per_row,
                    seconds_per_row_epoch=per_row, rate_source=facts.rate_source,
                    extra_rows=extra)


def forward_tokens_per_row(prefix: int, own: Sequence[int], batch_size: int, token_budget: int,
                           min_shared: int) -> float:
    """Tokens the model runs per trained row when rows of `own` tokens (each past the shared
    `prefix`) are packed as loop/train/packing.py packs them: each optimizer batch of
    `batch_size` rows is cut into chunks of at most `token_budget` forward tokens, and each chunk
    holds the prefix once (when it is at least `min_shared` tokens; else every row runs it)."""
    if not own:
        return 1.0
    if prefix < min_shared:
        return prefix + sum(own) / len(own)
    total = 0
    for start in range(0, len(own), batch_size):
        used = None
        for n in own[start:start + batch_size]:
            if used is None or used + n > token_budget:  # a new chunk runs the prefix again
                total += prefix
                used = prefix
            used += n
            total += n
    return total / len(own)


def hard_rows(max_token_nll: np.ndarray, limit: int | None = None) -> np.ndarray:
    """Indices of the rows the model is unsure of (some answer token below probability 1/2),
    least known first, at most `limit`."""
    order = np.argsort(-max_token_nll, kind="stable")
    unsure = order[max_token_nll[order] > UNSURE_NLL]
    return unsure[:limit]
