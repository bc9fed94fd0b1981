"""Promotion gate: significance, category regressions, ratings, benchmark tolerance."""

from __future__ import annotations

import pytest

from loop.core.settings import GateSettings
from loop.cycle.gate import GateInputs, decide, mcnemar_p


def outcomes(n_pass: int, n: int, offset: int = 0) -> dict[str, bool]:
    return {f"e{i}": (i - offset) % n < n_pass for i in range(n)}


def make_inputs(champ_pass: int, cand_pass: int, n: int = 200, **kw) -> GateInputs:
    champion = {f"e{i}": i < champ_pass for i in range(n)}
    candidate = {f"e{i}": i < cand_pass for i in range(n)}
    categories = {f"e{i}": "a" if i % 2 else "b" for i in range(n)}
    return GateInputs(champion, candidate, categories, **kw)


def test_clear_gain_with_everything_else_fine_is_promoted():
    decision = decide(make_inputs(40, 120, champion_rating=950, candidate_rating=1050,
                                  benchmark_deltas={"arc_easy/acc": -0.005}))
    assert decision.promote, decision.reasons
    assert decision.p_value < 1e-6
    assert {r.check for r in decision.reasons} >= {"gain", "significance", "categories", "rating",
                                                   "benchmark:arc_easy/acc"}


def test_better_on_task_but_benchmark_drop_is_rejected_with_that_reason():
    decision = decide(make_inputs(40, 120, champion_rating=950, candidate_rating=1050,
                                  benchmark_deltas={"hellaswag/acc_norm": -0.06}))
    assert not decision.promote
    failed = [r for r in decision.reasons if not r.passed]
    assert [r.check for r in failed] == ["benchmark:hellaswag/acc_norm"]
    assert "-0.060" in failed[0].detail


def test_a_benchmark_drop_within_sampling_noise_does_not_block():
    noisy = make_inputs(40, 120, champion_rating=950, candidate_rating=1050,
                        benchmark_deltas={"arc_easy/acc_norm": -0.05},
                        benchmark_se={"arc_easy/acc_norm": 0.11})
    assert decide(noisy).promote
    precise = make_inputs(40, 120, champion_rating=950, candidate_rating=1050,
                          benchmark_deltas={"arc_easy/acc_norm": -0.08},
                          benchmark_se={"arc_easy/acc_norm": 0.01})
    assert not decide(precise).promote


def test_insignificant_gain_is_rejected_with_the_p_value():
    decision = decide(make_inputs(100, 104, champion_rating=990, candidate_rating=1010),
                      GateSettings(min_gain=0.01))
    assert not decision.promote
    (sig,) = [r for r in decision.reasons if r.check == "significance"]
    assert not sig.passed and f"p = {decision.p_value:.3g}" in sig.detail
    assert decision.p_value > 0.05


def test_category_regression_blocks_promotion():
    n = 200
    champion = {f"e{i}": i % 4 == 0 for i in range(n)}
    candidate = {f"e{i}": (i % 2 == 1) or (i < 20) for i in range(n)}  # "b" items mostly lost
    categories = {f"e{i}": "a" if i % 2 else "b" for i in range(n)}
    decision = decide(GateInputs(champion, candidate, categories, 900, 1100))
    (cat,) = [r for r in decision.reasons if r.check == "categories"]
    assert not cat.passed and "b " in cat.detail and not decision.promote


def test_lower_rating_or_missing_rating_blocks_promotion():
    assert not decide(make_inputs(40, 120, champion_rating=1100, candidate_rating=900)).promote
    assert not decide(make_inputs(40, 120)).promote
    assert decide(make_inputs(40, 120), GateSettings(require_rating=False)).promote


def test_mcnemar_matches_binomial_on_discordant_pairs():
    assert mcnemar_p([True] * 10, [True] * 10) == 1.0
    # 8 discordant pairs all favouring the candidate: two-sided p = 2 * 0.5**8
    assert mcnemar_p([False] * 8 + [True] * 2, [True] * 10) == pytest.approx(2 * 0.5 ** 8)


def test_no_paired_items_is_a_rejection():
    decision = decide(GateInputs({"a": True}, {"b": True}, {}))
    assert not decision.promote and decision.reasons[0].check == "paired_items"


def test_a_small_category_losing_one_item_is_noise_not_a_regression():
    n = 200
    champion = {f"e{i}": i < 60 for i in range(n)}
    candidate = {f"e{i}": i < 140 for i in range(n)}
    candidate["e0"] = False  # the one item of category "tiny" flips
    categories = {f"e{i}": "tiny" if i == 0 else "small" if i < 3 else "rest" for i in range(n)}
    candidate["e1"] = False  # one of three "small" items flips
    decision = decide(GateInputs(champion, candidate, categories, 900, 1100))
    (cat,) = [r for r in decision.reasons if r.check == "categories"]
    assert cat.passed and "within noise: tiny -100.0% (n=1)" in cat.detail
    assert decision.promote


def test_holm_keeps_the_family_wise_error_at_alpha():
    from evals.paired import holm

    assert holm([0.001, 0.04, 0.5], 0.05) == [True, False, False]  # 0.04 >= 0.05 / 2
    assert holm([0.01, 0.02], 0.05) == [True, True]  # 0.01 < 0.025, then 0.02 < 0.05
    assert holm([0.03, 0.001], 0.05) == [True, True]
    assert holm([], 0.05) == []


def test_one_marginal_drop_among_many_benchmark_checks_is_not_a_drop():
    """Twelve checks at 5% each would block a good candidate on chance about half the time: a
    drop significant alone (p ~ 0.007) but not after Holm's correction does not block; a strong
    one still does, and one check alone is tested at alpha as before."""
    from evals.paired import PairedStat

    def stat(name, delta, se):
        from scipy.stats import norm
        return PairedStat(name, 40, delta, se, delta - 1.96 * se, delta + 1.96 * se, 0.04,
                          2 * float(norm.sf(abs(delta) / se)), False)

    flat = {f"b{i}/acc": stat(f"b{i}/acc", 0.01, 0.01) for i in range(11)}
    marginal = {**flat, "mc2/acc": stat("mc2/acc", -0.076, 0.028)}
    decision = decide(make_inputs(40, 120, benchmark_stats=marginal, champion_rating=950,
                                  candidate_rating=1050))
    (line,) = [r for r in decision.reasons if r.check == "benchmark:mc2/acc"]
    assert line.passed and line.status != "dropped" and "Holm" in line.detail
    assert decision.promote
    strong = {**flat, "mc2/acc": stat("mc2/acc", -0.12, 0.02)}
    assert not decide(make_inputs(40, 120, benchmark_stats=strong, champion_rating=950,
                                  candidate_rating=1050)).promote
    alone = {"mc2/acc": stat("mc2/acc", -0.076, 0.028)}
    assert not decide(make_inputs(40, 120, benchmark_stats=alone, champion_rating=950,
                                  candidate_rating=1050)).promote


def test_many_small_categories_two_items_both_lost_is_chance_not_a_regression():
    """A 151-label task has ~128 categories of 1-4 test items: one of them losing both its items
    (a per-item spread of zero) is what chance gives among so many; a big category that loses
    most of its items still blocks."""
    n = 300
    champion = {f"e{i}": i < 200 for i in range(n)}
    candidate = {f"e{i}": i < 230 for i in range(n)}
    categories = {f"e{i}": f"label{i // 2}" for i in range(n)}  # 150 categories of 2 items
    candidate["e0"] = candidate["e1"] = False  # label0 goes 2/2 -> 0/2
    decision = decide(GateInputs(champion, candidate, categories, 900, 1100))
    (cat,) = [r for r in decision.reasons if r.check == "categories"]
    assert cat.passed and "within noise: label0 -100.0% (n=2)" in cat.detail
    big = {f"e{i}": "big" if i < 40 else f"label{i // 2}" for i in range(n)}
    lost = {**candidate, **{f"e{i}": False for i in range(40)}}  # big: 40/40 -> 0/40
    (cat,) = [r for r in decide(GateInputs(champion, lost, big, 900, 1100)).reasons
              if r.check == "categories"]
    assert not cat.passed and "big -100.0% (n=40)" in cat.detail
