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

    from vllm.v1.sample.sampler import Sampler

    from cai.backends.vllm_sampler import _forward_cpu, _sampler_forward, use_fast_sampler

    monkeypatch.setattr(TopKTopPSampler, "forward_cpu", TopKTopPSampler.forward_cpu)  # restored afterwards
    monkeypatch.setattr(Sampler, "forward", Sampler.forward)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    assert use_fast_sampler() is True and TopKTopPSampler.forward_cpu is _forward_cpu
    assert Sampler.forward is _sampler_forward
    monkeypatch.setenv("CAI_VLLM_SAMPLER", "vllm")
    assert use_fast_sampler() is False and TopKTopPSampler.forward_cpu is not _forward_cpu
    assert Sampler.forward is not _sampler_forward
    monkeypatch.delenv("CAI_VLLM_SAMPLER")
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    assert use_fast_sampler() is False and TopKTopPSampler.forward_cpu is not _forward_cpu
    assert Sampler.forward is not _sampler_forward


def test_the_temperature_is_applied_as_vllm_applies_it_and_the_logits_are_left_alone():
    # vLLM's Sampler copies the logits to float32 and divides them in place before the draw; the
    # plain-random path hands sample_rows the model's logits and the temperatures instead.
    import torch

    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(ROWS_PER_CHUNK + 7, 500, generator=g) * 4).to(torch.bfloat16)
    kept = logits.clone()
    temperature = torch.rand(logits.shape[0], generator=g) + 0.3

    def seeded():
        return {i: torch.Generator().manual_seed(i) for i in range(logits.shape[0])}

    divided = logits.to(torch.float32).div_(temperature.unsqueeze(1))
    assert torch.equal(sample_rows(logits, seeded(), temperature), sample_rows(divided, seeded()))
    assert torch.equal(logits, kept)
    as_float = logits.to(torch.float32)
    sample_rows(as_float, seeded(), temperature)
    assert torch.equal(as_float, kept.to(torch.float32)), "a float32 input must not be divided in place"


class MinPLogitsProcessor:  # named as vLLM's built-in processors are: plain_random knows them by name
    min_p_count = 0


class LogitBiasLogitsProcessor:
    biases: dict = {}


class MinTokensLogitsProcessor:
    min_toks: dict = {}


class SomeoneElsesProcessor:
    pass


def _plain_step():
    from types import SimpleNamespace

    import torch

    sampler = SimpleNamespace(topk_topp_sampler=SimpleNamespace(use_fp64_gumbel=False))
    holder = SimpleNamespace(has_tracked_requests=lambda: False)
    metadata = SimpleNamespace(
        all_random=True, temperature=torch.ones(2), top_k=None, top_p=None, max_num_logprobs=None,
        logprob_token_ids=None, no_penalties=True, bad_words_token_ids={}, allowed_token_ids_mask=None,
        thinking_budget_state_holder=holder, generators={},
        logitsprocs=SimpleNamespace(all=[MinPLogitsProcessor(), LogitBiasLogitsProcessor(), MinTokensLogitsProcessor()]))
    return sampler, torch.zeros(2, 10, dtype=torch.bfloat16), metadata


@pytest.mark.parametrize("change", [
    "greedy rows", "top-p", "top-k", "logprobs", "token logprobs", "penalties", "bad words", "allowed tokens",
    "thinking budget", "min-p in use", "logit bias in use", "min tokens in use", "another processor",
    "fp64 gumbel", "spec decode"])
def test_anything_but_plain_temperature_sampling_goes_to_vllms_sampler(change):
    from types import SimpleNamespace

    import torch

    from cai.backends.vllm_sampler import plain_random

    sampler, logits, md = _plain_step()
    bonus = False
    assert plain_random(sampler, logits, md, bonus)
    procs = md.logitsprocs.all
    if change == "greedy rows":
        md.all_random = False
    elif change == "top-p":
        md.top_p = torch.full((2,), 0.9)
    elif change == "top-k":
        md.top_k = torch.full((2,), 5)
    elif change == "logprobs":
        md.max_num_logprobs = 0
    elif change == "token logprobs":
        md.logprob_token_ids = {0: [1]}
    elif change == "penalties":
        md.no_penalties = False
    elif change == "bad words":
        md.bad_words_token_ids = {0: [[3]]}
    elif change == "allowed tokens":
        md.allowed_token_ids_mask = torch.zeros(2, 10, dtype=torch.bool)
    elif change == "thinking budget":
        md.thinking_budget_state_holder = SimpleNamespace(has_tracked_requests=lambda: True)
    elif change == "min-p in use":
        procs[0].min_p_count = 1
    elif change == "logit bias in use":
        procs[1].biases = {0: {1: 2.0}}
    elif change == "min tokens in use":
        procs[2].min_toks = {0: (3, [], set(), False)}
    elif change == "another processor":
        procs.append(SomeoneElsesProcessor())
    elif change == "fp64 gumbel":
        sampler.topk_topp_sampler.use_fp64_gumbel = True
    elif change == "spec decode":
        bonus = True
    assert not plain_random(sampler, logits, md, bonus)


def test_a_plain_step_is_drawn_by_cai_and_any_other_goes_to_vllm():
    import torch

    from cai.backends.vllm_sampler import _sampler_forward

    pytest.importorskip("vllm")
    calls = []

    class FakeSampler:
        def vllm_forward(self, logits, metadata, bonus, mode):
            calls.append((bonus, mode))
            return "vllm's"

    sampler, logits, md = _plain_step()
    fake = FakeSampler()
    fake.topk_topp_sampler = sampler.topk_topp_sampler
    logits[0, 7] = logits[1, 2] = 60.0
    out = _sampler_forward(fake, logits, md)
    assert out.sampled_token_ids.dtype == torch.int32 and out.sampled_token_ids.tolist() == [[7], [2]]
    assert out.logprobs_tensors is None and calls == []
    md.max_num_logprobs = 1
    assert _sampler_forward(fake, logits, md, True, "raw_logprobs") == "vllm's" and calls == [(True, "raw_logprobs")]
