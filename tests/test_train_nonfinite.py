"""Every trainer stops on a non-finite loss: a NaN injected from step 3 ends the run there with a
one-line error naming the step and the last good checkpoint (step 2), no checkpoint and no final
model hold the bad weights, and the run record stays "running" so a rerun resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cai.errors import CAIError

NAN_AT = 3
COMMON = dict(max_steps=4, save_steps=1, logging_steps=1, batch_size=2, max_length=64, bf16=False, seed=0)


def _poison(monkeypatch, cls) -> None:
    """``cls.compute_loss`` returns NaN from step NAN_AT on (the gradients, then the weights, follow)."""
    orig = cls.compute_loss

    def compute_loss(self, model, inputs, return_outputs=False, *args, **kwargs):
        out = orig(self, model, inputs, return_outputs, *args, **kwargs)
        if self.state.global_step + 1 < NAN_AT:  # global_step + 1 is the step being computed
            return out
        return (out[0] * float("nan"), *out[1:]) if isinstance(out, tuple) else out * float("nan")

    monkeypatch.setattr(cls, "compute_loss", compute_loss)


def _pairs(path: Path) -> str:
    path.write_text("".join(json.dumps({
        "prompt": [{"role": "user", "content": f"Question {i}?"}],
        "chosen": [{"role": "assistant", "content": f"A safe answer {i}."}],
        "completion": [{"role": "assistant", "content": f"A safe answer {i}."}],
        "rejected": [{"role": "assistant", "content": f"A bad answer {i}!"}], "p_chosen": 0.9}) + "\n"
        for i in range(12)))
    return str(path)


def _sft(monkeypatch, model, tmp_path, out):
    import trl

    from cai.train.sft import SFTRunConfig, run_sft

    _poison(monkeypatch, trl.SFTTrainer)
    run_sft(SFTRunConfig(model=model, data=[_pairs(tmp_path / "d.jsonl")], output=out, **COMMON), show_progress=False)


def _dpo(monkeypatch, model, tmp_path, out):
    import trl

    from cai.train.dpo import DPORunConfig, run_dpo

    _poison(monkeypatch, trl.DPOTrainer)
    run_dpo(DPORunConfig(policy=model, data=[_pairs(tmp_path / "d.jsonl")], output=out, **COMMON), show_progress=False)


def _reward(monkeypatch, model, tmp_path, out):
    from cai.train.reward import RewardTrainConfig, run_reward
    from cai.train.reward_trainer import SoftRewardTrainer

    _poison(monkeypatch, SoftRewardTrainer)
    run_reward(RewardTrainConfig(model=model, data=(_pairs(tmp_path / "d.jsonl"),), output=out, human_eval=(),
                                 **COMMON), show_progress=False)


def _rloo(monkeypatch, model, tmp_path, out):
    import trl

    from cai.train.rloo import RlooConfig, run_rloo

    _poison(monkeypatch, trl.RLOOTrainer)
    run_rloo(RlooConfig(policy=model, output=out, samples_per_prompt=2, max_tokens=4, **COMMON),
             reward=lambda prompts, completions: [float(len(c)) for c in completions],
             prompts=["Say hello", "Name a colour", "Count to three", "What is tea?"], show_progress=False)


# dpo and rloo go through the same train_guarded call as sft and reward, at 2-3x their cost.
@pytest.mark.parametrize("train", [_sft, _reward, pytest.param(_dpo, marks=pytest.mark.slow),
                                   pytest.param(_rloo, marks=pytest.mark.slow)], ids=["sft", "reward", "dpo", "rloo"])
def test_a_nan_loss_stops_the_trainer_at_its_step(train, monkeypatch, tiny_llama_dir, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(CAIError) as e:
        train(monkeypatch, tiny_llama_dir, tmp_path, str(out))
    msg = str(e.value)
    assert f"at step {NAN_AT}" in msg and "checkpoint-2" in msg and "\n" not in msg, msg
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2"]
    assert json.loads((out / "cai_run.json").read_text())["status"] == "running"
    assert not (out / "config.json").exists(), "no final model may be saved from bad weights"


def test_ppo_stops_on_a_nan_loss(monkeypatch, tiny_llama_dir, tmp_path):
    from cai.train import ppo
    from cai.train.ppo import PPORunConfig, run_ppo

    update = ppo._update

    def poisoned(*args, **kwargs):
        stats = update(*args, **kwargs)
        step = args[7]  # _update(model, opt, ctl, moments, roll, raw, cfg, step, ...)
        return {**stats, "policy_loss": float("nan")} if step >= NAN_AT else stats

    monkeypatch.setattr(ppo, "_update", poisoned)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["Say hello", "Name a colour"]))
    out = tmp_path / "run"
    cfg = PPORunConfig(policy=tiny_llama_dir, prompts=str(prompts), output=str(out), max_steps=4, batch_size=2,
                       max_tokens=4, max_length=64, ppo_epochs=1, save_steps=1, bf16=False, seed=0)
    with pytest.raises(CAIError) as e:
        run_ppo(cfg, reward=lambda prompts, completions: [0.5] * len(completions), show_progress=False)
    msg = str(e.value)
    assert f"policy_loss became nan at step {NAN_AT}" in msg and "step-2" in msg and "\n" not in msg, msg
    assert not (out / "checkpoints" / f"step-{NAN_AT}").exists()
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2], "the bad step is not logged"
    assert json.loads((out / "cai_run.json").read_text())["status"] == "running"
