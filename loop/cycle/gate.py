"""The promotion gate (pure): champion vs candidate on the held-out test split -> a decision.

The candidate is promoted only when every condition holds:
  1. its pass rate beats the champion's by at least `min_gain`, on the same items;
  2. the gain is significant: exact McNemar test on the paired outcomes, p < `alpha`;
  3. no category's pass rate drops by more than `category_tolerance` beyond its noise: the drop
     must also exceed 1.96 standard errors of the category's paired per-item differences, so a
     2-item category (real tasks have dozens) cannot block a model on one flipped item;
  4. its Bradley-Terry rating is above the champion's (when ratings are given);
  5. no benchmark drops by more than `benchmark_tolerance` (absolute, when given) beyond its
     sampling noise: a drop counts only when it is also larger than 1.96 standard errors of the
     difference, so a 40-item nightly subset cannot block a model on two flipped items.
Every condition yields a reason, passed or not, so the report shows why. The thresholds are the
task's [gate] settings (loop.core.settings.GateSettings).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from scipy.stats import binomtest

from loop.core.settings import GateSettings


@dataclass(frozen=True)
class GateInputs:
    """Paired outcomes on the test split, keyed by example id, plus optional extra evidence."""

    champion: Mapping[str, bool]
    candidate: Mapping[str, bool]
    categories: Mapping[str, str]  # example id -> category
    champion_rating: float | None = None
    candidate_rating: float | None = None
    benchmark_deltas: Mapping[str, float] = field(default_factory=dict)  # task/metric -> cand - champ
    benchmark_se: Mapping[str, float] = field(default_factory=dict)  # std. error of each delta


@dataclass(frozen=True)
class Reason:
    check: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reasons: tuple[Reason, ...]
    p_value: float
    champion_pass_rate: float
    candidate_pass_rate: float

    def to_json(self) -> dict:
        return {"promote": self.promote, "p_value": self.p_value,
                "champion_pass_rate": self.champion_pass_rate,
                "candidate_pass_rate": self.candidate_pass_rate,
                "reasons": [r.__dict__ for r in self.reasons]}

    @classmethod
    def from_json(cls, data: dict) -> PromotionDecision:
        return cls(data["promote"], tuple(Reason(**r) for r in data["reasons"]), data["p_value"],
                   data["champion_pass_rate"], data["candidate_pass_rate"])


def mcnemar_p(champion: list[bool], candidate: list[bool]) -> float:
    """Two-sided exact McNemar p-value on paired outcomes (binomial test on discordant pairs)."""
    only_candidate = sum(1 for a, b in zip(champion, candidate) if b and not a)
    only_champion = sum(1 for a, b in zip(champion, candidate) if a and not b)
    discordant = only_candidate + only_champion
    if discordant == 0:
        return 1.0
    return float(binomtest(only_candidate, discordant, 0.5).pvalue)


def decide(inputs: GateInputs, config: GateSettings = GateSettings()) -> PromotionDecision:
    ids = sorted(set(inputs.champion) & set(inputs.candidate))
    if not ids:
        reason = Reason("paired_items", False, "no test items scored for both models")
        return PromotionDecision(False, (reason,), 1.0, 0.0, 0.0)
    champ = [inputs.champion[i] for i in ids]
    cand = [inputs.candidate[i] for i in ids]
    champ_rate, cand_rate = sum(champ) / len(ids), sum(cand) / len(ids)
    gain, p_value = cand_rate - champ_rate, mcnemar_p(champ, cand)
    reasons = [
        Reason("gain", gain >= config.min_gain,
               f"test pass rate {champ_rate:.1%} -> {cand_rate:.1%} ({gain:+.1%}, needs "
               f">= {config.min_gain:+.1%}) on {len(ids)} paired items"),
        Reason("significance", p_value < config.alpha and gain > 0,
               f"McNemar exact p = {p_value:.3g} (needs < {config.alpha} with a gain)"),
    ]
    reasons.append(_category_reason(ids, champ, cand, inputs.categories, config))
    if inputs.champion_rating is not None and inputs.candidate_rating is not None:
        better = inputs.candidate_rating > inputs.champion_rating
        reasons.append(Reason("rating", better,
                              f"Bradley-Terry {inputs.champion_rating:.0f} -> "
                              f"{inputs.candidate_rating:.0f}"))
    elif config.require_rating:
        reasons.append(Reason("rating", False, "no pairwise rating available"))
    reasons += [_benchmark_reason(name, delta, inputs.benchmark_se.get(name, 0.0), config)
                for name, delta in sorted(inputs.benchmark_deltas.items())]
    return PromotionDecision(all(r.passed for r in reasons), tuple(reasons), p_value,
                             champ_rate, cand_rate)


def _benchmark_reason(name: str, delta: float, se: float, config: GateSettings) -> Reason:
    noise = 1.96 * se
    dropped = delta < -config.benchmark_tolerance and delta < -noise
    return Reason(f"benchmark:{name}", not dropped,
                  f"{name} {delta:+.3f} (tolerance -{config.benchmark_tolerance:.3f}, "
                  f"noise ±{noise:.3f})")


def _category_reason(ids, champ, cand, categories, config) -> Reason:
    by_cat: dict[str, list[int]] = {}
    for i, a, b in zip(ids, champ, cand):
        by_cat.setdefault(categories.get(i, "default"), []).append(int(b) - int(a))
    drops, noisy = {}, {}
    for cat, diffs in by_cat.items():
        delta = sum(diffs) / len(diffs)
        if delta >= -config.category_tolerance:
            continue
        if delta < -NOISE_Z * _paired_se(diffs):
            drops[cat] = delta
        else:
            noisy[cat] = delta
    def listed(found: dict[str, float]) -> str:
        return ", ".join(f"{c} {d:+.1%} (n={len(by_cat[c])})"
                         for c, d in sorted(found.items(), key=lambda x: x[1]))

    within = f"; within noise: {listed(noisy)}" if noisy else ""
    if drops:
        worst = listed(drops)
        return Reason("categories", False, f"regressed beyond -{config.category_tolerance:.0%} "
                                           f"and noise: {worst}{within}")
    return Reason("categories", True, f"no category of {len(by_cat)} dropped beyond "
                                      f"-{config.category_tolerance:.0%} and noise{within}")


NOISE_Z = 1.96  # two-sided 95%


def _paired_se(diffs: list[int]) -> float:
    """Standard error of the mean paired difference; one item has no measurable noise, so any
    drop of a single-item category is noise (infinite error)."""
    n = len(diffs)
    if n < 2:
        return float("inf")
    mean = sum(diffs) / n
    return (sum((d - mean) ** 2 for d in diffs) / (n - 1) / n) ** 0.5
