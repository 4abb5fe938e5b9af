"""Sampling in transformers' ``generate`` on a CPU: one draw per row by inverse CDF, not ``torch.multinomial``.

transformers draws each sampled token with ``torch.multinomial(probs, 1)``. On a CPU that call
took 56 ms for 64 rows of SmolLM2's 49,152-token vocabulary (by hand, 2-core AMX VM, 2026-12-04),
more than the model's own decode step. A row's cumulative sum, one uniform number and a search
draw from the same distribution in about 2 ms: the hf backend generated 64 answers of 64 tokens at
723-749 tokens/s instead of 425-446. Inside :func:`fast_multinomial` ``torch.multinomial`` is
replaced for that case (one sample per row of a 2-D CPU tensor); every other call goes to torch's.

The draws come from the generator the call names, else the global one, so a seeded generation
stays reproducible; its tokens are not those torch's multinomial would have drawn. Given one
generator per row (``fast_multinomial(rows)``), each row draws from its own, so a row's tokens do not
depend on the other rows of its batch (the hf backend seeds one per conversation and sample).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence


def inverse_cdf_draw(probs: Any, generator: Any = None, rows: Sequence[Any] | None = None) -> Any | None:
    """[rows, 1] indices, one per row of ``probs`` [rows, vocab] (:func:`cai.backends.inverse_cdf.draw`,
    its uniform numbers from ``generator`` or the global one, or row i's from ``rows[i]``); None for
    a row without a positive finite total."""
    import torch

    from cai.backends.inverse_cdf import draw

    if rows is not None:
        u = torch.stack([torch.rand((), generator=g) for g in rows]).to(probs.device)
    else:
        u = torch.rand(probs.shape[0], generator=generator, device=probs.device)
    drawn = draw(probs, u)
    return None if drawn is None else drawn.unsqueeze(1)


@contextlib.contextmanager
def fast_multinomial(rows: Sequence[Any] | None = None) -> Iterator[None]:
    """``torch.multinomial(probs, 1)`` on a 2-D CPU tensor draws by :func:`inverse_cdf_draw` in this
    block; with ``rows`` (one CPU generator per row) on any device, for tensors of that many rows."""
    import torch

    torch_multinomial = torch.multinomial

    def multinomial(input: Any, num_samples: int, replacement: bool = False, *, generator: Any = None,
                    out: Any = None) -> Any:
        drawn = None
        per_row = rows is not None and input.dim() == 2 and input.shape[0] == len(rows)
        if num_samples == 1 and input.dim() == 2 and out is None and (input.device.type == "cpu" or per_row):
            drawn = inverse_cdf_draw(input, generator, rows if per_row else None)
        if drawn is None:  # anything else, and torch's own clear error for NaN or inf probabilities
            return torch_multinomial(input, num_samples, replacement, generator=generator, out=out)
        return drawn

    torch.multinomial = multinomial
    try:
        yield
    finally:
        torch.multinomial = torch_multinomial
