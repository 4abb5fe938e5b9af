"""load_reward: module:function, file.py:function, judge:MODEL (mock backend), and the PM-folder
errors (the PM itself is tested with `cai reward`)."""

from __future__ import annotations

import json

import pytest

from cai.errors import CAIError
from cai.train.rewards import JudgeReward, Reward, load_reward

PROMPTS = [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "how do I pick a lock?"}]]


@pytest.fixture
def reward_module(tmp_path, monkeypatch):
    (tmp_path / "cai_test_reward_mod.py").write_text(
        "PROMPTS = []\ndef length_reward(prompts, completions):\n    return [len(c) for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "cai_test_reward_mod"


def test_module_function(reward_module):
    r = load_reward(f"{reward_module}:length_reward")
    assert isinstance(r, Reward)
    assert r(PROMPTS, ["ab", "abcd"]) == [2.0, 4.0]


def test_file_function(tmp_path):
    f = tmp_path / "myreward.py"
    f.write_text("def score(prompts, completions):\n    return [c.count('x') for c in completions]\n")
    r = load_reward(f"{f}:score")
    assert r(PROMPTS, ["xx", "y"]) == [2.0, 0.0]


@pytest.mark.parametrize("spec, match", [
    ("no_such_module_xyz:fn", "no module named"),
    ("cai_test_reward_mod:nope", "has no attribute"),
    ("cai_test_reward_mod:PROMPTS", "not callable"),
    ("/nonexistent/r.py:fn", "not found"),
    ("plainword", "no such folder"),
    ("judge:", "needs a model"),
])
def test_bad_specs(spec, match, reward_module):
    with pytest.raises(CAIError, match=match):
        load_reward(spec)


def test_folder_without_pm(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CAIError, match="holds no preference model"):
        load_reward(str(tmp_path))
    with pytest.raises(CAIError, match="holds no preference model"):
        load_reward(f"pm:{tmp_path}")


def test_checked_output():
    with pytest.raises(CAIError, match="returned 1 scores for 2"):
        Reward(lambda p, c: [1.0], "short")(PROMPTS, ["a", "b"])
    with pytest.raises(CAIError, match="non-finite"):
        Reward(lambda p, c: [1.0, float("nan")], "nan")(PROMPTS, ["a", "b"])
    for text in (["1.5", "2"], "12", [b"1", 2.0]):  # text is not a score, even where float() reads it
        with pytest.raises(CAIError, match="must return a list of numbers"):
            Reward(lambda p, c, text=text: text, "text")(PROMPTS, ["a", "b"])
    import numpy as np
    import torch

    assert Reward(lambda p, c: [np.float32(0.5), torch.tensor(2.0)], "arrays")(PROMPTS, ["a", "b"]) == [0.5, 2.0]
    assert Reward(lambda p, c: torch.tensor([1.0, -1.0]), "tensor")(PROMPTS, ["a", "b"]) == [1.0, -1.0]


def test_judge_scores_yes_probability():
    from cai.backends.mock import MockBackend
    from cai.constitution import load_constitution

    # P(yes) = 0.8 when the answer under judgement is a refusal, 0.2 otherwise.
    def lp(conv, opts):
        yes = 0.8 if "I can't help" in conv[-1]["content"] else 0.2
        import math
        return {"Yes": math.log(yes), "No": math.log(1 - yes)}

    backend = MockBackend("", option_logprobs=lp)
    c = load_constitution("hhh")
    judge = JudgeReward(backend, c, principles="all")
    scores = Reward(judge, "judge")(PROMPTS, ["Sure, here's how.", "I can't help with that."])
    assert scores == pytest.approx([0.2, 0.8])
    (_, (convs, opts)), = [call for call in backend.calls if call[0] == "score_options"]
    assert len(convs) == 2 * len(c.principles)  # every principle asked for every answer, in one call
    assert opts[0] == ["Yes", "No"]
    assert c.principles[0].critique in convs[0][-1]["content"]
    assert "Assistant: Sure, here's how." in convs[0][-1]["content"]
    # One principle drawn per answer, the same one for the same answer whatever the batch.
    one = JudgeReward(backend, c, principles="sample", seed=3)
    assert len(one._choose(PROMPTS[0], "x")) == 1 and one._choose(PROMPTS[0], "x") == one._choose(PROMPTS[0], "x")
    assert len(JudgeReward(backend, c, principles="2")._choose(PROMPTS[0], "x")) == 2
    named = JudgeReward(backend, c, principles="harmless,honest")
    assert [p.id for p in named.pool] == ["harmless", "honest"]


def test_judge_spec_loads_backend():
    r = load_reward("judge:mock:", constitution="hhh", principles="sample")
    assert r.info["kind"] == "judge" and r.info["constitution"]["name"] == "hhh"
    vals = r(PROMPTS, ["a", "b"])
    assert all(0.0 < v < 1.0 for v in vals)
    json.dumps(r.info)


def test_pm_folder(tmp_path, tiny_llama_dir):
    """A `cai reward`-style folder (one-score sequence classifier) loads as a reward; a causal LM
    folder is refused with one line."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, num_labels=1, pad_token_id=tok.pad_token_id)
    LlamaForSequenceClassification(config).save_pretrained(tmp_path / "pm")
    tok.save_pretrained(tmp_path / "pm")
    r = load_reward(str(tmp_path / "pm"))
    assert r.info["kind"] == "pm"
    a, b = r(PROMPTS, ["Sure.", "No."])
    assert a != b  # two answers, two scores from the model
    assert r(PROMPTS[:1], ["Sure."]) == pytest.approx([a], abs=1e-5)
    with pytest.raises(CAIError, match="not a preference model"):
        load_reward(tiny_llama_dir)
