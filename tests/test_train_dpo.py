"""cai dpo: the per-pair conservative-DPO loss against hand-computed values, and inside TRL's trainer."""

from __future__ import annotations

import json
import math
import os

import pytest

from cai.train.dpo import EPSILON, cdpo_correction, cdpo_loss, with_epsilon


def _t(*xs):
    import torch

    return torch.tensor(xs, dtype=torch.float64)


def test_cdpo_loss_hand_values():
    # beta*h = 0.5*2 = 1: log s(1) = -0.3132617, log s(-1) = -1.3132617.
    # eps=0.25: 0.75*0.3132617 + 0.25*1.3132617 = 0.5632617
    assert cdpo_loss(_t(2.0), _t(0.25), 0.5).item() == pytest.approx(0.5632617, abs=1e-6)
    # eps=0 is plain DPO: -log s(0.1*-1) = log(1 + e^0.1) = 0.7443967
    assert cdpo_loss(_t(-1.0), _t(0.0), 0.1).item() == pytest.approx(0.7443967, abs=1e-6)
    # eps=0.5 (a tie) is symmetric in h: 0.5*(0.3132617 + 1.3132617) = 0.8132617 for h = +-2, beta 0.5
    assert cdpo_loss(_t(2.0, -2.0), _t(0.5, 0.5), 0.5).tolist() == pytest.approx([0.8132617] * 2, abs=1e-6)
    # eps=1 flips the pair: the loss of the reversed preference, -log s(-1) = 1.3132617
    assert cdpo_loss(_t(2.0), _t(1.0), 0.5).item() == pytest.approx(1.3132617, abs=1e-6)


def test_sigmoid_loss_plus_correction_is_cdpo():
    """The trainer adds eps*beta*h to TRL's -log s(beta*h); that sum must equal the cDPO loss exactly."""
    import torch.nn.functional as F

    h, eps, beta = _t(3.0, -0.7, 0.0, 12.0), _t(0.1, 0.4, 0.3, 0.05), 0.2
    plain = -F.logsigmoid(beta * h)
    assert (plain + cdpo_correction(h, eps, beta)).tolist() == pytest.approx(cdpo_loss(h, eps, beta).tolist(), abs=1e-12)


def test_epsilon_is_one_minus_p_chosen():
    ex = [{"prompt": [], "chosen": ["c"], "rejected": ["r"], "p_chosen": 0.8},
          {"prompt": [], "chosen": ["c"], "rejected": ["r"], "p_chosen": 0.3}]
    soft = with_epsilon([dict(e) for e in ex], hard=False)
    assert [e[EPSILON] for e in soft] == pytest.approx([0.2, 0.7])
    hard = with_epsilon([dict(e) for e in ex], hard=True)
    assert [e[EPSILON] for e in hard] == [0.0, 0.0]
    assert hard[1]["chosen"] == ["r"]  # p < 0.5: the labeller preferred the other answer


def test_trainer_loss_is_per_pair_cdpo(tmp_path, tiny_llama_dir):
    """One pair per batch: TRL's logged margin is beta*h for that pair, so the trainer's loss must be
    -(1-eps) log s(beta*h) - eps log s(-beta*h) with that pair's eps."""
    import torch

    from cai.train.data import load_mix
    from cai.train.dpo import DPORunConfig, build_dpo_trainer
    from cai.train.rundir import RunDir

    prefs = tmp_path / "prefs.jsonl"
    with open(prefs, "w") as f:
        for i, p in enumerate([0.7, 0.9]):
            f.write(json.dumps({"prompt": [{"role": "user", "content": f"Question {i}?"}],
                                "chosen": [{"role": "assistant", "content": f"A safe answer {i}."}],
                                "rejected": [{"role": "assistant", "content": f"A bad answer {i}!"}],
                                "p_chosen": p}) + "\n")
    config = DPORunConfig(policy=tiny_llama_dir, data=[str(prefs)], output=str(tmp_path / "out"), batch_size=1,
                          beta=0.5)
    examples, _ = load_mix(config.data, "preference", seed=0)
    examples = with_epsilon(examples, hard=False)
    run = RunDir(tmp_path / "out", command="dpo", config={}, data=[], base_model=tiny_llama_dir)
    trainer = build_dpo_trainer(config, examples, run, tiny_llama_dir, show_progress=False)
    # The reference log-probs were computed at construction; move the policy away from them so h != 0.
    torch.manual_seed(0)
    with torch.no_grad():
        for param in trainer.model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    trainer.model.train()
    seen = []
    for batch in trainer.get_train_dataloader():
        eps = batch[EPSILON].item()
        loss = trainer.compute_loss(trainer.model, batch).item()
        margin = trainer._metrics["train"]["rewards/margins"][-1]  # beta * h of this pair
        assert abs(margin) > 1e-3
        expected = -(1 - eps) * math.log(1 / (1 + math.exp(-margin))) - eps * math.log(1 / (1 + math.exp(margin)))
        assert loss == pytest.approx(expected, rel=1e-4, abs=1e-5)
        seen.append(round(eps, 6))
    assert sorted(seen) == [0.1, 0.3]


def test_dpo_refusals_before_any_model_work(tmp_path):
    from cai.errors import CAIError
    from cai.train.dpo import DPORunConfig, run_dpo

    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b", "p_chosen": 0.55}) + "\n")
    with pytest.raises(CAIError, match="no training examples left.*below_min_margin"):
        run_dpo(DPORunConfig(policy="/nonexistent", data=[str(prefs)], output=str(tmp_path / "o"), min_margin=0.2))
    with pytest.raises(CAIError, match="no preference data"):
        run_dpo(DPORunConfig(output=str(tmp_path / "o")))
    (tmp_path / "file").write_text("x")
    with pytest.raises(CAIError, match="is a file"):
        run_dpo(DPORunConfig(policy=str(tmp_path), data=[str(prefs)], output=str(tmp_path / "file")))
    with pytest.raises(ValueError, match="min-margin"):
        DPORunConfig(min_margin=1.0)


@pytest.mark.parametrize("show", [False, True])
def test_reference_pass_draws_a_bar_only_with_progress(tmp_path, tiny_llama_dir, capfd, show):
    """TRL's bar over the reference log-probs pass ignores disable_tqdm; --no-progress must still
    keep it out of a log (it wrote one redraw per batch), and --progress must keep it."""
    from cai.train.data import load_mix
    from cai.train.dpo import DPORunConfig, build_dpo_trainer
    from cai.train.rundir import RunDir

    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text(json.dumps({"prompt": [{"role": "user", "content": "Hi?"}],
                                 "chosen": [{"role": "assistant", "content": "Hello."}],
                                 "rejected": [{"role": "assistant", "content": "Go away!"}]}) + "\n")
    config = DPORunConfig(policy=tiny_llama_dir, data=[str(prefs)], output=str(tmp_path / "out"), batch_size=1)
    examples = with_epsilon(load_mix(config.data, "preference", seed=0)[0], hard=False)
    run = RunDir(tmp_path / "out", command="dpo", config={}, data=[], base_model=tiny_llama_dir)
    build_dpo_trainer(config, examples, run, tiny_llama_dir, show_progress=show)
    assert ("Computing reference log probs" in capfd.readouterr().err) is show
    assert "TQDM_DISABLE" not in os.environ
