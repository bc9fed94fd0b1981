"""Rating math: recovery of known strengths, seeded intervals, coverage, hand-computed Elo."""

from __future__ import annotations

import numpy as np
import pytest

from evals.rating import (Outcome, agreement, bootstrap, difference_interval, fit_bt,
                          leaderboard, online_elo, outcomes_from_verdicts, win_rate_matrix)

TRUE = {"weak": 900.0, "mid": 1000.0, "strong": 1150.0}


def simulate(n: int, rng: np.random.Generator, tie_rate: float = 0.1) -> list[Outcome]:
    models = list(TRUE)
    out = []
    for _ in range(n):
        a, b = rng.choice(3, size=2, replace=False)
        p = 1 / (1 + 10 ** ((TRUE[models[b]] - TRUE[models[a]]) / 400))
        u = rng.random()
        score = 0.5 if u < tie_rate else (1.0 if rng.random() < p else 0.0)
        out.append(Outcome(models[a], models[b], score))
    return out


def test_known_strengths_give_the_true_order():
    rows = leaderboard(simulate(1500, np.random.default_rng(1)), n_boot=50)
    assert [r.model for r in rows] == ["strong", "mid", "weak"]
    assert rows[0].rank == 1 and rows[-1].rank == 3
    assert abs((rows[0].rating - rows[-1].rating) - 250) < 60


def test_intervals_are_identical_for_a_fixed_seed():
    data = simulate(300, np.random.default_rng(2))
    first, second = leaderboard(data, seed=7), leaderboard(data, seed=7)
    assert first == second
    assert leaderboard(data, seed=8) != first


def test_95_interval_covers_the_true_difference_in_at_least_90_percent_of_datasets():
    rng = np.random.default_rng(3)
    covered, runs = 0, 200
    truth = TRUE["strong"] - TRUE["weak"]
    for _ in range(runs):
        models, _, samples = bootstrap(simulate(300, rng, tie_rate=0.0), n_boot=200,
                                       seed=int(rng.integers(1 << 30)))
        lo, hi = difference_interval(samples, models.index("strong"), models.index("weak"))
        covered += lo <= truth <= hi
    assert covered / runs >= 0.90, covered


def test_overlapping_intervals_share_a_rank():
    data = [Outcome("a", "b", 1.0), Outcome("a", "b", 0.0)] * 5
    rows = leaderboard(data, n_boot=50)
    assert {r.rank for r in rows} == {1}


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


def test_verdicts_win_rates_and_agreement():
    outs = outcomes_from_verdicts([("a", "b", "A"), ("a", "b", "tie"), ("b", "a", "both_bad"),
                                   ("a", "b", "error")])
    assert [o.score for o in outs] == [1.0, 0.5, 0.5]
    models, rates = win_rate_matrix(outs)
    assert models == ["a", "b"] and rates[0, 1] == pytest.approx(2 / 3)
    assert np.isnan(rates[0, 0])
    rate, n = agreement({("e1", "a", "b"): "A", ("e2", "a", "b"): "B"},
                        {("e1", "a", "b"): "A", ("e2", "a", "b"): "tie", ("e3", "a", "b"): "A"})
    assert (rate, n) == (0.5, 2)
