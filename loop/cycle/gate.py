"""The promotion gate (pure): champion vs candidate on the held-out test split -> a decision.

The candidate is promoted only when every condition holds:
  1. its pass rate beats the champion's by at least `min_gain`, on the same items;
  2. the gain is significant: exact McNemar test on the paired outcomes, p < `alpha`;
  3. no category's pass rate drops by more than `category_tolerance` beyond its noise: the drop
     must also be significant (exact McNemar on the category's items) after Holm's correction
     over all categories, so small categories (a 151-label task has 128 of 1-4 test items)
     cannot block a model on the few items that flip by chance;
  4. its Bradley-Terry rating is above the champion's (when ratings are given);
  5. no benchmark check drops: each is a paired difference on the same seeded items
     (evals.paired: interval, minimum detectable effect), per benchmark metric against
     `benchmark_tolerance` and pooled over the benchmarks against `pooled_tolerance`; the gold
     choice's log-probability (per benchmark and pooled) against `logprob_tolerance` when set. A check
     "dropped" when the difference is below -tolerance and significantly below zero, by Holm's
     correction over all benchmark checks of the cycle (a dozen checks at 5% each would block
     every other good candidate on chance alone); it "cannot
     tell" when its MDE exceeds its tolerance (too few items to see a drop that large), and
     `cannot_tell` decides what that does (default: keeps the champion unless the task gain is at
     least `small_gain`).
Every condition yields a reason, passed or not, with its numbers (difference, interval, MDE), so
the report shows why and what the check could see. The gain check states its MDE and, when that
exceeds `min_gain`, the test size that would see `min_gain`. The thresholds are the task's [gate]
settings (loop.core.settings.GateSettings).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import math

from evals.paired import (CANNOT_TELL, DROPPED, PairedStat, holm, items_needed, mcnemar_p,
                          normal_p, paired_stat, verdict, z_factor)
from loop.core.settings import GateSettings

__all__ = ["NOISE_Z", "GateInputs", "PromotionDecision", "Reason", "decide", "mcnemar_p"]

NOISE_Z = 1.96  # two-sided 95% (the prompt arm's interval; the gate's own follow [gate] alpha)


@dataclass(frozen=True)
class GateInputs:
    """Paired outcomes on the test split, keyed by example id, plus optional extra evidence."""

    champion: Mapping[str, bool]
    candidate: Mapping[str, bool]
    categories: Mapping[str, str]  # example id -> category
    champion_rating: float | None = None
    candidate_rating: float | None = None
    benchmark_stats: Mapping[str, PairedStat] = field(default_factory=dict)  # task/metric ->
    pooled_stats: Mapping[str, PairedStat] = field(default_factory=dict)  # over the benchmarks
    # results stored before paired stats: a delta and its (unpaired) standard error
    benchmark_deltas: Mapping[str, float] = field(default_factory=dict)
    benchmark_se: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Reason:
    check: str
    passed: bool
    detail: str
    status: str | None = None  # "passed", "failed", "dropped", "cannot tell"
    delta: float | None = None
    lower: float | None = None  # the difference's interval
    upper: float | None = None
    mde: float | None = None  # smallest change the check sees with probability `power`


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
                "reasons": [reason_json(r) for r in self.reasons]}

    @classmethod
    def from_json(cls, data: dict) -> PromotionDecision:
        return cls(data["promote"], tuple(Reason(**r) for r in data["reasons"]), data["p_value"],
                   data["champion_pass_rate"], data["candidate_pass_rate"])


def reason_json(reason: Reason) -> dict:
    """A reason as stored: check, passed, detail, then the numbers it has (infinite bounds, from
    too few items, as None)."""
    data = {k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in reason.__dict__.items()}
    return {k: v for k, v in data.items() if k in ("check", "passed", "detail") or v is not None}


def decide(inputs: GateInputs, config: GateSettings = GateSettings()) -> PromotionDecision:
    ids = sorted(set(inputs.champion) & set(inputs.candidate))
    if not ids:
        reason = Reason("paired_items", False, "no test items scored for both models", "failed")
        return PromotionDecision(False, (reason,), 1.0, 0.0, 0.0)
    champ = [inputs.champion[i] for i in ids]
    cand = [inputs.candidate[i] for i in ids]
    champ_rate, cand_rate = sum(champ) / len(ids), sum(cand) / len(ids)
    gain, p_value = cand_rate - champ_rate, mcnemar_p(champ, cand)
    reasons = [_gain_reason(champ, cand, config),
               _status(Reason("significance", p_value < config.alpha and gain > 0,
                              f"McNemar exact p = {p_value:.3g} (needs < {config.alpha} with a "
                              f"gain)"))]
    reasons.append(_category_reason(ids, champ, cand, inputs.categories, config))
    if inputs.champion_rating is not None and inputs.candidate_rating is not None:
        better = inputs.candidate_rating > inputs.champion_rating
        reasons.append(_status(Reason("rating", better,
                                      f"Bradley-Terry {inputs.champion_rating:.0f} -> "
                                      f"{inputs.candidate_rating:.0f} (intervals: leaderboard)")))
    elif config.require_rating:
        reasons.append(Reason("rating", False, "no pairwise rating available", "failed"))
    stats = dict(inputs.benchmark_stats) or {
        name: _unpaired(name, delta, _or_inf(inputs.benchmark_se.get(name, 0.0)), config)
        for name, delta in inputs.benchmark_deltas.items()}
    checks = [(stats[n], _tolerance(stats[n], config.benchmark_tolerance, config))
              for n in sorted(stats)]
    checks += [(s, _tolerance(s, config.pooled_tolerance, config))
               for _, s in sorted(inputs.pooled_stats.items())]
    checks = [(stat, tolerance) for stat, tolerance in checks if tolerance is not None]
    # a benchmark (or the pooled group) can tell when one of its signals sees its tolerance
    seen = {stat.name.split("/")[0] for stat, tolerance in checks if stat.mde <= tolerance}
    significant = holm([stat.p_value for stat, _ in checks], config.alpha)
    reasons += [_benchmark_reason(stat, tolerance, gain, config, seen, sig, len(checks))
                for (stat, tolerance), sig in zip(checks, significant)]
    return PromotionDecision(all(r.passed for r in reasons), tuple(reasons), p_value,
                             champ_rate, cand_rate)


def _status(reason: Reason) -> Reason:
    return Reason(**{**reason.__dict__, "status": "passed" if reason.passed else "failed"})


def _gain_reason(champ: list[bool], cand: list[bool], config: GateSettings) -> Reason:
    """The task gain with its paired interval and MDE; a test split too small to see `min_gain`
    says how many items would."""
    stat = paired_stat("gain", [float(a) for a in champ], [float(b) for b in cand],
                       config.alpha, config.power)
    n, champ_rate = len(champ), sum(champ) / len(champ)
    passed = stat.delta >= config.min_gain
    detail = (f"test pass rate {champ_rate:.1%} -> {champ_rate + stat.delta:.1%} "
              f"({stat.delta:+.1%}, needs >= {config.min_gain:+.1%}) on {n} paired items; "
              f"{_interval(stat, percent=True)}, MDE {_fmt(stat.mde, percent=True)}")
    if stat.mde > config.min_gain > 0:
        detail += (f"; this test split cannot see a {config.min_gain:.1%} gain: about "
                   f"{items_needed(config.min_gain, stat, config.alpha, config.power)} items "
                   f"would")
    return Reason("gain", passed, detail, "passed" if passed else "failed", stat.delta,
                  stat.lower, stat.upper, stat.mde)


def _tolerance(stat: PairedStat, accuracy: float, config: GateSettings) -> float | None:
    """The check's tolerance; None: not a gate check (gold_logprob unless logprob_tolerance)."""
    return config.logprob_tolerance if stat.unit == "nats" else accuracy


def _or_inf(se: float | None) -> float:
    return math.inf if se is None else se


def _unpaired(name: str, delta: float, se: float, config: GateSettings) -> PairedStat:
    """A stored delta with its standard error (results from before paired stats)."""
    z, k = z_factor(config.alpha, config.power)
    return PairedStat(name, 0, delta, se, delta - z * se, delta + z * se, k * se,
                      normal_p(delta, se), False)


def _benchmark_reason(stat: PairedStat, tolerance: float, gain: float, config: GateSettings,
                      seen: set[str], significant: bool = True, family: int = 1) -> Reason:
    """One benchmark check. "cannot tell" keeps the champion (per `cannot_tell`) only when no
    signal of the same benchmark (accuracy or gold_logprob; pooled: either pooled one) can.
    `significant`: the drop survives Holm's correction over the `family` of benchmark checks."""
    status = verdict(stat, tolerance, significant=significant and stat.upper < 0)
    group = stat.name.split("/")[0]
    blocks = status == DROPPED or status == CANNOT_TELL and group not in seen and (
        config.cannot_tell == "keep"
        or config.cannot_tell == "keep_if_small_gain" and gain < config.small_gain)
    nats = stat.unit == "nats"
    detail = (f"{stat.name} {_fmt(stat.delta, signed=True, nats=nats)} "
              f"({_interval(stat, nats=nats)}{f' on {stat.n} paired items' if stat.n else ''}; "
              f"tolerance -{_fmt(tolerance, nats=nats)}, MDE {_fmt(stat.mde, nats=nats)})")
    if stat.delta < -tolerance and stat.upper < 0 and status != DROPPED:
        detail += (f"; below zero alone (p = {stat.p_value:.2g}) but not over {family} benchmark "
                   f"checks (Holm, alpha {config.alpha:g})")
    if status == CANNOT_TELL:
        detail += f": cannot tell, too few items to see a drop of {_fmt(tolerance, nats=nats)}"
        if group in seen:
            detail += f" (another {group} signal can)"
        elif blocks:
            detail += "; keeps the champion" + (
                f" (task gain {gain:+.1%} < small_gain {config.small_gain:.0%})"
                if config.cannot_tell != "keep" else "")
        else:
            detail += ("; not blocking: cannot_tell = ignore" if config.cannot_tell == "ignore"
                       else f"; not blocking: task gain {gain:+.1%} >= small_gain "
                            f"{config.small_gain:.0%}")
    return Reason(f"benchmark:{stat.name}", not blocks, detail, status, stat.delta, stat.lower,
                  stat.upper, stat.mde)


def _interval(stat: PairedStat, percent: bool = False, nats: bool = False) -> str:
    if not math.isfinite(stat.se):
        return "no interval (fewer than 2 items)"
    return (f"interval [{_fmt(stat.lower, True, percent)}, {_fmt(stat.upper, True, percent)}]"
            + (" nats" if nats else ""))


def _fmt(value: float, signed: bool = False, percent: bool = False, nats: bool = False) -> str:
    if not math.isfinite(value):
        return "n/a (fewer than 2 items)"
    sign = "+" if signed else ""
    if percent:
        return f"{value:{sign}.1%}"
    return f"{value:{sign}.3f}" + (" nats" if nats else "")


def _category_reason(ids, champ, cand, categories, config) -> Reason:
    by_cat: dict[str, tuple[list[float], list[float]]] = {}
    for i, a, b in zip(ids, champ, cand):
        pair = by_cat.setdefault(categories.get(i, "default"), ([], []))
        pair[0].append(float(a))
        pair[1].append(float(b))
    stats = {cat: paired_stat(cat, a, b, config.alpha, config.power)
             for cat, (a, b) in by_cat.items()}
    # one test per category, Holm over all of them: with 128 categories of 1-4 items (a
    # 151-label task), some 2-item category loses both items by chance in most cycles, and a
    # per-item spread of zero made that look "beyond noise" (sd of [-1, -1] is 0). The test is
    # exact McNemar on the category's discordant items.
    significant = dict(zip(stats, holm([s.p_value for s in stats.values()], config.alpha)))
    drops, noisy = {}, {}
    for cat, stat in stats.items():
        if stat.delta >= -config.category_tolerance:
            continue
        dropped = verdict(stat, config.category_tolerance, significant=significant[cat])
        (drops if dropped == DROPPED else noisy)[cat] = stat.delta

    def listed(found: dict[str, float]) -> str:
        return ", ".join(f"{c} {d:+.1%} (n={stats[c].n})"
                         for c, d in sorted(found.items(), key=lambda x: x[1]))

    within = f"; within noise: {listed(noisy)}" if noisy else ""
    mdes = sorted(s.mde for s in stats.values())
    power = f"; MDE per category {_fmt(mdes[0], percent=True)}" + (
        f" to {_fmt(mdes[-1], percent=True)}" if mdes[-1] != mdes[0] else "")
    if drops:
        return Reason("categories", False, f"regressed beyond -{config.category_tolerance:.0%} "
                                           f"and noise: {listed(drops)}{within}{power}", "failed")
    return Reason("categories", True, f"no category of {len(by_cat)} dropped beyond "
                                      f"-{config.category_tolerance:.0%} and noise{within}{power}",
                  "passed")
