"""How many seeded items each benchmark scores in a cycle: a time budget split so that the pooled
forgetting check sees as small a change as it can (pure).

    counts = size_items(["arc_easy", "hellaswag", "mmlu"], seconds=150)  # benchmark -> items
    planned_pooled_mde(counts)                                         # at the planning spreads

The pooled check is the equally weighted mean of the B benchmarks' paired differences, with
variance sum(sd_b^2 / n_b) / B^2. Under a budget sum(cost_b * n_b) <= seconds it is smallest at
n_b proportional to sd_b / sqrt(cost_b) (a Lagrange multiplier): a cheap benchmark (ARC, a few
short choices) gets more items than an expensive one (HellaSwag's and MMLU's long contexts), and
a quiet one (TruthfulQA mc2, a continuous score) fewer than a 0/1 accuracy.

`cost_b` (seconds per item, one model) and `sd_b` (per-item sd of the paired difference) are
fixed planning constants, not timed at run time: every machine and every cycle gets the same
counts from the same settings, so a champion scored in an earlier cycle is read back from the
store instead of scored again, and a cycle can be reproduced. They were measured with the
embedded model on the reference 2-core CPU (docs/gate.md, "Sizing"); `seconds` is therefore in
that machine's seconds, and a faster machine takes proportionally less. A benchmark without
constants (any other lm-eval task) is planned as the costliest measured one with a 0/1 spread.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from evals.paired import binary_floor, z_factor

# seconds per item for one model, `evalloop` backend, SmolLM2-135M-Instruct, idle 2-core CPU
# (`evalloop bench --limit 100`, docs/gate.md "Measured here")
COST_S = {"arc_easy": 0.034, "arc_challenge": 0.038, "hellaswag": 0.19, "mmlu": 0.18,
          "truthfulqa_mc1": 0.14, "truthfulqa_mc2": 0.16}
# per-item sd of candidate - champion on the pooled metric (acc_norm, else acc), task LoRAs
# against the embedded model (docs/gate.md "Sizing"); mc2's per-item score is continuous
SPREAD = {"truthfulqa_mc2": 0.19}
BINARY_SPREAD = 0.32
CONTINUOUS = frozenset({"truthfulqa_mc2"})
UNKNOWN_COST_S = max(COST_S.values())
MIN_ITEMS = 2  # a paired interval needs two items


def cost(benchmark: str) -> float:
    return COST_S.get(benchmark, UNKNOWN_COST_S)


def spread(benchmark: str) -> float:
    return SPREAD.get(benchmark, BINARY_SPREAD)


def size_items(tasks: Sequence[str], seconds: float,
               fixed: Mapping[str, int] | None = None) -> dict[str, int]:
    """Items per benchmark: `fixed` counts as given, the rest of `seconds` (after the fixed
    benchmarks' planned cost) split in proportion to sd_b / sqrt(cost_b), each at least
    MIN_ITEMS. Deterministic: the same arguments give the same counts everywhere."""
    fixed = dict(fixed or {})
    names = list(dict.fromkeys(tasks))
    free = [n for n in names if n not in fixed]
    left = seconds - sum(cost(n) * fixed[n] for n in names if n in fixed)
    weight = {n: spread(n) / math.sqrt(cost(n)) for n in free}
    # sum(cost * n) = scale * sum(weight * cost) = left
    scale = max(left, 0.0) / sum(weight[n] * cost(n) for n in free) if free else 0.0
    return {n: fixed[n] if n in fixed else max(MIN_ITEMS, math.floor(scale * weight[n]))
            for n in names}


def planned_seconds(counts: Mapping[str, int]) -> float:
    """The planned scoring time of one model at these counts (reference seconds)."""
    return sum(cost(n) * k for n, k in counts.items())


def planned_pooled_mde(counts: Mapping[str, int], alpha: float = 0.05,
                       power: float = 0.95) -> float:
    """The pooled accuracy check's MDE at these counts if every benchmark's spread is its
    planning sd, pooled as evals.paired.pooled does (each part's MDE, 0/1 floor included)."""
    _, k = z_factor(alpha, power)
    parts = []
    for name, n in counts.items():
        mde = k * spread(name) / math.sqrt(n)
        parts.append(mde if name in CONTINUOUS else min(1.0, max(mde, binary_floor(n, k))))
    return k * math.sqrt(sum((m / k) ** 2 for m in parts)) / len(parts)
