"""`cai rloo`: a short run on a tiny model with a plain Python reward completes and logs."""

from __future__ import annotations

import json

import pytest

from cai.train.rloo import RlooConfig, run_rloo, trl_reward

PROMPTS = ["Say hello", "Name a colour", "Count to three", "What is tea?"]


def test_trl_reward_adapter_passes_conversations_and_strings():
    seen = {}

    def reward(prompts, completions):
        seen["args"] = (prompts, completions)
        return [1, 2]

    wrapped = trl_reward(reward)
    out = wrapped(prompts=[[{"role": "user", "content": "q"}], "plain"],
                  completions=[[{"role": "assistant", "content": "a"}], "b"], completion_ids=None, trainer_state=None)
    assert out == [1.0, 2.0] and wrapped.__name__ == "reward"
    assert seen["args"] == ([[{"role": "user", "content": "q"}], [{"role": "user", "content": "plain"}]], ["a", "b"])


def test_config_checks():
    with pytest.raises(ValueError, match="samples-per-prompt must be >= 2"):
        RlooConfig(samples_per_prompt=1)
    with pytest.raises(ValueError, match="multiple of --samples-per-prompt"):
        RlooConfig(batch_size=6, samples_per_prompt=4)
    # TRL's RLOO cuts no prompt: a max_length from a run file or the API would do nothing, so it is refused,
    # and `cai rloo` shows no --max-length (PPO, which cuts prompts to it, does).
    with pytest.raises(ValueError, match="max_length has no effect in rloo"):
        RlooConfig(max_length=256)
    from cai.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["rloo", "--max-length", "256"])
    assert build_parser().parse_args(["ppo", "--max-length", "256"]).max_length == 256


def test_short_rloo_run_with_a_python_reward(tiny_llama_dir, tmp_path, monkeypatch):
    from cai.backends import hf_sampling

    calls, draws = [], []
    real_draw = hf_sampling.inverse_cdf_draw
    monkeypatch.setattr(hf_sampling, "inverse_cdf_draw", lambda *a, **k: draws.append(1) or real_draw(*a, **k))

    def e_fraction(prompts, completions):
        calls.append(len(completions))
        assert all(isinstance(p, list) and p[-1]["role"] == "user" for p in prompts)
        return [c.count("e") / max(1, len(c)) for c in completions]

    out = tmp_path / "rloo"
    config = RlooConfig(policy=tiny_llama_dir, output=str(out), max_steps=2, batch_size=4, samples_per_prompt=2,
                        max_tokens=6, lr=1e-4, bf16=False, logging_steps=1, save_steps=100, seed=0)
    run = run_rloo(config, reward=e_fraction, prompts=PROMPTS)
    assert run["status"] == "done" and run["final_metrics"]["global_step"] == 2 and run["reward"] == "e_fraction"
    assert calls and all(n % 2 == 0 for n in calls)  # whole groups of k answers are scored together
    assert draws  # TRL's generate sampled through cai's inverse-CDF draw
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all({"reward", "kl", "entropy", "length", "clip_frac", "loss"} <= set(r) for r in rows)
    assert (out / "curves" / "reward.png").is_file() and (out / "config.json").is_file()

    from cai.backends import load_backend
    from cai.types import SamplingParams

    backend = load_backend(f"hf:{out}")
    assert len(backend.generate([[{"role": "user", "content": "hi"}]], SamplingParams(max_tokens=3))) == 1


def test_a_judge_reward_takes_the_constitution_and_principles(tiny_llama_dir, tmp_path, monkeypatch):
    """`--reward judge:MODEL` reads `-c` and `--principles` in rloo as in ppo (rloo had neither flag, so its
    judge always used the default constitution with every principle)."""
    from cai.cli import build_parser
    from cai.config import stage_config
    from cai.train import rewards

    seen = {}

    class Stop(Exception):
        pass

    def fake_load(spec, **kw):
        seen.update(spec=spec, **kw)
        raise Stop

    monkeypatch.setattr(rewards, "load_reward", fake_load)
    args = build_parser().parse_args(["rloo", "-m", tiny_llama_dir, "-o", str(tmp_path / "r"), "--reward",
                                      "judge:mock:", "-c", "hhh", "--principles", "sample", "--seed", "3"])
    config = stage_config(RlooConfig, args)
    with pytest.raises(Stop):
        run_rloo(config, prompts=PROMPTS)
    assert seen == {"spec": "judge:mock:", "constitution": "hhh", "principles": "sample", "seed": 3}
