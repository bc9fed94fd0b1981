"""How much of the team's pool a cycle trains on, and which rows: a pure decision from the pool,
the champion's failures and the cycle's time budget.

    plan = plan_pool(PoolFacts(...), budget_s=450.0, epochs=2.0)
    hard = hard_rows(max_token_nll, ...)

Two modes (measured in bench/loop_vs_baselines.py, docs/targeting.md):
- `whole_pool`: the champion has never been trained for the task, or most of its dev failures
  are format failures (it does not answer in the task's form yet). Every curated pool row is
  worth training on, as a LoRA on the whole pool would; a few hundred targeted rows teach less
  than the whole pool does.
- `focused`: the champion answers in form and fails on content. Training continues from it on
  the pool rows it still does not know (its answer loss says which: a row whose least likely
  answer token has probability below 1/2 is one greedy decoding may miss), with replay of rows
  it knows so nothing is forgotten, beside the rows retrieved for its dev failures.

Both fit the time budget: rows x epochs x seconds per row-epoch <= the training share of
`[cycle] max_minutes`; when a whole pool does not fit even once, it is subsampled.
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
REPLAY_PER_HARD = 1.0  # replayed known rows per unknown row in a focused cycle
MIN_FOCUSED_ROWS = 32  # below this many rows a focused cycle pads with replay


@dataclass(frozen=True)
class PoolFacts:
    """What the plan is decided from."""

    pool_rows: int  # curated pool rows available
    champion_trained: bool  # the champion carries an adapter trained for this task
    dev_failures: int
    dev_format_failures: int  # dev failures whose signatures are format-only
    seconds_per_row_epoch: float  # measured, or estimated from token counts (see `source`)
    rate_source: str  # "measured: <train id>" or "estimated: ..."


@dataclass(frozen=True)
class PoolPlan:
    mode: PlanMode
    reason: str
    rows: int  # pool rows the cycle trains on (whole_pool), or at most (focused)
    epochs: float
    budget_s: float  # training seconds the cycle's budget allows
    estimated_train_s: float
    seconds_per_row_epoch: float
    rate_source: str

    def to_json(self) -> dict:
        return asdict(self)


def plan_pool(facts: PoolFacts, budget_s: float | None, epochs: float) -> PoolPlan:
    """Mode, rows and epochs for one cycle; `budget_s` None = no limit."""
    fmt = facts.dev_format_failures / facts.dev_failures if facts.dev_failures else 0.0
    if not facts.champion_trained:
        mode, reason = "whole_pool", "the champion has not been trained for this task yet"
    elif fmt >= FORMAT_MAJORITY:
        mode, reason = "whole_pool", (f"{fmt:.0%} of the champion's dev failures are format "
                                      "failures")
    else:
        mode, reason = "focused", (f"the champion answers in form ({fmt:.0%} of its dev failures "
                                   "are format failures): train on what it still gets wrong")
    train_budget = None if budget_s is None else budget_s * TRAIN_SHARE
    per_row = max(facts.seconds_per_row_epoch, 1e-6)
    rows = facts.pool_rows
    if train_budget is not None and rows * epochs * per_row > train_budget:
        fitting_epochs = train_budget / (rows * per_row)
        if fitting_epochs >= 1.0:
            epochs = math.floor(fitting_epochs * 4) / 4  # quarter epochs: fewer, never more
            reason += f"; {epochs:g} epochs fit the time budget"
        else:
            epochs, rows = 1.0, max(1, int(train_budget / per_row))
            reason += f"; {rows} of {facts.pool_rows} rows fit the time budget once"
    return PoolPlan(mode=mode, reason=reason, rows=rows, epochs=epochs,
                    budget_s=train_budget or 0.0, estimated_train_s=rows * epochs * per_row,
                    seconds_per_row_epoch=per_row, rate_source=facts.rate_source)


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


def hard_rows(max_token_nll: np.ndarray, limit: int) -> np.ndarray:
    """Indices of the rows the model is unsure of (some answer token below probability 1/2),
    least known first, at most `limit`."""
    order = np.argsort(-max_token_nll, kind="stable")
    unsure = order[max_token_nll[order] > UNSURE_NLL]
    return unsure[:limit]


def focused_sizes(n_hard: int, n_targeted: int, rows_cap: int) -> tuple[int, int]:
    """(hard rows, replay rows) of a focused cycle within `rows_cap` rows, targeted ones counted:
    replay matches the hard rows (REPLAY_PER_HARD) and pads a small set to MIN_FOCUSED_ROWS."""
    room = max(0, rows_cap - n_targeted)
    hard = min(n_hard, int(room / (1 + REPLAY_PER_HARD)) if room >= 2 else room)
    replay = min(room - hard, max(math.ceil(hard * REPLAY_PER_HARD),
                                  MIN_FOCUSED_ROWS - hard - n_targeted))
    return hard, max(0, replay)
