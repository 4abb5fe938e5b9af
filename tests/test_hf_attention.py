"""The hf backend's CPU decode attention: equal to SDPA (the kernel it replaces) for one query
token, SDPA itself for longer queries, and unchanged greedy generations end to end."""

from __future__ import annotations

import pytest
from backend_contract import build_tiny_llama

from cai.backends.hf_attention import NAME, decode_attention, use_decode_attention


class _Module:
    training = False


def _sdpa_reference(q, k, v, mask, scale):
    import torch

    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return out.transpose(1, 2)  # [rows, tokens, heads, dim], as attention functions return it


def _tensors(q_len: int, *, rows=3, heads=6, kv_heads=2, length=7, dim=8):
    import torch

    g = torch.Generator().manual_seed(0)
    q = torch.randn(rows, heads, q_len, dim, generator=g)
    k = torch.randn(rows, kv_heads, length, dim, generator=g)
    v = torch.randn(rows, kv_heads, length, dim, generator=g)
    return q, k, v


@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
def test_one_query_token_equals_sdpa_with_grouped_heads(mask_kind):
    import torch

    q, k, v = _tensors(1)
    pad = torch.tensor([[1] * 7, [0, 0, 1, 1, 1, 1, 1], [0] * 6 + [1]], dtype=torch.bool)  # left padding
    mask = {"none": None, "bool": pad[:, None, None, :],
            "float": torch.zeros(3, 1, 1, 7).masked_fill(~pad[:, None, None, :], float("-inf"))}[mask_kind]
    out, weights = decode_attention(_Module(), q, k, v, mask, scaling=0.3)
    assert weights is None
    assert out.shape == (3, 1, 6, 8)
    torch.testing.assert_close(out, _sdpa_reference(q, k, v, mask, 0.3), atol=1e-6, rtol=1e-5)


def test_padding_is_really_masked():
    """A padded position must not change the output, whatever it holds."""
    import torch

    q, k, v = _tensors(1)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1]] * 3, dtype=torch.bool)[:, None, None, :]
    a, _ = decode_attention(_Module(), q, k, v, mask, scaling=0.3)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, :2], v2[:, :, :2] = 100.0, -100.0
    b, _ = decode_attention(_Module(), q, k2, v2, mask, scaling=0.3)
    torch.testing.assert_close(a, b)


def test_longer_queries_go_to_sdpa():
    import torch

    q, k, v = _tensors(7)
    causal = torch.ones(7, 7, dtype=torch.bool).tril()[None, None].expand(3, 1, 7, 7)

    class Module(_Module):
        num_key_value_groups = 3
        is_causal = True

    out, _ = decode_attention(Module(), q, k, v, causal, scaling=0.3)
    torch.testing.assert_close(out, _sdpa_reference(q, k, v, causal, 0.3), atol=1e-6, rtol=1e-5)


def test_hf_backend_uses_it_on_cpu_and_greedy_outputs_do_not_change(tmp_path_factory, smollm2_path):
    """float32, so the two kernels agree to rounding and greedy decoding must pick the same tokens,
    batched with left padding (the case the mask matters for)."""
    from cai.backends import load_backend
    from cai.types import SamplingParams

    folder = build_tiny_llama(smollm2_path, str(tmp_path_factory.mktemp("decode-attn-llama")), seed=3)
    ours = load_backend(f"hf:{folder}", dtype="float32", batch_size=4)
    plain = load_backend(f"hf:{folder}", dtype="float32", batch_size=4)
    assert ours.model.config._attn_implementation == NAME
    plain.model.set_attn_implementation("sdpa")
    convs = [[{"role": "user", "content": text}] for text in
             ("Hi", "Tell me a long story about a dragon and a knight", "Why?", "Name three colours, please")]
    params = SamplingParams(temperature=0.0, max_tokens=24)
    assert [c.text for c in ours.generate(convs, params)] == [c.text for c in plain.generate(convs, params)]


def test_models_not_on_sdpa_are_left_alone(tmp_path_factory, smollm2_path):
    from transformers import AutoModelForCausalLM

    folder = build_tiny_llama(smollm2_path, str(tmp_path_factory.mktemp("eager-llama")))
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager")
    assert use_decode_attention(model) is False
    assert model.config._attn_implementation == "eager"


def test_extras_it_does_not_implement_go_to_sdpa(monkeypatch):
    import transformers.integrations.sdpa_attention as sdpa

    calls = []
    monkeypatch.setattr(sdpa, "sdpa_attention_forward", lambda *a, **kw: calls.append(kw) or ("sdpa", None))
    q, k, v = _tensors(1)
    for extra in ({"softcap": 50.0}, {"s_aux": 1.0}, {"position_bias": 0.5}):
        assert decode_attention(_Module(), q, k, v, None, scaling=0.3, **extra)[0] == "sdpa"
    assert len(calls) == 3
    assert decode_attention(_Module(), q, k, v, None, scaling=0.3)[0] != "sdpa"
