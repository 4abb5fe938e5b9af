"""Elo scores from pairwise comparisons: a Bradley-Terry fit, with bootstrap intervals.

A comparison is ``(i, j, s)``: players i and j met and i scored ``s`` in [0, 1] (1 win, 0 loss,
0.5 tie, or a judge's probability). Bradley-Terry says P(i beats j) = sigmoid(theta_i - theta_j);
the fit maximises the (soft-outcome) log-likelihood with a weak Gaussian prior on theta, which
keeps a player who won every comparison finite. Elo = 1000 + theta * 400 / ln 10 with the
players' mean pinned at 1000, so 100 Elo points mean the stronger wins 64% of their meetings.

Intervals: a percentile bootstrap that resamples whole groups of comparisons (all the
comparisons made on one prompt together, since they share its difficulty) and refits.
"""

from __future__ import annotations

import math
from typing import Sequence

ELO_SCALE = 400.0 / math.log(10.0)
ELO_BASE = 1000.0


def bradley_terry(n_players: int, comparisons: Sequence[tuple[int, int, float]], *, prior: float = 0.01,
                  iters: int = 100, tol: float = 1e-10) -> list[float]:
    """Strengths theta (mean 0) by Newton's method on the penalised log-likelihood."""
    import numpy as np

    if n_players < 2:
        raise ValueError("a ranking needs at least two players")
    if not comparisons:
        return [0.0] * n_players
    c = np.asarray(comparisons, dtype=float)
    i, j, s = c[:, 0].astype(int), c[:, 1].astype(int), c[:, 2]
    if ((s < 0) | (s > 1)).any() or (i == j).any() or i.min() < 0 or max(i.max(), j.max()) >= n_players:
        raise ValueError("comparisons are (i, j, score) with i != j valid player indices and score in [0, 1]")
    theta = np.zeros(n_players)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(theta[i] - theta[j])))
        r = s - p
        grad = -prior * theta
        np.add.at(grad, i, r)
        np.add.at(grad, j, -r)
        w = p * (1.0 - p)
        hess = np.diag(np.full(n_players, prior))
        np.add.at(hess, (i, i), w)
        np.add.at(hess, (j, j), w)
        np.add.at(hess, (i, j), -w)
        np.add.at(hess, (j, i), -w)
        step = np.linalg.solve(hess, grad)
        theta += step
        if float(np.abs(step).max()) < tol:
            break
    theta -= theta.mean()
    return [float(t) for t in theta]


def to_elo(theta: Sequence[float]) -> list[float]:
    return [ELO_BASE + ELO_SCALE * t for t in theta]


def elo_with_ci(n_players: int, comparisons: Sequence[tuple[int, int, float]], groups: Sequence[str] | None = None,
                *, n_resamples: int = 1000, alpha: float = 0.05, seed: int = 0
                ) -> tuple[list[float], list[tuple[float, float]]]:
    """Elo per player and its percentile-bootstrap interval; ``groups`` (one key per comparison)
    are resampled whole, each comparison on its own when None."""
    import numpy as np

    elo = to_elo(bradley_terry(n_players, comparisons))
    keys = list(groups) if groups is not None else [str(k) for k in range(len(comparisons))]
    if len(keys) != len(comparisons):
        raise ValueError(f"got {len(keys)} group keys for {len(comparisons)} comparisons")
    members: dict[str, list[int]] = {}
    for k, g in enumerate(keys):
        members.setdefault(g, []).append(k)
    clusters = list(members.values())
    if not clusters:
        return elo, [(float("nan"), float("nan"))] * n_players
    rng = np.random.default_rng(seed)
    draws = np.empty((n_resamples, n_players))
    for b in range(n_resamples):
        pick = rng.integers(0, len(clusters), size=len(clusters))
        sample = [comparisons[k] for c in pick for k in clusters[c]]
        draws[b] = to_elo(bradley_terry(n_players, sample))
    lo, hi = np.quantile(draws, [alpha / 2, 1 - alpha / 2], axis=0)
    return elo, [(float(a), float(b)) for a, b in zip(lo, hi)]
