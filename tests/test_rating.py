"""Rating math: recovery of known strengths, seeded intervals, coverage, hand-computed Elo."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from evals.rating import (PRIOR, Outcome, agreement, bootstrap, difference_interval, fit_bt,
                          fit_bt_batch, leaderboard, online_elo, outcomes_from_verdicts,
                          unique_rows, win_rate_matrix)
from loop.core.errors import ConfigError

TRUE = {"weak": 900.0, "mid": 1000.0, "strong": 1150.0}


def simulate(n: int, rng: np.random.Generator, tie_rate: float = 0.1,
             truth: dict[str, float] = TRUE) -> list[Outcome]:
    """n battles between random pairs; P(A wins | no tie) from the true Elo-scale ratings."""
    models = list(truth)
    strength = np.array([truth[m] for m in models])
    pairs = np.array([rng.choice(len(models), size=2, replace=False) for _ in range(n)])
    p_a = 1 / (1 + 10 ** ((strength[pairs[:, 1]] - strength[pairs[:, 0]]) / 400))
    tie = rng.random(n) < tie_rate
    score = np.where(tie, 0.5, (rng.random(n) < p_a).astype(float))
    return [Outcome(models[a], models[b], float(s)) for (a, b), s in zip(pairs, score)]


def test_known_strengths_give_the_true_order():
    rows = leaderboard(simulate(1500, np.random.default_rng(1)), n_boot=50)
    assert [r.model for r in rows] == ["strong", "mid", "weak"]
    assert [r.rank for r in rows] == [1, 2, 3]  # well separated: no overlapping intervals
    assert abs((rows[0].rating - rows[-1].rating) - 250) < 60
    assert sum(r.n_matches for r in rows) == 2 * 1500
    assert all(r.lower <= r.rating <= r.upper for r in rows)


def test_fit_is_the_maximum_likelihood_estimate():
    # independent check: minimise the (ties-as-half-wins) negative log-likelihood with BFGS
    outcomes = simulate(600, np.random.default_rng(4), tie_rate=0.2,
                        truth={"a": 1000.0, "b": 1080.0, "c": 950.0, "d": 1200.0})
    _, rows, counts = unique_rows(outcomes)
    a, b, s = rows[:, 0].astype(int), rows[:, 1].astype(int), rows[:, 2]

    def nll(theta):
        d = theta[a] - theta[b]
        loglik = s * -np.logaddexp(0, -d) + (1 - s) * -np.logaddexp(0, d)
        return -(counts * loglik).sum() + PRIOR / 2 * (theta ** 2).sum()

    expected = minimize(nll, np.zeros(4), method="BFGS", options={"gtol": 1e-9}).x
    np.testing.assert_allclose(fit_bt(4, rows, counts), expected - expected.mean(), atol=1e-5)
    batch = fit_bt_batch(4, rows, np.stack([counts, 2 * counts]))
    np.testing.assert_allclose(batch[0], fit_bt(4, rows, counts), atol=1e-9)
    np.testing.assert_allclose(batch[1], fit_bt(4, rows, 2 * counts), atol=1e-9)


def test_intervals_are_identical_for_a_fixed_seed():
    data = simulate(300, np.random.default_rng(2))
    first, second = leaderboard(data, seed=7), leaderboard(data, seed=7)
    assert first == second
    assert leaderboard(data, seed=8) != first


def test_95_interval_covers_the_true_difference_in_at_least_90_percent_of_datasets():
    rng = np.random.default_rng(3)
    covered, widths, runs = 0, [], 200
    truth = TRUE["strong"] - TRUE["weak"]
    for _ in range(runs):  # no ties: random ties would shrink the estimand towards 0
        models, _, samples = bootstrap(simulate(300, rng, tie_rate=0.0), n_boot=200,
                                       seed=int(rng.integers(1 << 30)))
        lo, hi = difference_interval(samples, models.index("strong"), models.index("weak"))
        covered += lo <= truth <= hi
        widths.append(hi - lo)
    assert covered / runs >= 0.90, covered
    assert np.median(widths) < 250  # and not by being uselessly wide (~100 matches per pair)


def test_overlapping_intervals_share_a_rank():
    data = [Outcome("a", "b", 1.0), Outcome("a", "b", 0.0)] * 5
    rows = leaderboard(data, n_boot=50)
    assert {r.rank for r in rows} == {1}
    assert rows[0].win_rate == 0.5


def test_rank_counts_only_models_clearly_above():
    # strong clearly beats both; mid and weak are indistinguishable from each other
    data = ([Outcome("strong", "mid", 1.0)] * 40 + [Outcome("strong", "weak", 1.0)] * 40
            + [Outcome("mid", "weak", 1.0), Outcome("mid", "weak", 0.0)] * 20)
    ranks = {r.model: r.rank for r in leaderboard(data, n_boot=100)}
    assert ranks == {"strong": 1, "mid": 2, "weak": 2}


def test_anchor_pins_a_reference_model_at_1000():
    data = simulate(400, np.random.default_rng(5))
    mean_rows = {r.model: r for r in leaderboard(data, seed=1)}
    rows = {r.model: r for r in leaderboard(data, seed=1, anchor="mid")}
    assert rows["mid"].rating == pytest.approx(1000) and rows["mid"].lower == pytest.approx(1000)
    gap = rows["strong"].rating - rows["weak"].rating  # differences do not depend on the anchor
    assert gap == pytest.approx(mean_rows["strong"].rating - mean_rows["weak"].rating)
    assert np.mean([r.rating for r in mean_rows.values()]) == pytest.approx(1000)
    with pytest.raises(ConfigError, match="no matches"):
        leaderboard(data, anchor="absent")


def test_one_sided_results_stay_finite():
    theta = fit_bt(2, np.array([[0, 1, 1.0]]), np.array([20.0]))
    assert np.all(np.isfinite(theta)) and theta[0] > theta[1]


def test_online_elo_matches_a_hand_computed_sequence():
    # K = 32. Game 1: a(1000) beats b(1000): expected 0.5 -> a 1016, b 984.
    # Game 2: b(984) vs c(1000) tie: E_b = 1/(1+10^(16/400)) = 0.47699 -> b 984 + 32*0.02301
    #   = 984.7363, c = 1000 - 0.7363 = 999.2637.
    # Game 3: c(999.2637) beats a(1016): E_c = 1/(1+10^(16.7363/400)) = 0.475934
    #   -> c = 999.2637 + 32*0.524066 = 1016.0338, a = 1016 - 16.7701 = 999.2299.
    ratings = online_elo([Outcome("a", "b", 1.0), Outcome("b", "c", 0.5),
                          Outcome("c", "a", 1.0)], k=32)
    assert ratings["b"] == pytest.approx(984.7363, abs=1e-3)
    assert ratings["c"] == pytest.approx(1016.0338, abs=1e-3)
    assert ratings["a"] == pytest.approx(999.2299, abs=1e-3)
    # default K = 4: game 1 moves each side by 4 * 0.5 = 2 points
    assert online_elo([Outcome("a", "b", 1.0)]) == {"a": 1002.0, "b": 998.0}


def test_verdicts_win_rates_and_agreement():
    outs = outcomes_from_verdicts([("a", "b", "A"), ("a", "b", "tie"), ("b", "a", "both_bad"),
                                   ("a", "b", "error"), ("a", "b", None)])
    assert [o.score for o in outs] == [1.0, 0.5, 0.5]
    models, rates = win_rate_matrix(outs)
    assert models == ["a", "b"] and rates[0, 1] == pytest.approx(2 / 3)
    assert rates[1, 0] == pytest.approx(1 / 3) and np.isnan(rates[0, 0])
    rate, n = agreement({("e1", "a", "b"): "A", ("e2", "a", "b"): "B", ("e4", "a", "b"): "tie"},
                        {("e1", "a", "b"): "A", ("e2", "a", "b"): "tie", ("e3", "a", "b"): "A",
                         ("e4", "a", "b"): "both_bad"})
    assert (rate, n) == (2 / 3, 3)
    assert agreement({("e1", "a", "b"): "A"}, {}) == (None, 0)
