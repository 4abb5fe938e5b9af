"""--completion-logits: the LM head runs on the answer tokens only, and the first steps of cai sft
and cai dpo (losses, gradient norms, TRL's metrics) match TRL's full-sequence path on a tiny random
Llama: full weights, LoRA, packing (padding-free) and DPO's soft-label loss."""

from __future__ import annotations

import json

import pytest

STEPS = 3
# Keys every step logs on both paths; the values must match.
SFT_KEYS = ("loss", "grad_norm", "entropy", "mean_token_accuracy", "num_tokens")
DPO_KEYS = ("loss", "grad_norm", "rewards/margins", "logps/chosen", "logps/rejected", "entropy",
            "mean_token_accuracy", "logits/chosen")


def write_sft(path, n: int = 16) -> str:
    """Long prompts of varied length and short answers, as in red-team data: most of each padded
    batch is prompt and padding, which the compact head skips."""
    with open(path, "w") as f:
        for i in range(n):
            prompt = [{"role": "user", "content": f"Question {i}: " + "please explain in detail " * (2 + i % 5)}]
            answer = [{"role": "assistant", "content": f"No, {i}." + " Sorry." * (i % 3)}]
            f.write(json.dumps({"prompt": prompt, "completion": answer}) + "\n")
    return str(path)


def write_prefs(path, n: int = 8) -> str:
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": [{"role": "user", "content": f"Question {i}? " + "Tell me more. " * (i % 4)}],
                                "chosen": [{"role": "assistant", "content": f"A safe answer {i}."}],
                                "rejected": [{"role": "assistant", "content": f"A bad answer {i}!" * (1 + i % 2)}],
                                "p_chosen": 0.6 + 0.05 * i}) + "\n")
    return str(path)


def head_rows(monkeypatch) -> list[int]:
    """The number of positions each call projects through the LM head (TRL's kernel, both paths)."""
    from trl.kernels import ChunkedLogProbFunction

    rows: list[int] = []
    apply = ChunkedLogProbFunction.apply

    def spy(hidden, *args):
        rows.append(hidden.shape[0])
        return apply(hidden, *args)

    monkeypatch.setattr(ChunkedLogProbFunction, "apply", staticmethod(spy))
    return rows


def train(kind: str, tmp_path, model_dir: str, monkeypatch, name: str, **overrides) -> tuple[list[dict], int]:
    """STEPS optimiser steps of cai sft or cai dpo as the command builds them; (per-step logs, head rows)."""
    from cai.train.data import load_mix
    from cai.train.rundir import RunDir

    out = tmp_path / name
    # fp32 unless asked: the default (bf16 where measured faster) would make the test depend on the machine.
    common = {**dict(data=[str(tmp_path / f"{kind}.jsonl")], output=str(out), max_steps=STEPS, batch_size=4,
                     lr=1e-3, bf16=False, save_steps=1000), **overrides}
    if kind == "sft":
        from cai.train.sft import SFTRunConfig, build_sft_trainer

        config = SFTRunConfig(model=model_dir, **common)
        examples, _ = load_mix(config.data, "sft", seed=0)
        build = build_sft_trainer
    else:
        from cai.train.dpo import DPORunConfig, build_dpo_trainer, with_epsilon

        config = DPORunConfig(policy=model_dir, beta=0.5, **common)
        examples = with_epsilon(load_mix(config.data, "preference", seed=0)[0], hard=False)
        build = build_dpo_trainer
    rows = head_rows(monkeypatch)
    run = RunDir(out, command=kind, config={}, data=[], base_model=model_dir)
    trainer = build(config, examples, run, model_dir, show_progress=False)
    trainer.train()
    monkeypatch.undo()
    logs = [r for r in trainer.state.log_history if "loss" in r and "train_runtime" not in r]
    assert len(logs) == STEPS
    return logs, sum(rows)


def assert_same(new: list[dict], old: list[dict], keys: tuple[str, ...]) -> None:
    for step, (a, b) in enumerate(zip(new, old), start=1):
        for key in keys:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), f"step {step}: {key} {a[key]} != {b[key]}"


@pytest.mark.parametrize("setting", [{}, {"lora": True}, {"packing": True}, {"bf16": True}],
                         ids=["full", "lora", "packing", "bf16"])
def test_sft_first_steps_match_the_full_head(tmp_path, tiny_llama_dir, monkeypatch, setting):
    write_sft(tmp_path / "sft.jsonl")
    new, new_rows = train("sft", tmp_path, tiny_llama_dir, monkeypatch, "new", completion_logits=True, **setting)
    old, old_rows = train("sft", tmp_path, tiny_llama_dir, monkeypatch, "old", completion_logits=False, **setting)
    assert_same(new, old, SFT_KEYS)
    assert new[-1]["loss"] != pytest.approx(new[0]["loss"], rel=1e-3)  # the steps changed the weights
    # The prompts (and, padded, the padding) are most of every batch: the head saw only the answers.
    assert 0 < new_rows < old_rows / 2, (new_rows, old_rows)


@pytest.mark.parametrize("setting", [{}, {"lora": True}], ids=["full", "lora"])
def test_dpo_first_steps_match_the_full_head(tmp_path, tiny_llama_dir, monkeypatch, setting):
    """Soft labels (ε > 0), so SoftLabelDPOTrainer's own term, read from the policy's log-probs, is in the loss."""
    write_prefs(tmp_path / "dpo.jsonl")
    new, new_rows = train("dpo", tmp_path, tiny_llama_dir, monkeypatch, "new", completion_logits=True, **setting)
    old, old_rows = train("dpo", tmp_path, tiny_llama_dir, monkeypatch, "old", completion_logits=False, **setting)
    assert_same(new, old, DPO_KEYS)
    assert abs(new[-1]["rewards/margins"]) > 1e-3  # the policy moved from the reference
    assert 0 < new_rows < old_rows / 2, (new_rows, old_rows)


@pytest.mark.parametrize("setting", [{}, {"lora": True}], ids=["full", "lora"])
def test_dpo_one_row_a_pair_matches_two_rows(tmp_path, tiny_llama_dir, monkeypatch, setting):
    """--share-prompt (the default): the body runs each pair as one row, the prompt once; the first
    steps' losses, log-probs and metrics are those of TRL's two rows, and it ran fewer positions."""
    from transformers import LlamaModel

    write_prefs(tmp_path / "dpo.jsonl")
    positions: list[int] = []
    forward = LlamaModel.forward

    def counted(self, input_ids=None, attention_mask=None, **kwargs):
        # Two rows: their real tokens; one row a pair (a 4-D mask): every position of the packed rows.
        positions.append(int(attention_mask.sum()) if attention_mask.dim() == 2 else input_ids.numel())
        return forward(self, input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(LlamaModel, "forward", counted)
        new, _ = train("dpo", tmp_path, tiny_llama_dir, monkeypatch, "new", share_prompt=True, **setting)
    packed, positions[:] = sum(positions), []
    with pytest.MonkeyPatch.context() as m:
        m.setattr(LlamaModel, "forward", counted)
        old, _ = train("dpo", tmp_path, tiny_llama_dir, monkeypatch, "old", share_prompt=False, **setting)
    assert_same(new, old, DPO_KEYS)
    assert abs(new[-1]["rewards/margins"]) > 1e-3
    assert 0 < packed < 0.8 * sum(positions), (packed, sum(positions))


def test_no_trl_head_leaves_the_model_alone(tiny_llama_dir):
    """A model TRL did not patch (or a TRL whose fused forward this was not written against) keeps
    its forward: the option falls back instead of guessing."""
    from transformers import AutoModelForCausalLM

    from cai.train.completion_logits import score_completions_only

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    assert score_completions_only(model) is False
    assert "forward" not in vars(model)

    def forward(self, *args, fused_lm_head=False, **kwargs):  # a fused forward without TRL's settings
        return None

    import types

    model.forward = types.MethodType(forward, model)
    assert score_completions_only(model) is False
    assert model.forward.__func__ is forward


def test_flag_and_default():
    from cai.cli import build_parser
    from cai.train.dpo import DPORunConfig
    from cai.train.rundir import _NOT_IDENTITY
    from cai.train.sft import SFTRunConfig

    assert SFTRunConfig().completion_logits is True and DPORunConfig().completion_logits is True
    assert DPORunConfig().share_prompt is True
    assert build_parser().parse_args(["dpo", "--no-share-prompt"]).share_prompt is False
    for command in ("sft", "dpo"):
        args = build_parser().parse_args([command, "--no-completion-logits"])
        assert args.completion_logits is False
    # The same loss computed another way: switching it resumes a killed run instead of refusing it.
    assert "completion_logits" in _NOT_IDENTITY
