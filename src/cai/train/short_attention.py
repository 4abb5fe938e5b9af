"""Attention for training on short sequences on a CPU: the plain matmul-softmax-matmul form where
its memory is small, PyTorch's SDPA (flash attention for CPU) elsewhere.

SDPA's CPU kernel keeps memory linear in the sequence length, but its backward is slow: in a
profile of the quickstart's preference-model step (8 sequences of about 190 tokens) it took 27%
of the step. The plain form materialises the attention weights, [rows, heads, queries, keys], which
autograd keeps for the backward in every layer (about 6 bytes an entry: the fp32 softmax output
and its bf16 copy under autocast). For short batches that is little memory and a faster backward;
for long ones (the PM's 1,024-token limit: about 9 GB) it is not. So each call picks: the plain
form when gradients are on and its weights over all layers would take at most ``BUDGET`` bytes
(512 MiB), SDPA otherwise. Without gradients SDPA's forward is the faster one (scoring the
quickstart's PM checks took 19 s with SDPA, 22 s with the plain form). Masks come in SDPA's
boolean form for both.

``cai reward`` and ``cai ppo`` install it on a CPU; ``CAI_SHORT_ATTENTION=0`` keeps SDPA (the bench's
before rows use it). Measured in ``bench/RESULTS.md`` ("Preference-model attention", "PPO seconds per
step"); the tests check that the loss and gradients match SDPA's.
"""

from __future__ import annotations

import os
from typing import Any

NAME = "cai_short_eager"
# The quickstart PM's usual batches (8 sequences of up to about 195 tokens) fit in 512 MiB and its
# longest ones do not; SDPA was as fast on those. With 1 GiB its reward step peaked at 8.3 GiB, not 7.1.
BUDGET = 1 << 29
BYTES_PER_WEIGHT = 6  # fp32 softmax output kept for its backward, and its copy in the compute dtype
OPT_OUT = "CAI_SHORT_ATTENTION"  # "0": leave every model on SDPA


def short_eager_attention(module: Any, query, key, value, attention_mask, dropout: float = 0.0,
                          scaling: float | None = None, **kwargs: Any):
    """transformers' attention-function signature (tensors [rows, heads, tokens, dim])."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.models.llama.modeling_llama import eager_attention_forward

    rows, heads, q_len, _ = query.shape
    k_len = key.shape[2]
    layers = getattr(getattr(module, "config", None), "num_hidden_layers", 1)
    extras = any(kwargs.get(k) is not None for k in ("position_bias", "softcap", "s_aux", "sinks"))
    small = rows * heads * q_len * k_len * BYTES_PER_WEIGHT * layers <= BUDGET
    if (not small or extras or q_len != k_len or not torch.is_grad_enabled()
            or not hasattr(module, "num_key_value_groups")):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if attention_mask is None:  # SDPA's mask was skipped because causal attention alone is enough
        attention_mask = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril()[None, None]
    else:
        attention_mask = attention_mask[:, :, :, :k_len]
    additive = torch.zeros(attention_mask.shape, dtype=query.dtype, device=query.device)
    additive.masked_fill_(~attention_mask, torch.finfo(query.dtype).min)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    return eager_attention_forward(module, query, key, value, additive, scaling=scale,
                                   dropout=dropout if module.training else 0.0)


def use_short_eager_attention(model: Any) -> bool:
    """Switch ``model`` (SDPA) to :func:`short_eager_attention`; False, and nothing changed, for a
    model on another implementation, one that refuses a custom one, or under ``CAI_SHORT_ATTENTION=0``."""
    from cai.backends.hf_attention import use_attention

    if os.environ.get(OPT_OUT, "").strip() == "0":
        return False
    return use_attention(model, NAME, short_eager_attention)
