"""Ratings from pairwise outcomes (pure numpy/scipy): Bradley-Terry with bootstrap intervals, Elo.

    rows = leaderboard([Outcome("base", "tuned", 0.0), ...], n_boot=200, seed=0)

Outcomes are (model_a, model_b, score) with score 1 when A won, 0 when B won and 0.5 for a tie
(ties and "both bad" count as half a win each). Ratings use the Elo scale (400 points = 10x
odds) and are anchored so that the mean rating is 1000, or a named reference model is 1000.
Bradley-Terry is the primary view for static checkpoints; online Elo depends on match order and
is only a secondary view. Intervals come from a seeded multinomial bootstrap over the
deduplicated (a, b, score) rows, as FastChat's rating_systems.py does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from loop.core.errors import ConfigError

SCALE, BASE, INIT = 400.0, 10.0, 1000.0
PRIOR = 0.01  # weak Gaussian prior (sd 10 nats) on log-strengths: finite when one side wins all
MAX_STEP = 2.0  # damped Newton: a step changes no log-strength by more than this
ELO_K = 4.0  # see online_elo


@dataclass(frozen=True)
class Outcome:
    model_a: str
    model_b: str
    score: float  # 1 A won, 0.5 tie, 0 B won


@dataclass(frozen=True)
class RatingRow:
    model: str
    rating: float
    lower: float  # 95% bootstrap percentile interval
    upper: float
    rank: int  # 1 + number of models whose lower bound is above this model's upper bound
    n_matches: int
    wins: float
    losses: float
    ties: float

    @property
    def win_rate(self) -> float:
        """Share of points won (ties count half)."""
        return (self.wins + self.ties / 2) / self.n_matches if self.n_matches else 0.0


VERDICT_SCORE = {"A": 1.0, "B": 0.0, "tie": 0.5, "both_bad": 0.5}


def outcomes_from_verdicts(rows: Sequence[tuple[str, str, str | None]]) -> list[Outcome]:
    """(model_a, model_b, verdict) -> outcomes; errors (None) and unknown verdicts are dropped."""
    return [Outcome(a, b, VERDICT_SCORE[v]) for a, b, v in rows if v in VERDICT_SCORE]


def _models(outcomes: Sequence[Outcome]) -> list[str]:
    return sorted({o.model_a for o in outcomes} | {o.model_b for o in outcomes})


def unique_rows(outcomes: Sequence[Outcome]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Deduplicated outcomes: models, rows [R x 3] of (a index, b index, score), counts [R]."""
    models = _models(outcomes)
    index = {m: k for k, m in enumerate(models)}
    counts = Counter((index[o.model_a], index[o.model_b], float(o.score)) for o in outcomes)
    keys = sorted(counts)
    rows = np.array(keys, dtype=float).reshape(-1, 3)
    return models, rows, np.array([counts[k] for k in keys], dtype=float)


def fit_bt_batch(n_models: int, rows: np.ndarray, weights: np.ndarray, iters: int = 100
                 ) -> np.ndarray:
    """Maximum-likelihood log-strengths (natural log odds) for each row of `weights` [B x R]
    at once, by damped Newton; returns [B x n_models], centred on the mean."""
    a, b, s = rows[:, 0].astype(int), rows[:, 1].astype(int), rows[:, 2]
    design = np.zeros((len(rows), n_models))  # +1 for A, -1 for B: logit p = design @ theta
    np.add.at(design, (np.arange(len(rows)), a), 1.0)
    np.add.at(design, (np.arange(len(rows)), b), -1.0)
    weights = np.atleast_2d(weights)
    theta = np.zeros((len(weights), n_models))
    ridge = PRIOR * np.eye(n_models)
    for _ in range(iters):
        p = expit(theta @ design.T)
        grad = (weights * (s - p)) @ design - PRIOR * theta
        info = np.einsum("rm,br,rn->bmn", design, weights * p * (1 - p), design) + ridge
        step = np.linalg.solve(info, grad[..., None])[..., 0]  # ascent: theta += info^-1 grad
        biggest = np.abs(step).max(axis=1, keepdims=True)
        theta += step * np.minimum(1.0, MAX_STEP / np.maximum(biggest, 1e-300))
        if biggest.max() < 1e-9:
            break
    return theta - theta.mean(axis=1, keepdims=True)


def fit_bt(n_models: int, rows: np.ndarray, weights: np.ndarray, iters: int = 100) -> np.ndarray:
    """Log-strengths for one weighting of the rows (see fit_bt_batch)."""
    return fit_bt_batch(n_models, rows, np.asarray(weights, dtype=float)[None, :], iters)[0]


def to_elo_scale(theta: np.ndarray, anchor: int | None = None) -> np.ndarray:
    """Natural log-strengths -> Elo points; the mean (or column `anchor`) maps to 1000."""
    centre = theta.mean(axis=-1, keepdims=True) if anchor is None else theta[..., [anchor]]
    return INIT + SCALE / np.log(BASE) * (theta - centre)


def _anchor_index(models: list[str], anchor: str | None) -> int | None:
    if anchor is None:
        return None
    if anchor not in models:
        raise ConfigError(f"The anchor model '{anchor}' has no matches; models with matches: "
                          f"{', '.join(models)}.")
    return models.index(anchor)


def bootstrap(outcomes: Sequence[Outcome], n_boot: int = 200, seed: int = 0,
              anchor: str | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(models, point ratings, bootstrap ratings [n_boot x models]) by multinomial resampling
    of the deduplicated outcome rows with numpy's Generator(seed)."""
    models, rows, counts = unique_rows(outcomes)
    k = _anchor_index(models, anchor)
    point = to_elo_scale(fit_bt(len(models), rows, counts), k)
    total = int(counts.sum())
    draws = np.random.default_rng(seed).multinomial(total, counts / total, size=n_boot)
    samples = to_elo_scale(fit_bt_batch(len(models), rows, draws.astype(float)), k)
    return models, point, samples


def tallies(outcomes: Sequence[Outcome]) -> dict[str, tuple[float, float, float, int]]:
    """model -> (wins, losses, ties, matches); a "both bad" verdict counts as a tie."""
    out: dict[str, list] = {}
    for o in outcomes:
        for model, score in ((o.model_a, o.score), (o.model_b, 1 - o.score)):
            t = out.setdefault(model, [0.0, 0.0, 0.0, 0])
            t[0 if score == 1 else 1 if score == 0 else 2] += 1
            t[3] += 1
    return {m: tuple(t) for m, t in out.items()}


def leaderboard(outcomes: Sequence[Outcome], n_boot: int = 200, seed: int = 0,
                anchor: str | None = None) -> list[RatingRow]:
    """Bradley-Terry ratings with 95% percentile intervals and overlap-aware ranks, best first.
    With `anchor` that model is fixed at 1000 (its own interval is then a point)."""
    if not outcomes:
        return []
    models, point, samples = bootstrap(outcomes, n_boot, seed, anchor)
    lower, upper = np.percentile(samples, 2.5, axis=0), np.percentile(samples, 97.5, axis=0)
    counts = tallies(outcomes)
    rows = [RatingRow(m, float(point[k]), float(lower[k]), float(upper[k]),
                      1 + int(np.sum(lower > upper[k])), counts[m][3], *counts[m][:3])
            for k, m in enumerate(models)]
    return sorted(rows, key=lambda r: (-r.rating, r.model))


def difference_interval(samples: np.ndarray, i: int, j: int, level: float = 0.95
                        ) -> tuple[float, float]:
    """Percentile interval of rating[i] - rating[j] over bootstrap samples."""
    diff = samples[:, i] - samples[:, j]
    tail = (1 - level) / 2 * 100
    return float(np.percentile(diff, tail)), float(np.percentile(diff, 100 - tail))


def online_elo(outcomes: Sequence[Outcome], k: float = ELO_K) -> dict[str, float]:
    """Sequential Elo in the given order: E_a = 1 / (1 + 10 ** ((R_b - R_a) / 400)),
    R_a += k * (S_a - E_a), R_b -= the same amount; everyone starts at 1000.

    K defaults to 4, as FastChat's online view: an arena gives each model hundreds of matches,
    and with chess's K = 32 the last few dozen would decide the number. Pass k=32 for a handful
    of games. Order-dependent by construction, so only a secondary view beside Bradley-Terry."""
    ratings: dict[str, float] = {}
    for o in outcomes:
        ra, rb = ratings.get(o.model_a, INIT), ratings.get(o.model_b, INIT)
        delta = k * (o.score - 1.0 / (1.0 + BASE ** ((rb - ra) / SCALE)))
        ratings[o.model_a], ratings[o.model_b] = ra + delta, rb - delta
    return ratings


def win_rate_matrix(outcomes: Sequence[Outcome]) -> tuple[list[str], np.ndarray]:
    """rates[i, j] = share of i's points against j (ties half); NaN where they never met."""
    models = _models(outcomes)
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


def agreement(auto: Mapping[tuple, str], human: Mapping[tuple, str]) -> tuple[float | None, int]:
    """Share of shared pairs (keys such as (example, model_a, model_b), oriented the same way in
    both maps) where the verdicts agree; "tie" and "both_bad" agree (neither side won)."""
    shared = [key for key in auto if key in human]
    if not shared:
        return None, 0
    same = sum(VERDICT_SCORE.get(auto[k]) == VERDICT_SCORE.get(human[k]) for k in shared)
    return same / len(shared), len(shared)
