"""transformers' sampling on a CPU through cai.backends.hf_sampling: the same distribution as
torch.multinomial, its errors for bad probabilities, torch's own function outside the block, and
seeded hf generation still reproducible (the backend contract tests run through it too)."""

from __future__ import annotations

import pytest

from cai.backends.hf_sampling import fast_multinomial, inverse_cdf_draw


def test_draws_follow_the_probabilities_and_skip_zeros():
    import torch

    torch.manual_seed(0)
    probs = torch.tensor([[1.0, 2.0, 3.0, 0.0]]).repeat(30_000, 1)  # unnormalised, as multinomial allows
    with fast_multinomial():
        drawn = torch.multinomial(probs, 1)
    assert drawn.shape == (30_000, 1) and drawn.dtype == torch.long
    share = torch.bincount(drawn.squeeze(1), minlength=4).double() / 30_000
    assert share[3] == 0
    torch.testing.assert_close(share[:3], torch.tensor([1 / 6, 2 / 6, 3 / 6], dtype=torch.double), atol=0.012, rtol=0)


def test_a_generator_makes_the_draw_reproducible():
    import torch

    probs = torch.softmax(torch.randn(8, 1000, generator=torch.Generator().manual_seed(1)), -1)
    a = inverse_cdf_draw(probs, torch.Generator().manual_seed(3))
    b = inverse_cdf_draw(probs, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_bad_probabilities_and_other_calls_go_to_torch():
    import torch

    real = torch.multinomial
    with fast_multinomial():
        assert torch.multinomial is not real
        with pytest.raises(RuntimeError):
            torch.multinomial(torch.tensor([[0.5, float("nan")]]), 1)
        with pytest.raises(RuntimeError):
            torch.multinomial(torch.zeros(2, 3), 1)
        assert torch.multinomial(torch.ones(5), 3).shape == (3,)  # 1-D, 3 samples: torch's own
    assert torch.multinomial is real


def test_hf_generation_samples_through_it_and_stays_seeded(tiny_llama_dir, monkeypatch):
    from cai.backends import hf_sampling, load_backend
    from cai.types import SamplingParams

    calls = []
    real = hf_sampling.inverse_cdf_draw
    monkeypatch.setattr(hf_sampling, "inverse_cdf_draw", lambda *a, **k: calls.append(1) or real(*a, **k))
    backend = load_backend(f"hf:{tiny_llama_dir}", dtype="float32")
    conv = [[{"role": "user", "content": "Say something."}]] * 3
    params = SamplingParams(temperature=1.0, max_tokens=6, seed=9)
    first = backend.generate(conv, params)
    assert calls, "generate did not sample through cai's draw"
    again = backend.generate(conv, params)
    assert [c.text for c in first] == [c.text for c in again]
