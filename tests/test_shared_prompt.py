"""cai reward --share-prompt: a pair's two sides in one row (the shared prompt once) give the rewards,
losses and gradients of TRL's two rows, on a tiny random Llama."""

from __future__ import annotations

import json

import pytest

STEPS = 3
KEYS = ("loss", "grad_norm", "accuracy", "margin", "mean_reward", "min_reward", "max_reward")


def test_the_fork_leaves_each_side_its_last_token():
    from cai.train.shared_prompt import fork, packed_length

    assert fork([1, 2, 3, 4], [1, 2, 5]) == 2
    assert fork([7, 8], [9, 8]) == 0
    assert fork([1, 2], [1, 2, 3]) == 1  # one side a prefix of the other: its last token stays its own
    assert fork([1, 2, 3], [1, 2, 3]) == 2
    assert packed_length([1, 2, 3, 4], [1, 2, 5]) == 5


def test_the_mask_keeps_the_answers_apart():
    from cai.train.shared_prompt import SharedPromptCollator

    batch = SharedPromptCollator(pad_token_id=0)([{"chosen_ids": [5, 6, 7, 8], "rejected_ids": [5, 6, 9]},
                                                  {"chosen_ids": [4, 3], "rejected_ids": [2]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [4, 3, 2, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 2], [0, 1, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch["chosen_at"].tolist() == [3, 1] and batch["rejected_at"].tolist() == [4, 2]
    mask = batch["pair_mask"][0, 0].int().tolist()
    assert mask[4] == [1, 1, 0, 0, 1]  # the rejected answer sees the prompt and itself, not the chosen answer
    assert mask[3] == [1, 1, 1, 1, 0]
    second = batch["pair_mask"][1, 0].int().tolist()
    assert second[2] == [0, 0, 1, 0, 0]  # no shared prefix: each side sees itself alone
    assert second[3][:3] == [0, 0, 0] and second[3][3] == 1  # a padding query sees no real token


def seq_cls(model_dir: str, attention: str):
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = 0
    if attention == "cai":
        from cai.train.short_attention import use_short_eager_attention

        assert use_short_eager_attention(model)
    return model


def pairs():
    """Shared prompts of several lengths, one side a prefix of the other, identical sides, no shared
    token, and lengths that leave padding in both layouts."""
    return [{"chosen_ids": [1, 5, 6, 7, 8, 9, 10], "rejected_ids": [1, 5, 6, 7, 11]},
            {"chosen_ids": [1, 12, 13], "rejected_ids": [1, 12, 13, 14, 15, 16]},
            {"chosen_ids": [1, 17, 18, 19], "rejected_ids": [1, 17, 18, 19]},
            {"chosen_ids": [20, 21], "rejected_ids": [22, 23, 24]},
            {"chosen_ids": [1, 5, 6, 25], "rejected_ids": [1, 5, 6, 26, 27, 28, 29, 30]}]


@pytest.mark.parametrize("attention", ["sdpa", "cai"])
def test_one_row_per_pair_gives_the_two_rows_rewards_and_gradients(tiny_llama_dir, attention):
    import torch

    from cai.train.reward_trainer import SoftPreferenceCollator
    from cai.train.shared_prompt import SharedPromptCollator, SharedPromptRewards, score_head

    model = seq_cls(tiny_llama_dir, attention)
    two = SoftPreferenceCollator(pad_token_id=0)(pairs())
    one = SharedPromptCollator(pad_token_id=0)(pairs())
    assert one["attention_mask"].sum() < two["attention_mask"].sum()  # each prompt counted once
    want = model(input_ids=two["input_ids"], attention_mask=two["attention_mask"]).logits
    (want_grad,) = torch.autograd.grad(want.pow(2).sum(), model.model.layers[0].self_attn.q_proj.weight)
    one.pop("p_chosen")
    one.pop("attention_mask")
    got = SharedPromptRewards(model, score_head(model))(**one).logits
    (got_grad,) = torch.autograd.grad(got.pow(2).sum(), model.model.layers[0].self_attn.q_proj.weight)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-3, atol=1e-6)


def write_prefs(path, n: int = 12) -> str:
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": [{"role": "user", "content": f"Question {i}? " + "Tell me more. " * (i % 4)}],
                                "chosen": [{"role": "assistant", "content": f"A safe answer {i}." * (1 + i % 3)}],
                                "rejected": [{"role": "assistant", "content": f"A bad answer {i}!" * (1 + i % 2)}],
                                "p_chosen": 0.6 + 0.03 * i}) + "\n")
    return str(path)


def train(tmp_path, model_dir: str, name: str, **overrides) -> list[dict]:
    from cai.train.prefdata import load_pairs
    from cai.train.reward import RewardTrainConfig, build_reward_trainer
    from cai.train.rundir import RunDir

    out = tmp_path / name
    # Random batches: length grouping would order the pairs by a different length in each layout.
    config = RewardTrainConfig(model=model_dir, data=(str(tmp_path / "prefs.jsonl"),), output=str(out), max_steps=STEPS,
                               batch_size=4, lr=1e-3, bf16=False, save_steps=1000, group_by_length=False, **overrides)
    run = RunDir(out, command="reward", config={}, data=[], base_model=model_dir)
    pairs = load_pairs(config.data)
    # The last pairs held out: TRL's evaluation after the epoch goes through the same compute_loss.
    trainer = build_reward_trainer(config, pairs[:-3], run, model_dir, show_progress=False, heldout=pairs[-3:])
    trainer.train()
    logs = [r for r in trainer.state.log_history if "loss" in r and "train_runtime" not in r]
    assert len(logs) == STEPS
    evals = [r for r in trainer.state.log_history if "eval_loss" in r]
    assert len(evals) == 1
    return logs + evals


@pytest.mark.parametrize("setting", [{}, {"lora": True}], ids=["full", "lora"])
def test_cai_reward_first_steps_match_two_rows_per_pair(tmp_path, tiny_llama_dir, setting):
    write_prefs(tmp_path / "prefs.jsonl")
    new = train(tmp_path, tiny_llama_dir, "one-row", share_prompt=True, **setting)
    old = train(tmp_path, tiny_llama_dir, "two-rows", share_prompt=False, **setting)
    for step, (a, b) in enumerate(zip(new[:STEPS], old[:STEPS]), start=1):
        for key in KEYS:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), f"step {step}: {key} {a[key]} != {b[key]}"
    for key in ("eval_loss", "eval_accuracy", "eval_margin", "eval_mean_reward"):
        assert new[-1][key] == pytest.approx(old[-1][key], rel=1e-4, abs=1e-5), key
    assert new[STEPS - 1]["loss"] != pytest.approx(new[0]["loss"], rel=1e-3)  # the steps changed the weights
    assert new[STEPS - 1]["num_tokens"] < old[STEPS - 1]["num_tokens"]  # the prompts were computed once


def _pairs_in(batches: list[dict]) -> list[tuple]:
    """(chosen ids, rejected ids) of every one-row pair: the rejected side restarts its positions at the fork."""
    seen = []
    for b in batches:
        for ids, pos, c, r in zip(b["input_ids"].tolist(), b["position_ids"].tolist(), b["chosen_at"].tolist(),
                                  b["rejected_at"].tolist()):
            k = pos[c + 1]
            seen.append((tuple(ids[:c + 1]), tuple(ids[:k] + ids[c + 1:r + 1])))
    return seen


def test_grouped_one_row_batches_see_every_pair_once_and_pad_less(tiny_llama_dir, tmp_path):
    from collections import Counter

    from test_reward_length_grouping import _epoch, _trainer

    from cai.train.shared_prompt import packed_length

    grouped = _trainer(tiny_llama_dir, tmp_path, "grouped", True, share_prompt=True)
    plain = _trainer(tiny_llama_dir, tmp_path, "plain", False, share_prompt=True)
    two_rows = _trainer(tiny_llama_dir, tmp_path, "two", True, share_prompt=False)
    data = grouped.train_dataset
    assert list(data["length"]) == [packed_length(c, r) for c, r in zip(data["chosen_ids"], data["rejected_ids"])]
    expected = Counter(zip(map(tuple, data["chosen_ids"]), map(tuple, data["rejected_ids"])))
    g, p = _epoch(grouped), _epoch(plain)
    assert Counter(_pairs_in(g)) == expected and Counter(_pairs_in(p)) == expected

    def computed(batches):  # every position of every row, padding included
        return sum(b["input_ids"].numel() for b in batches)

    assert computed(g) < computed(p)
    # The prompt once: fewer positions than the two-row layout computes, grouped as well.
    assert computed(g) < 0.9 * computed(_epoch(two_rows)), (computed(g), computed(_epoch(two_rows)))


def test_a_pm_scores_both_answers_of_a_prompt_in_one_row_as_it_scores_each(tiny_llama_dir):
    """PreferenceModel.score_pairs (the PM's checks after cai reward): one row a pair, the scores of
    PreferenceModel.score on each side, batched across pairs of different lengths."""
    from transformers import AutoTokenizer

    from cai.train.pm import PreferenceModel

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = seq_cls(tiny_llama_dir, "sdpa").eval()
    model.config.pad_token_id = tok.pad_token_id  # as PreferenceModel.load sets it: score() pools by it
    pm = PreferenceModel(model, tok, batch_size=4)
    prompts = [[{"role": "user", "content": "Tell me about rivers. " * (1 + i % 3)}] for i in range(5)]
    first = [f"Rivers flow {i}." * (1 + i % 2) for i in range(5)]
    second = ["I would rather not.", "Rivers flow 1.Rivers flow 1.", "Water.", "No " * 9, "Rivers flow 4."]
    a, b = pm.score_pairs(prompts, first, second)
    assert a == pytest.approx(pm.score(prompts, first), rel=1e-4, abs=1e-5)
    assert b == pytest.approx(pm.score(prompts, second), rel=1e-4, abs=1e-5)
    assert a[1] == pytest.approx(b[1], rel=1e-4, abs=1e-5)  # the same answer twice: one score


def test_the_eval_row_from_the_saved_pms_scores_is_trls_last_evaluation(tmp_path, tiny_llama_dir):
    """cai reward drops the trainer's evaluation after the last epoch and logs one made from the
    saved PM's scores of the same held-out pairs: it must carry TRL's numbers."""
    from cai.train.pm import PreferenceModel
    from cai.train.prefdata import load_pairs
    from cai.train.reward import RewardTrainConfig, build_reward_trainer, heldout_eval_row, heldout_scores
    from cai.train.rundir import RunDir

    write_prefs(tmp_path / "prefs.jsonl")
    out = tmp_path / "pm"
    config = RewardTrainConfig(model=tiny_llama_dir, data=(str(tmp_path / "prefs.jsonl"),), output=str(out),
                               max_steps=STEPS, batch_size=4, lr=1e-3, bf16=False, save_steps=1000)
    pairs = load_pairs(config.data)
    trainer = build_reward_trainer(config, pairs[:-3], RunDir(out, command="reward", config={}, data=[],
                                                               base_model=tiny_llama_dir),
                                   tiny_llama_dir, show_progress=False, heldout=pairs[-3:])
    trainer.train()
    trl = [r for r in trainer.state.log_history if "eval_loss" in r][-1]
    trainer.save_model(str(out))
    chosen, rejected = heldout_scores(PreferenceModel.load(out, dtype="float32"), pairs[-3:])
    ours = heldout_eval_row(pairs[-3:], chosen, rejected)
    assert set(ours) <= set(trl)
    for key, value in ours.items():  # the three pairs are one evaluation batch: min and max agree too
        assert value == pytest.approx(trl[key], rel=1e-4, abs=1e-5), key


def test_dpo_rows_packed_give_each_row_its_own_hidden_states(tiny_llama_dir):
    """cai dpo --share-prompt: TRL's [chosen; rejected] rows (real tokens first, then padding) run as
    one row a pair, and each real position of TRL's layout gets back the hidden state its own row
    computes: shared prompts of several lengths, one side a prefix of the other, identical sides,
    no shared token."""
    import torch
    from transformers import AutoModelForCausalLM

    from cai.train.shared_prompt import pack_two_row_batch

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    sides = [(p["chosen_ids"], p["rejected_ids"]) for p in pairs()]
    rows = [c for c, _ in sides] + [r for _, r in sides]
    width = max(map(len, rows)) + 1  # a padding column in every row
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    with torch.no_grad():
        want = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        packed, index = pack_two_row_batch(ids, mask, pad_token_id=0)
        assert packed["input_ids"].shape[0] == len(sides)
        got = model.model(input_ids=packed["input_ids"], attention_mask=packed["pair_mask"],
                          position_ids=packed["position_ids"]).last_hidden_state
    got = got.reshape(-1, got.shape[-1])[index]
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], rtol=1e-4, atol=1e-5)
    assert packed["attention_mask"].sum() < mask.sum()  # the shared prompts ran once


def test_dpo_rows_not_in_trl_layout_are_left_alone():
    import torch

    from cai.train.shared_prompt import pack_two_row_batch

    ids = torch.tensor([[5, 6, 7], [5, 6, 8]])
    assert pack_two_row_batch(ids, torch.tensor([[0, 1, 1], [1, 1, 1]]), 0) is None  # padding before a token
    assert pack_two_row_batch(ids[:1], torch.ones(1, 3, dtype=torch.long), 0) is None  # no pair
