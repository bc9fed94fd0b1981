"""Paired comparisons of two models on the same items (pure): the difference, its interval, the
smallest change it can detect, and a verdict against a tolerance.

    stat = paired_stat("arc_easy/acc", champion_scores, candidate_scores)  # same items, same order
    stat.delta, (stat.lower, stat.upper), stat.mde, stat.p_value
    verdict(stat, tolerance=0.05)  # "passed" | "dropped" | "cannot tell"

Both models answer the same seeded items, so the comparison uses the per-item differences
d_i = candidate_i - champion_i: the difference is their mean, its standard error
se = sd(d) / sqrt(n) (sample sd, n - 1), the interval delta ± z(1 - alpha/2) * se. Most items
agree, so sd(d) is far below the unpaired sqrt(2 p (1 - p)) and the interval is much narrower.
For 0/1 scores the p-value is McNemar's exact test (a binomial test on the discordant items).

The minimum detectable effect (MDE) is the smallest true change that this test finds significant
with probability `power`: (z(1 - alpha/2) + z(power)) * sd / sqrt(n). For 0/1 scores sd is at
least sqrt(delta (1 - delta)) under a change of delta (every changed item flips one way), so the
MDE is never below k^2 / (n + k^2), k = z(1 - alpha/2) + z(power): two identical models on 40
items do not make a check that can see a 1-point drop. A check whose MDE exceeds its tolerance
"cannot tell". `sample_scores` turns stored `benchmark_samples` rows into per-item scores,
including the gold choice's log-probability among the choices (a continuous signal: it moves
before the argmax flips, so it needs fewer items).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from scipy.stats import binomtest, norm

GOLD_LOGPROB = "gold_logprob"  # log p(gold choice | the choices), nats; higher is better
PRIMARY = ("acc_norm", "acc")  # a benchmark's metric in the pooled accuracy: the first present
PASSED, DROPPED, CANNOT_TELL = "passed", "dropped", "cannot tell"


@dataclass(frozen=True)
class PairedStat:
    """Candidate minus champion on `n` paired items. Infinite values (n < 2) are None in JSON."""

    name: str
    n: int
    delta: float
    se: float
    lower: float
    upper: float
    mde: float
    p_value: float
    binary: bool  # per-item scores are 0/1 (accuracies), else continuous
    unit: str = "accuracy"  # "accuracy" (a share) or "nats"

    def to_json(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict) -> PairedStat:
        inf = {"se": math.inf, "lower": -math.inf, "upper": math.inf, "mde": math.inf}
        return cls(**{k: inf.get(k) if v is None and k in inf else v for k, v in data.items()})


def z_factor(alpha: float, power: float) -> tuple[float, float]:
    """(z of the two-sided interval, z(1-alpha/2) + z(power): the MDE's multiple of se)."""
    z = float(norm.ppf(1 - alpha / 2))
    return z, z + float(norm.ppf(power))


def normal_p(delta: float, se: float) -> float:
    """Two-sided p-value of a difference with this standard error (0 spread: any difference is
    certain; an infinite one: nothing is)."""
    if not math.isfinite(se):
        return 1.0
    return 2 * float(norm.sf(abs(delta) / se)) if se > 0 else float(delta == 0)


def binary_floor(n: int, k: float) -> float:
    """The smallest 0/1 change detectable on n items whatever the observed spread."""
    return k * k / (n + k * k)


def paired_stat(name: str, champion: Sequence[float], candidate: Sequence[float],
                alpha: float = 0.05, power: float = 0.95, unit: str = "accuracy") -> PairedStat:
    """The paired difference of two equally long per-item score lists (same items, same order)."""
    if len(champion) != len(candidate):
        raise ValueError(f"{name}: {len(champion)} champion vs {len(candidate)} candidate items")
    n = len(champion)
    diffs = [float(b) - float(a) for a, b in zip(champion, candidate)]
    binary = all(v in (0.0, 1.0) for v in (*champion, *candidate))
    z, k = z_factor(alpha, power)
    if n < 2:
        delta = diffs[0] if diffs else 0.0
        return PairedStat(name, n, delta, math.inf, -math.inf, math.inf, math.inf, 1.0, binary,
                          unit)
    delta = sum(diffs) / n
    sd = math.sqrt(sum((d - delta) ** 2 for d in diffs) / (n - 1))
    se = sd / math.sqrt(n)
    mde = k * se
    if binary:
        mde = min(1.0, max(mde, binary_floor(n, k)))
        p_value = mcnemar_p([a > 0.5 for a in champion], [b > 0.5 for b in candidate])
    else:
        p_value = normal_p(delta, se)
    return PairedStat(name, n, delta, se, delta - z * se, delta + z * se, mde, p_value, binary,
                      unit)


def pooled(name: str, stats: Sequence[PairedStat], alpha: float = 0.05,
           power: float = 0.95) -> PairedStat:
    """The equally weighted mean of several independent paired differences (one per benchmark):
    se = sqrt(sum se_i^2) / m; the MDE pools each part's planning error (MDE_i / k), so the 0/1
    floor of a small part still counts."""
    if not stats:
        raise ValueError(f"{name}: nothing to pool")
    z, k = z_factor(alpha, power)
    m = len(stats)
    delta = sum(s.delta for s in stats) / m
    se = math.sqrt(sum(s.se ** 2 for s in stats)) / m
    mde = k * math.sqrt(sum((s.mde / k) ** 2 for s in stats)) / m
    p_value = normal_p(delta, se) if se < math.inf else float(delta == 0)
    return PairedStat(name, sum(s.n for s in stats), delta, se, delta - z * se, delta + z * se,
                      mde, p_value, all(s.binary for s in stats), stats[0].unit)


def verdict(stat: PairedStat, tolerance: float, significant: bool | None = None) -> str:
    """"dropped": below -tolerance and significantly below zero (`significant`, e.g. after a
    multiple-testing correction; default: its own interval is below zero); "cannot tell": not
    dropped, but the check could not see a drop of `tolerance` (MDE > tolerance); else "passed"."""
    below = stat.upper < 0 if significant is None else significant and stat.delta < 0
    if stat.delta < -tolerance and below:
        return DROPPED
    return CANNOT_TELL if stat.mde > tolerance else PASSED


def holm(p_values: Sequence[float], alpha: float = 0.05) -> list[bool]:
    """Holm's step-down test of a family of p-values: which are significant with the chance of
    any false rejection in the family kept at `alpha` (p_(i) < alpha / (m - i), in order)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    significant = [False] * len(p_values)
    for rank, i in enumerate(order):
        if p_values[i] >= alpha / (len(p_values) - rank):
            break
        significant[i] = True
    return significant


def items_needed(target: float, stat: PairedStat, alpha: float = 0.05,
                 power: float = 0.95) -> int:
    """Items for an MDE of `target` at this stat's per-item spread (and the 0/1 floor)."""
    _, k = z_factor(alpha, power)
    sd = stat.se * math.sqrt(stat.n) if math.isfinite(stat.se) else 0.0
    n = (k * sd / target) ** 2
    if stat.binary:
        n = max(n, k * k * (1 - target) / target)
    return max(2, math.ceil(n))


def mcnemar_p(champion: Sequence[bool], candidate: Sequence[bool]) -> float:
    """Two-sided exact McNemar p-value on paired outcomes (binomial test on discordant pairs)."""
    only_candidate = sum(1 for a, b in zip(champion, candidate) if b and not a)
    only_champion = sum(1 for a, b in zip(champion, candidate) if a and not b)
    discordant = only_candidate + only_champion
    if discordant == 0:
        return 1.0
    return float(binomtest(only_candidate, discordant, 0.5).pvalue)


# ---------------------------------------------------------------------------- benchmark items

Scores = Mapping[str, Mapping[str, Mapping]]  # benchmark -> metric -> item key -> score


def compare(champion: Scores, candidate: Scores, alpha: float = 0.05, power: float = 0.95,
            items: Mapping[str, Sequence] | None = None
            ) -> tuple[dict[str, PairedStat], dict[str, PairedStat]]:
    """Per "benchmark/metric" paired stats over the items both models scored (or `items` per
    benchmark, repeats allowed: a bootstrap draw), and pooled over the benchmarks: the accuracy
    (each benchmark's first PRIMARY metric, else its first other one) and GOLD_LOGPROB."""
    stats: dict[str, PairedStat] = {}
    primary, gold = [], []
    for benchmark, mine in champion.items():
        theirs = candidate.get(benchmark, {})
        here = {}
        for metric, values in mine.items():
            other = theirs.get(metric, {})
            keys = items[benchmark] if items is not None else sorted(set(values) & set(other))
            if not keys:
                continue
            name = f"{benchmark}/{metric}"
            here[metric] = stats[name] = paired_stat(
                name, [values[k] for k in keys], [other[k] for k in keys], alpha, power,
                unit="nats" if metric == GOLD_LOGPROB else "accuracy")
        accuracy = [m for m in PRIMARY if m in here] or [m for m in here if m != GOLD_LOGPROB]
        if accuracy:
            primary.append(here[accuracy[0]])
        if GOLD_LOGPROB in here:
            gold.append(here[GOLD_LOGPROB])
    parts = {"pooled/accuracy": primary, f"pooled/{GOLD_LOGPROB}": gold}
    return stats, {name: pooled(name, found, alpha, power) for name, found in parts.items()
                   if found}


def gold_logprob(responses, target) -> float | None:
    """log p(gold | choices) from a multiple-choice sample's per-choice (loglik, greedy) pairs
    and its gold index; None when the sample is not of that shape."""
    try:
        logliks = [float(r[0]) for r in responses]
        gold = int(str(target).strip())
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    if len(logliks) < 2 or not 0 <= gold < len(logliks):
        return None
    top = max(logliks)
    return logliks[gold] - top - math.log(sum(math.exp(v - top) for v in logliks))


def sample_scores(rows: Sequence[Mapping]) -> dict[str, dict[tuple[str, int], float]]:
    """`benchmark_samples` rows (task, doc_id, metrics, responses, target) -> metric ->
    (task, doc_id) -> per-item score, plus GOLD_LOGPROB where the samples allow it."""
    out: dict[str, dict[tuple[str, int], float]] = {}
    for row in rows:
        key = (row["task"], int(row["doc_id"]))
        metrics = _loads(row.get("metrics")) or {}
        for metric, value in metrics.items():
            if isinstance(value, bool) or isinstance(value, (int, float)):
                if math.isfinite(float(value)):
                    out.setdefault(metric, {})[key] = float(value)
        gold = gold_logprob(_loads(row.get("responses")), row.get("target"))
        if gold is not None:
            out.setdefault(GOLD_LOGPROB, {})[key] = gold
    return out


def _loads(value):
    return json.loads(value) if isinstance(value, str) else value
