"""Ratings from pairwise outcomes (pure numpy): Bradley-Terry with bootstrap intervals, online Elo.

Outcomes are (model_a, model_b, score) with score 1 when A won, 0 when B won and 0.5 for a tie
(ties and "both bad" count as half a win each). Ratings use the Elo scale (400 points = 10x
odds) centred on 1000. Bradley-Terry is the primary view for static checkpoints; online Elo
depends on match order and is shown only as a secondary view.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SCALE, BASE, INIT = 400.0, 10.0, 1000.0
PRIOR = 0.01  # weak Gaussian prior on log-strengths: finite ratings when one model wins all


@dataclass(frozen=True)
class Outcome:
    model_a: str
    model_b: str
    score: float  # 1 A won, 0.5 tie, 0 B won


@dataclass(frozen=True)
class RatingRow:
    model: str
    rating: float
    lower: float
    upper: float
    rank: int
    n_matches: int
    wins: float
    losses: float
    ties: float


VERDICT_SCORE = {"A": 1.0, "B": 0.0, "tie": 0.5, "both_bad": 0.5}


def outcomes_from_verdicts(rows: Sequence[tuple[str, str, str]]) -> list[Outcome]:
    """(model_a, model_b, verdict) -> outcomes; errors and unknown verdicts are dropped."""
    return [Outcome(a, b, VERDICT_SCORE[v]) for a, b, v in rows if v in VERDICT_SCORE]


def _unique(outcomes: Sequence[Outcome]) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Deduplicated outcome rows with counts: models, (a index, b index, score) arrays, counts."""
    models = sorted({o.model_a for o in outcomes} | {o.model_b for o in outcomes})
    index = {m: k for k, m in enumerate(models)}
    counts = Counter((index[o.model_a], index[o.model_b], o.score) for o in outcomes)
    keys = sorted(counts)
    rows = np.array(keys, dtype=float).reshape(-1, 3)
    return models, rows, np.array([counts[k] for k in keys], dtype=float), np.array(keys)


def fit_bt(n_models: int, rows: np.ndarray, weights: np.ndarray, iters: int = 50) -> np.ndarray:
    """Maximum-likelihood log-strengths (natural log odds), centred on 0, by Newton's method."""
    a, b, s = rows[:, 0].astype(int), rows[:, 1].astype(int), rows[:, 2]
    theta = np.zeros(n_models)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(theta[a] - theta[b])))
        resid = weights * (s - p)
        grad = np.bincount(a, resid, n_models) - np.bincount(b, resid, n_models) - PRIOR * theta
        w = weights * p * (1 - p)
        hess = np.zeros((n_models, n_models))
        np.add.at(hess, (a, a), -w)
        np.add.at(hess, (b, b), -w)
        np.add.at(hess, (a, b), w)
        np.add.at(hess, (b, a), w)
        hess -= PRIOR * np.eye(n_models)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return theta - theta.mean()


def to_elo_scale(theta: np.ndarray) -> np.ndarray:
    return INIT + SCALE / np.log(BASE) * theta


def bootstrap(outcomes: Sequence[Outcome], n_boot: int = 200, seed: int = 0
              ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(models, point ratings, bootstrap ratings [n_boot x models]) by multinomial resampling
    of the deduplicated outcome rows."""
    models, rows, counts, _ = _unique(outcomes)
    point = to_elo_scale(fit_bt(len(models), rows, counts))
    rng = np.random.default_rng(seed)
    total = int(counts.sum())
    draws = rng.multinomial(total, counts / total, size=n_boot)
    samples = np.stack([to_elo_scale(fit_bt(len(models), rows, d.astype(float)))
                        for d in draws])
    return models, point, samples


def leaderboard(outcomes: Sequence[Outcome], n_boot: int = 200, seed: int = 0
                ) -> list[RatingRow]:
    """Bradley-Terry ratings with 95% percentile intervals and overlap-aware ranks."""
    if not outcomes:
        return []
    models, point, samples = bootstrap(outcomes, n_boot, seed)
    lower, upper = np.percentile(samples, 2.5, axis=0), np.percentile(samples, 97.5, axis=0)
    tallies = {m: [0.0, 0.0, 0.0, 0] for m in models}  # wins, losses, ties, matches
    for o in outcomes:
        for model, score in ((o.model_a, o.score), (o.model_b, 1 - o.score)):
            t = tallies[model]
            t[0 if score == 1 else 1 if score == 0 else 2] += 1
            t[3] += 1
    rows = []
    for k, model in enumerate(models):
        rank = 1 + int(np.sum(lower > upper[k]))
        w, l_, t, n = tallies[model]
        rows.append(RatingRow(model, float(point[k]), float(lower[k]), float(upper[k]), rank,
                              n, w, l_, t))
    return sorted(rows, key=lambda r: -r.rating)


def difference_interval(samples: np.ndarray, i: int, j: int, level: float = 0.95
                        ) -> tuple[float, float]:
    """Percentile interval of rating[i] - rating[j] over bootstrap samples."""
    diff = samples[:, i] - samples[:, j]
    tail = (1 - level) / 2 * 100
    return float(np.percentile(diff, tail)), float(np.percentile(diff, 100 - tail))


def online_elo(outcomes: Sequence[Outcome], k: float = 4.0) -> dict[str, float]:
    """Sequential Elo (order-dependent): expected = 1 / (1 + 10 ** ((Rb - Ra) / 400))."""
    ratings: dict[str, float] = {}
    for o in outcomes:
        ra, rb = ratings.get(o.model_a, INIT), ratings.get(o.model_b, INIT)
        expected_a = 1.0 / (1.0 + BASE ** ((rb - ra) / SCALE))
        ratings[o.model_a] = ra + k * (o.score - expected_a)
        ratings[o.model_b] = rb + k * ((1 - o.score) - (1 - expected_a))
    return ratings


def win_rate_matrix(outcomes: Sequence[Outcome]) -> tuple[list[str], np.ndarray]:
    """rates[i, j] = share of i's points against j (ties half); NaN where they never met."""
    models = sorted({o.model_a for o in outcomes} | {o.model_b for o in outcomes})
    index = {m: k for k, m in enumerate(models)}
    points = np.zeros((len(models), len(models)))
    games = np.zeros_like(points)
    for o in outcomes:
        a, b = index[o.model_a], index[o.model_b]
        points[a, b] += o.score
        points[b, a] += 1 - o.score
        games[a, b] += 1
        games[b, a] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return models, np.where(games > 0, points / games, np.nan)


def agreement(auto: dict[tuple, str], human: dict[tuple, str]) -> tuple[float | None, int]:
    """Share of shared pairs (keyed by (example, model_a, model_b)) where the verdicts agree."""
    shared = [key for key in auto if key in human]
    if not shared:
        return None, 0
    same = sum(VERDICT_SCORE.get(auto[k]) == VERDICT_SCORE.get(human[k]) for k in shared)
    return same / len(shared), len(shared)
