"""Decode-step attention for the hf backend on CPU.

During generation every step after the prompt attends one new query token per row to the whole
KV cache. PyTorch's CPU SDPA kernel (flash attention for CPU) is built for long queries: for a
single query with a padding mask and grouped-query heads it costs more than the model's matmuls.
Profiling SmolLM2-135M at 64 rows on a 2-core EPYC, it took 38% of the time, and transformers
first copies every KV head once per query head that shares it (``repeat_kv``), another 8%.

Here a single-token query is computed as two batched matmuls with the query heads grouped under
their shared KV head (``[rows, kv_heads, group, dim] @ [rows, kv_heads, dim, length]``), so no KV
copy is made, with the softmax in float32 as transformers' eager attention does. Prompts (more
than one query token) still go to SDPA, which is the right kernel there and keeps memory linear.
Measured in ``bench/RESULTS.md``; the contract tests check that scores and greedy outputs match.

Registering an attention function is how transformers takes custom kernels (its
``AttentionInterface``); the registration is idempotent and only adds a name.
"""

from __future__ import annotations

from typing import Any

NAME = "cai_cpu_decode"


def decode_attention(module: Any, query, key, value, attention_mask, dropout: float = 0.0,
                     scaling: float | None = None, **kwargs: Any):
    """transformers' attention-function signature: tensors are [rows, heads, tokens, dim]; returns
    the output as [rows, tokens, heads, dim] and no weights."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    rows, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    # Anything beyond plain scaled dot-product attention (biases, logit soft-capping, attention
    # sinks, dropout while training) goes to SDPA's implementation unchanged.
    extras = any(kwargs.get(k) is not None for k in ("position_bias", "softcap", "s_aux", "sinks"))
    if q_len != 1 or heads % kv_heads or extras or (dropout and module.training):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    scale = scaling if scaling is not None else dim ** -0.5
    q = query.reshape(rows, kv_heads, heads // kv_heads, dim)  # query head h uses KV head h // group
    scores = torch.matmul(q, key.transpose(-1, -2)) * scale  # [rows, kv_heads, group, length]
    if attention_mask is not None:
        mask = attention_mask[..., -1:, : key.shape[2]]  # [rows, 1, 1, length]
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    out = torch.matmul(probs, value)  # [rows, kv_heads, group, dim]
    return out.reshape(rows, 1, heads, dim), None


def use_attention(model: Any, name: str, function: Any) -> bool:
    """Switch ``model`` from SDPA to the attention ``function``, registered under ``name`` with SDPA's
    boolean masks; False (and nothing changed) when the model uses another implementation or
    refuses a custom one. Registering is idempotent and only adds a name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    AttentionInterface.register(name, function)
    AttentionMaskInterface.register(name, sdpa_mask)  # the same boolean masks SDPA gets
    try:
        model.set_attn_implementation(name)
    except (ValueError, KeyError, ImportError, AttributeError):
        return False
    return getattr(model.config, "_attn_implementation", None) == name


def use_decode_attention(model: Any) -> bool:
    """Switch ``model`` to :func:`decode_attention` when it runs SDPA (:func:`use_attention`)."""
    return use_attention(model, NAME, decode_attention)
