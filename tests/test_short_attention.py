"""The CPU attention of the PM trainer and the PPO update (cai.train.short_attention): the same loss
and gradients as SDPA, SDPA itself where the plain form's memory would pass its budget or no
gradient is taken, and installed by the reward trainer and the PPO policy on a CPU."""

from __future__ import annotations

import pytest

from cai.train import short_attention
from cai.train.short_attention import NAME, use_short_eager_attention


def _pm(tiny_llama_dir):
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_llama_dir, num_labels=1, dtype=torch.float32,
                                                               attn_implementation="sdpa")
    model.config.pad_token_id = 0
    return model


def _batch(padded: bool):
    import torch

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 500, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    if padded:  # right padding, as the PM's collator pads
        mask[1, 9:], mask[2, 5:] = 0, 0
        ids = ids.masked_fill(mask == 0, 0)
    return ids, mask


def _loss_and_grads(model, ids, mask):
    model.zero_grad()
    loss = model(input_ids=ids, attention_mask=mask).logits.float().pow(2).sum()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("padded", [True, False])
def test_loss_and_gradients_equal_sdpa(tiny_llama_dir, padded):
    import torch

    ids, mask = _batch(padded)
    model = _pm(tiny_llama_dir)
    want_loss, want = _loss_and_grads(model, ids, mask)
    assert use_short_eager_attention(model) and model.config._attn_implementation == NAME
    got_loss, got = _loss_and_grads(model, ids, mask)
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-5, atol=1e-6)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6, msg=name)


def _count_sdpa(monkeypatch):
    from transformers.integrations import sdpa_attention

    calls = []
    real = sdpa_attention.sdpa_attention_forward

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sdpa_attention, "sdpa_attention_forward", spy)
    return calls


def test_the_plain_form_runs_only_within_its_budget_and_with_gradients(tiny_llama_dir, monkeypatch):
    import torch

    ids, mask = _batch(True)
    model = _pm(tiny_llama_dir)
    use_short_eager_attention(model)
    calls = _count_sdpa(monkeypatch)
    model(input_ids=ids, attention_mask=mask)
    assert calls == []  # 3 rows x 4 heads x 12 x 12 in 2 layers: far within the budget
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    assert len(calls) == 2  # one per layer: scoring keeps SDPA
    # 3 x 4 x 12 x 12 weights x 6 bytes x 2 layers = 20,736 bytes
    monkeypatch.setattr(short_attention, "BUDGET", 20_735)
    model(input_ids=ids, attention_mask=mask)
    assert len(calls) == 4
    monkeypatch.setattr(short_attention, "BUDGET", 20_736)
    model(input_ids=ids, attention_mask=mask)
    assert len(calls) == 4


def test_the_reward_trainer_installs_it_on_a_cpu(tiny_llama_dir, tmp_path):
    from cai.train.prefdata import Pair
    from cai.train.reward import RewardTrainConfig, build_reward_trainer
    from cai.train.rundir import RunDir

    pairs = [Pair(prompt=[{"role": "user", "content": f"q{i}"}], chosen="yes", rejected="no", p_chosen=0.9,
                 group=f"g{i}")
             for i in range(4)]
    config = RewardTrainConfig(model=tiny_llama_dir, data=("x.jsonl",), output=str(tmp_path / "pm"), max_steps=1)
    run = RunDir(tmp_path / "pm", command="reward", config={}, data=[], base_model=tiny_llama_dir)
    run.check()
    trainer = build_reward_trainer(config, pairs, run, tiny_llama_dir, show_progress=False)
    assert trainer.model.config._attn_implementation == NAME


def _policy_loss_and_grads(policy, ids, attn, start):
    import torch

    policy.model.zero_grad()
    logits, values = policy.forward(ids, attn, start)
    loss = torch.logsumexp(logits.float(), -1).sum() + values.pow(2).sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in policy.model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


@pytest.mark.parametrize("lora", [True, False])
def test_the_ppo_policy_trains_with_it_on_a_cpu_and_matches_sdpa(tiny_llama_dir, monkeypatch, lora):
    import torch

    from cai.train.ppo_model import PolicyWithValue

    # A rollout's shape: left-padded prompts, then answers, right-padded after their end.
    ids, attn = _batch(False)[0], torch.ones(3, 12, dtype=torch.long)
    attn[0, :3], attn[1, :1], attn[2, 10:] = 0, 0, 0
    ids = ids.masked_fill(attn == 0, 0)
    torch.manual_seed(0)
    policy = PolicyWithValue(tiny_llama_dir, lora=lora, lora_r=4, lora_alpha=8, dtype=torch.float32)
    assert policy.model.config._attn_implementation == NAME
    got_loss, got = _policy_loss_and_grads(policy, ids, attn, start=5)
    monkeypatch.setenv("CAI_SHORT_ATTENTION", "0")
    torch.manual_seed(0)
    sdpa = PolicyWithValue(tiny_llama_dir, lora=lora, lora_r=4, lora_alpha=8, dtype=torch.float32)
    assert sdpa.model.config._attn_implementation == "sdpa"
    sdpa.model.load_state_dict(policy.model.state_dict())
    sdpa.value_head.load_state_dict(policy.value_head.state_dict())
    want_loss, want = _policy_loss_and_grads(sdpa, ids, attn, start=5)
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-5, atol=1e-5)
    assert got.keys() == want.keys() and want
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5, msg=name)
