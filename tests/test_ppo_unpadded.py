"""The PPO update runs each minibatch without the columns that are padding in all of its rows
(`cai.train.ppo_data.unpadded`). Padding changes no result, so the update with and without the
cut must give the same statistics and the same weights; the rollout here has prompts and answers
of very different lengths, so the cut removes many columns."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")


def _policy(tmp_path, lora: bool):
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: F401

    from cai.train.ppo_model import PolicyWithValue

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    path = tmp_path / ("lora" if lora else "full")
    LlamaForCausalLM(cfg).save_pretrained(path)
    model = PolicyWithValue(str(path), lora=lora, lora_r=4, lora_alpha=8, dtype=torch.float32, seed=0)
    model.eval()
    return model


def _rollout():
    """Prompts of 3..11 tokens left-padded to 11, answers of 2..9 tokens right-padded to 9."""
    gen = torch.Generator().manual_seed(1)
    prompt_lens, answer_lens = [3, 11, 5, 4, 7, 3, 9, 6], [2, 9, 3, 5, 2, 8, 4, 3]
    P, T = max(prompt_lens), max(answer_lens)
    ids = torch.zeros(8, P + T, dtype=torch.long)
    attn = torch.zeros(8, P + T, dtype=torch.long)
    mask = torch.zeros(8, T)
    for r, (p, a) in enumerate(zip(prompt_lens, answer_lens)):
        ids[r, P - p:P + a] = torch.randint(3, 40, (p + a,), generator=gen)
        attn[r, P - p:P + a] = 1
        mask[r, :a] = 1
    return {"prompt_width": P, "ids": ids, "attn": attn, "mask": mask, "truncated": torch.zeros(8, dtype=torch.bool)}


def _run(model, monkeypatch, cut: bool, steps: int = 2):
    from cai.train import ppo_data
    from cai.train.ppo import PPORunConfig, _update
    from cai.train.ppo_math import RunningMoments, kl_controller

    if not cut:  # the old behaviour: every minibatch at the rollout's full width
        def whole(ids, attn, mask, start, rows):
            return ids[rows], attn[rows], start, mask.shape[1]
        monkeypatch.setattr(ppo_data, "unpadded", whole)
    cfg = PPORunConfig(policy="x", prompts="x", output="x", batch_size=8, minibatch_size=2, ppo_epochs=2,
                       max_tokens=9, kl_coef=0.1, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, eps=1e-5)
    ctl, moments = kl_controller(0.1, None), RunningMoments()
    raw = torch.linspace(-1, 1, 8)
    stats = [_update(model, opt, ctl, moments, _rollout(), raw, cfg, step, None, None) for step in range(1, steps + 1)]
    monkeypatch.undo()
    return stats, [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("lora", [False, True])
def test_update_without_padding_columns_matches_the_padded_one(tmp_path, monkeypatch, lora):
    model = _policy(tmp_path, lora)
    twin = copy.deepcopy(model)
    cut_stats, cut_params = _run(model, monkeypatch, cut=True)
    pad_stats, pad_params = _run(twin, monkeypatch, cut=False)
    for got, want in zip(cut_stats, pad_stats):
        assert got.keys() == want.keys()
        for k in want:
            # The fractions count tokens on either side of a threshold: float noise from other matmul
            # shapes may move one token of the ~40 across it. Every continuous figure must agree.
            tol = dict(abs=0.05) if k.endswith("clip_frac") else dict(rel=1e-4, abs=1e-5)
            assert got[k] == pytest.approx(want[k], **tol), k
    # Something was learned (a test of equality between two no-ops would prove nothing).
    assert cut_stats[0]["policy_loss"] != 0 and abs(cut_stats[1]["kl"]) > 0
    for a, b in zip(cut_params, pad_params):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_unpadded_drops_only_columns_that_are_padding_in_every_row():
    from cai.train.ppo_data import unpadded

    roll = _rollout()
    ids, attn, mask, P = roll["ids"], roll["attn"], roll["mask"], roll["prompt_width"]
    x, a, start, width = unpadded(ids, attn, mask, P, torch.tensor([0, 4]))  # prompts 3 and 7, answers 2 and 2
    assert (start, width) == (7, 2) and x.shape == (2, 9)
    assert torch.equal(x, ids[[0, 4], 4:13]) and torch.equal(a.sum(-1), attn[[0, 4]].sum(-1))
    x, a, start, width = unpadded(ids, attn, mask, P, torch.tensor([1]))  # the longest of both: nothing to cut
    assert (start, width) == (P, 9) and torch.equal(x, ids[[1]])
