"""Statistics for judging a labeller: bootstrap confidence intervals, calibration (ECE and the
bins of a reliability diagram), and the baselines a labeller must beat. Pure functions."""

from __future__ import annotations

from typing import Any, Sequence


def credit(p_correct: float) -> float:
    """1 if the labeller prefers the right answer, 0 if the wrong one, 0.5 for an exact tie."""
    from cai.label.preference import is_tie

    return 0.5 if is_tie(p_correct) else 1.0 if p_correct > 0.5 else 0.0


def accuracy(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def check_bootstrap(n_resamples: int) -> None:
    """The one check of every eval's ``--bootstrap``: with no resamples every interval is null."""
    from cai.errors import CAIError

    if n_resamples < 1:
        raise CAIError(f"--bootstrap must be at least 1 (resamples for the 95% intervals; 2000 is the default), "
                       f"got {n_resamples}")


def bootstrap_ci(values: Sequence[float], *, n_resamples: int = 2000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of ``values`` (resampled with replacement)."""
    import numpy as np

    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, 256):  # chunks bound memory for large n
        stop = min(n_resamples, start + 256)
        means[start:stop] = data[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_ratio_ci(numerators: Sequence[float], denominators: Sequence[float], *, n_resamples: int = 2000,
                       alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval for sum(numerators) / sum(denominators), resampling the
    (numerator, denominator) units together: a share of instructions, say, where the unit resampled
    is the prompt that carries them, so instructions of one prompt stay together."""
    import numpy as np

    n = len(numerators)
    if n == 0 or n != len(denominators):
        return float("nan"), float("nan")
    num, den = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    rng = np.random.default_rng(seed)
    ratios = np.empty(n_resamples)
    for start in range(0, n_resamples, 256):
        stop = min(n_resamples, start + 256)
        idx = rng.integers(0, n, size=(stop - start, n))
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios[start:stop] = num[idx].sum(axis=1) / den[idx].sum(axis=1)
    ratios = ratios[np.isfinite(ratios)]
    if not len(ratios):
        return float("nan"), float("nan")
    lo, hi = np.quantile(ratios, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def calibration(confidences: Sequence[float], outcomes: Sequence[float], *, n_bins: int = 10,
                lo: float = 0.5, hi: float = 1.0) -> tuple[float, list[dict[str, Any]]]:
    """Expected calibration error and per-bin statistics.

    ``confidences`` are the probabilities given to the picked answer (in [0.5, 1] for a pair, so
    the bins span [lo, hi]); ``outcomes`` are 1/0 (0.5 for a tie). ECE = sum over bins of
    |mean outcome - mean confidence| * (bin count / total). A confidence equal to ``hi`` goes in
    the last bin.
    """
    if len(confidences) != len(outcomes):
        raise ValueError("confidences and outcomes must have the same length")
    width = (hi - lo) / n_bins
    bins: list[dict[str, Any]] = [{"lo": lo + b * width, "hi": lo + (b + 1) * width, "count": 0,
                                   "confidence": 0.0, "accuracy": 0.0} for b in range(n_bins)]
    for c, o in zip(confidences, outcomes):
        b = min(n_bins - 1, max(0, int((c - lo) / width)))
        bins[b]["count"] += 1
        bins[b]["confidence"] += c
        bins[b]["accuracy"] += o
    total = len(confidences)
    ece = 0.0
    for b in bins:
        if b["count"]:
            b["confidence"] /= b["count"]
            b["accuracy"] /= b["count"]
            ece += abs(b["accuracy"] - b["confidence"]) * b["count"] / total
        else:
            b["confidence"] = b["accuracy"] = None
    return (ece if total else float("nan")), bins


def majority_baseline(correct_positions: Sequence[frozenset[str] | set[str] | tuple[str, ...]]) -> float:
    """Accuracy of always answering the single most common correct option (e.g. always "A")."""
    if not correct_positions:
        return float("nan")
    options = {o for pos in correct_positions for o in pos}
    return max(sum(o in pos for pos in correct_positions) for o in options) / len(correct_positions)


def random_baseline(n_correct_and_total: Sequence[tuple[int, int]]) -> float:
    """Expected accuracy of picking an option uniformly: mean of |corrects| / |options|."""
    if not n_correct_and_total:
        return float("nan")
    return sum(c / t for c, t in n_correct_and_total) / len(n_correct_and_total)
