"""Drawing one token per row by inverse CDF: a uniform number scaled to the row's total, found in the
row's cumulative sum. The same distribution as ``torch.multinomial(probs, 1)`` or a Gumbel-max
argmax, for one pass over the vocabulary instead of a random number (and logarithms) per entry.
Used for vLLM's CPU sampler (:mod:`cai.backends.vllm_sampler`) and transformers' ``generate``
(:mod:`cai.backends.hf_sampling`).

The search goes in two levels: the sums of blocks of ``BLOCK`` entries (a vectorised reduction),
their cumulative sum, then the cumulative sum of the one block the number falls in. A cumulative
sum over the whole vocabulary is a sequential scan: on the 2-core AMX VM it took 2.3 ms of 3.7 for
64 rows of SmolLM2's 49,152 entries, the two levels 1.4 ms in all (``runs/s23/draw_bench.py``,
bench/RESULTS.md, "Best of 8 profiled").
"""

from __future__ import annotations

from typing import Any

BLOCK = 256


def draw(probs: Any, u: Any) -> Any | None:
    """[rows] indices into ``probs`` [rows, vocab] (non-negative, not necessarily normalised), row i
    drawn with the uniform number ``u[i]`` in [0, 1); a zero entry is never drawn. None when a row's
    total is not a positive finite number (NaN, inf or all zero), for the caller to report."""
    import torch

    probs = probs.to(torch.float32).contiguous()
    rows, vocab = probs.shape
    full, tail = divmod(vocab, BLOCK)
    # The whole blocks as a view (no copy), and a last, shorter block for a vocabulary that is not a
    # multiple of BLOCK (padding it instead copied the whole tensor: 14 ms for 64 rows of 151,936).
    sums = probs.as_strided((rows, full, BLOCK), (probs.stride(0), BLOCK, 1)).sum(-1)
    if tail:
        sums = torch.cat([sums, probs[:, full * BLOCK:].sum(-1, keepdim=True)], dim=1)
    cdf = sums.cumsum(-1)
    total = cdf[:, -1:]
    if not bool(torch.isfinite(total).all()) or bool((total <= 0).any()):
        return None
    # Rounding can put u * total at the total itself; below it, the first cumulative sum past the
    # target belongs to an entry (or block) of positive mass, so a zero is never drawn.
    target = _below(u.to(cdf.dtype).reshape(-1, 1) * total, total)
    block = torch.searchsorted(cdf, target, right=True)
    columns = block * BLOCK + torch.arange(BLOCK, device=probs.device)
    inside = probs.gather(1, columns.clamp(max=vocab - 1)).masked_fill_(columns >= vocab, 0.0).cumsum(-1)
    rest = (target - (cdf.gather(1, block) - sums.gather(1, block))).clamp_(min=0)
    entry = torch.searchsorted(inside, _below(rest, inside[:, -1:]), right=True)
    return (block * BLOCK + entry).squeeze(1)


def _below(value: Any, limit: Any) -> Any:
    """``value``, or the largest float under ``limit`` where it is not below it."""
    import torch

    return torch.minimum(value, torch.nextafter(limit, torch.zeros_like(limit)))
