"""cai's inverse-CDF sampler for vLLM on a CPU (cai.backends.vllm_sampler): the softmax distribution,
nothing outside top-k/top-p, each seeded row on its own generator, and installed by the backend.
The engine-level seed tests in test_backend_vllm.py run through it on a CPU."""

from __future__ import annotations

import math

import pytest

from cai.backends.vllm_sampler import ROWS_PER_CHUNK, sample_rows


def test_draws_follow_the_softmax_and_never_an_excluded_token():
    import torch

    torch.manual_seed(0)
    n = 30_000  # many chunks of ROWS_PER_CHUNK rows
    logits = torch.tensor([[0.0, math.log(2.0), math.log(3.0), float("-inf")]]).repeat(n, 1)
    counts = torch.bincount(sample_rows(logits, {}), minlength=4).double() / n
    assert counts[3] == 0
    # standard error of a share near 1/3 over 30,000 draws: about 0.003
    torch.testing.assert_close(counts[:3], torch.tensor([1 / 6, 2 / 6, 3 / 6], dtype=torch.double), atol=0.012, rtol=0)


def test_a_near_certain_token_and_a_large_vocabulary():
    import torch

    torch.manual_seed(1)
    logits = torch.full((3, 49_152), -30.0)
    logits[0, 123], logits[1, 49_151], logits[2, 0] = 30.0, 30.0, 30.0
    assert sample_rows(logits, {}).tolist() == [123, 49_151, 0]


def test_a_seeded_row_does_not_depend_on_the_rest_of_the_batch():
    import torch

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2 * ROWS_PER_CHUNK + 5, 300, generator=g)
    row = ROWS_PER_CHUNK + 3  # in the second chunk

    def seeded(seed: int):
        return torch.Generator().manual_seed(seed)

    torch.manual_seed(5)
    full = sample_rows(logits, {row: seeded(42), 0: seeded(7)})
    torch.manual_seed(6)  # another global state: only unseeded rows may change
    alone = sample_rows(logits[row:row + 1], {0: seeded(42)})
    assert full[row] == alone[0]
    draws = {int(sample_rows(logits[row:row + 1], {0: seeded(s)})[0]) for s in range(40)}
    assert len(draws) > 5  # the seed really drives the draw


def test_opt_out_and_worker_processes_keep_vllms_sampler(monkeypatch):
    pytest.importorskip("vllm")
    from vllm.v1.sample.ops.topk_topp_sampler import TopKTopPSampler

    from cai.backends.vllm_sampler import _forward_cpu, use_fast_sampler

    monkeypatch.setattr(TopKTopPSampler, "forward_cpu", TopKTopPSampler.forward_cpu)  # restored afterwards
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    assert use_fast_sampler() is True and TopKTopPSampler.forward_cpu is _forward_cpu
    monkeypatch.setenv("CAI_VLLM_SAMPLER", "vllm")
    assert use_fast_sampler() is False and TopKTopPSampler.forward_cpu is not _forward_cpu
    monkeypatch.delenv("CAI_VLLM_SAMPLER")
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    assert use_fast_sampler() is False and TopKTopPSampler.forward_cpu is not _forward_cpu
