"""Drawing one token per row by inverse CDF: the row's cumulative sum, a uniform number scaled to its
total, a binary search. The same distribution as ``torch.multinomial(probs, 1)`` or a Gumbel-max
argmax, for one pass over the vocabulary instead of a random number (and logarithms) per entry.
Used for vLLM's CPU sampler (:mod:`cai.backends.vllm_sampler`) and transformers' ``generate``
(:mod:`cai.backends.hf_sampling`)."""

from __future__ import annotations

from typing import Any


def draw(probs: Any, u: Any) -> Any | None:
    """[rows] indices into ``probs`` [rows, vocab] (non-negative, not necessarily normalised), row i
    drawn with the uniform number ``u[i]`` in [0, 1); a zero entry is never drawn (``right=True``:
    its cumulative sum equals its predecessor's). None when a row's total is not a positive finite
    number (NaN, inf or all zero), for the caller to report."""
    import torch

    cdf = probs.to(torch.float32).cumsum(dim=-1)
    total = cdf[:, -1:]
    if not bool(torch.isfinite(total).all()) or bool((total <= 0).any()):
        return None
    target = u.to(cdf.dtype).reshape(-1, 1) * total  # rounding leaves the total a little off 1
    return torch.searchsorted(cdf, target, right=True).squeeze(1).clamp_(max=probs.shape[1] - 1)
