"""The arithmetic of AI preference labels, as small pure functions that can be checked by hand.

Vocabulary used throughout cai's labelling code: a pair is two responses ``x`` and ``y`` to the
same conversation. The feedback model sees them as options (A) and (B), in one or both orders:

* order 1 puts ``x`` as (A): ``p_x_as_a = P(A)`` read from that prompt;
* order 2 puts ``x`` as (B): ``p_x_as_b = P(B)`` read from the swapped prompt.

Both are "the probability that x is the better response"; averaging them cancels a model's
preference for a letter (position debiasing). Averaging over principles is the ensemble.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence


def two_option_prob(logprobs: Mapping[str, float], first: str, second: str) -> float:
    """P(first) after normalising over the two options only: exp(a) / (exp(a) + exp(b)).

    ``score_options`` returns raw summed log-probs; anything else the model could have said is
    ignored, as in the CAI paper. Written as a logistic of the difference so that very negative
    log-probs do not underflow.
    """
    a, b = float(logprobs[first]), float(logprobs[second])
    if not (math.isfinite(a) and math.isfinite(b)):
        if a == b:
            return 0.5
        return 1.0 if a > b else 0.0
    d = b - a
    if d > 0:
        e = math.exp(-d)
        return e / (1.0 + e)
    return 1.0 / (1.0 + math.exp(d))


def normalised(logprobs: Mapping[str, float]) -> dict[str, float]:
    """Softmax over all the given options (for multiple-choice items with more than two)."""
    m = max(logprobs.values())
    exps = {k: math.exp(v - m) for k, v in logprobs.items()}
    z = sum(exps.values())
    return {k: v / z for k, v in exps.items()}


def clamp(p: float, bounds: Sequence[float] | None) -> float:
    """Clip ``p`` into ``[lo, hi]``; the CAI paper clamps chain-of-thought labels to [0.4, 0.6]
    because reasoning makes the model's answer probabilities near 0 or 1 and badly calibrated."""
    if bounds is None:
        return p
    lo, hi = bounds
    return min(max(p, lo), hi)


def check_clamp(bounds: Sequence[float] | None) -> tuple[float, float] | None:
    if bounds is None:
        return None
    if len(bounds) != 2:
        raise ValueError(f"a clamp is two numbers LO HI, got {list(bounds)}")
    lo, hi = float(bounds[0]), float(bounds[1])
    if not 0.0 <= lo <= 0.5 <= hi <= 1.0:
        raise ValueError(f"clamp bounds must satisfy 0 <= LO <= 0.5 <= HI <= 1, got {lo} {hi}; e.g. 0.4 0.6")
    return lo, hi


def debias(p_x_as_a: float, p_x_as_b: float | None) -> float:
    """P(x better) averaged over the two presentation orders (the only order when not swapped)."""
    if p_x_as_b is None:
        return p_x_as_a
    return (p_x_as_a + p_x_as_b) / 2.0


def orders_agree(p_x_as_a: float, p_x_as_b: float | None) -> bool | None:
    """Do both orders pick the same response? A 0.5 in either order picks nothing, so it disagrees.

    None when only one order was scored.
    """
    if p_x_as_b is None:
        return None
    return (p_x_as_a - 0.5) * (p_x_as_b - 0.5) > 0


def ensemble(probs: Sequence[float], weights: Sequence[float] | None = None) -> float:
    """The (weighted) mean of the probabilities the principles give."""
    if not probs:
        raise ValueError("cannot ensemble an empty list of probabilities")
    if weights is None:
        return sum(probs) / len(probs)
    if len(weights) != len(probs) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be non-negative, sum above 0 and match the probabilities: {list(weights)}")
    return sum(p * w for p, w in zip(probs, weights)) / sum(weights)


TIE_EPS = 1e-9  # (p + (1 - p)) / 2 can miss 0.5 by a rounding error


def margin(p: float) -> float:
    """|P(x) - P(y)| = |2p - 1|: 0 for a tie, 1 for a certain label (rounding noise counts as 0)."""
    m = abs(2.0 * p - 1.0)
    return 0.0 if m < TIE_EPS else m


def is_tie(p: float) -> bool:
    return margin(p) == 0.0


def mean(values: Iterable[float]) -> float:
    vals = list(values)
    return sum(vals) / len(vals) if vals else float("nan")
