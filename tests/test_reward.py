"""`cai reward`: the soft Bradley-Terry loss by hand, data shapes, learning on a tiny model, PM
scoring per critique round (kill -9 resume: a case in tests/test_faults.py)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from cai.errors import CAIError
from cai.train.prefdata import load_pairs, record_pair, split_pairs



def test_soft_bt_loss_against_hand_values():
    import torch

    from cai.train.reward_trainer import soft_bt_loss

    r_c = torch.tensor([2.0, 0.0, -1.0])
    r_r = torch.tensor([1.0, 0.0, 1.0])
    p = torch.tensor([1.0, 0.5, 0.8])
    # d = r_c - r_r = (1, 0, -2); log sigma(1) = -0.3132617, log sigma(0) = -0.6931472,
    # log sigma(-2) = -2.1269280, log sigma(2) = -0.1269280.
    # pair 1: -(1 * -0.3132617)                      = 0.3132617
    # pair 2: -(0.5 * -0.6931472 + 0.5 * -0.6931472) = 0.6931472
    # pair 3: -(0.8 * -2.1269280 + 0.2 * -0.1269280) = 1.7269280
    per_pair = [0.3132617, 0.6931472, 1.7269280]
    assert soft_bt_loss(r_c, r_r, p).item() == pytest.approx(sum(per_pair) / 3, abs=1e-6)
    for i, expected in enumerate(per_pair):
        assert soft_bt_loss(r_c[i:i + 1], r_r[i:i + 1], p[i:i + 1]).item() == pytest.approx(expected, abs=1e-6)


def test_soft_bt_loss_hard_label_is_trl_loss_and_half_has_zero_gradient_at_a_tie():
    import torch
    import torch.nn.functional as F

    from cai.train.reward_trainer import soft_bt_loss

    r_c, r_r = torch.tensor([0.3, -1.2, 2.0]), torch.tensor([0.1, 0.4, 2.5])
    assert soft_bt_loss(r_c, r_r, torch.ones(3)).item() == pytest.approx(-F.logsigmoid(r_c - r_r).mean().item())
    d = torch.zeros(4, requires_grad=True)
    soft_bt_loss(d, torch.zeros(4), torch.full((4,), 0.5)).backward()
    assert d.grad.abs().max().item() == pytest.approx(0.0, abs=1e-7)


def test_record_shapes():
    conv = record_pair({"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}],
                        "rejected": [{"role": "assistant", "content": "b"}], "p_chosen": 0.7, "prompt_id": "x"}, "f:1")
    assert (conv.prompt, conv.chosen, conv.rejected, conv.p_chosen, conv.group) == (
        [{"role": "user", "content": "q"}], "a", "b", 0.7, "x")
    plain = record_pair({"prompt": "q", "chosen": "a", "rejected": "b"}, "f:2")
    assert plain.prompt == [{"role": "user", "content": "q"}] and plain.p_chosen == 1.0
    implicit = record_pair({"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                            "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]}, "f:3")
    assert (implicit.prompt, implicit.chosen, implicit.rejected) == ([{"role": "user", "content": "q"}], "a", "b")
    hh = record_pair({"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: b"}, "f:4")
    assert (hh.prompt, hh.chosen, hh.rejected) == ([{"role": "user", "content": "q"}], "a", "b")
    with pytest.raises(CAIError, match="f:5: a preference record needs chosen and rejected"):
        record_pair({"prompt": "q", "completion": "a"}, "f:5")
    with pytest.raises(CAIError, match="f:6: p_chosen must be a probability"):
        record_pair({"prompt": "q", "chosen": "a", "rejected": "b", "p_chosen": 1.5}, "f:6")


def test_split_keeps_prompts_whole(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"prompt_id": f"g{i // 3}", "prompt": "q", "chosen": "a", "rejected": "b"}) + "\n"
                            for i in range(30)))
    train, held = split_pairs(load_pairs([path]), 0.2, seed=0)
    assert len(held) == 6 and not {p.group for p in train} & {p.group for p in held}


WORDS = "apple river stone cloud green paper music light table window garden ocean".split()


def _marker_pairs(n: int, seed: int, p: float) -> list[dict]:
    """Answers that contain "banana" are the preferred ones; the rest of the text is random words."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = " ".join(rng.sample(WORDS, 4)), " ".join(rng.sample(WORDS, 4))
        out.append({"id": f"{seed}-{i}", "prompt": [{"role": "user", "content": " ".join(rng.sample(WORDS, 3))}],
                    "chosen": [{"role": "assistant", "content": f"{a} banana"}],
                    "rejected": [{"role": "assistant", "content": b}], "p_chosen": p})
    return out


def _write(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def _train(tiny_llama_dir, tmp_path, name, p):
    from cai.train.reward import RewardTrainConfig, run_reward

    data = _write(tmp_path / f"{name}.jsonl", _marker_pairs(160, seed=1, p=p))
    config = RewardTrainConfig(model=tiny_llama_dir, data=(data,), output=str(tmp_path / name), max_steps=30,
                               lr=1e-3, batch_size=8, max_length=64, eval_split=0.2, human_eval=(), seed=0,
                               save_steps=100, logging_steps=5, bf16=False)
    return run_reward(config)


def _margins(pm, records):
    prompts = [r["prompt"] for r in records]
    chosen = pm.score(prompts, [r["chosen"][0]["content"] for r in records])
    rejected = pm.score(prompts, [r["rejected"][0]["content"] for r in records])
    return [c - r for c, r in zip(chosen, rejected)]


def test_pm_learns_a_marker_and_half_labels_teach_nothing(tiny_llama_dir, tmp_path):
    from cai.train.pm import PreferenceModel, is_pm_folder

    hard = _train(tiny_llama_dir, tmp_path, "hard", p=1.0)
    assert hard["status"] == "done" and hard["final_metrics"]["global_step"] == 30
    assert hard["evaluation"]["heldout-ai"]["accuracy"] >= 0.95
    assert is_pm_folder(tmp_path / "hard") and not is_pm_folder(tiny_llama_dir)

    fresh = _marker_pairs(40, seed=2, p=1.0)  # prompts and answers never seen in training
    hard_margins = _margins(PreferenceModel.load(tmp_path / "hard"), fresh)
    assert sum(m > 0 for m in hard_margins) / len(fresh) >= 0.95

    half = _train(tiny_llama_dir, tmp_path, "half", p=0.5)
    assert "heldout-ai" not in half["evaluation"]  # an undecided label has no right answer to score
    half_margins = _margins(PreferenceModel.load(tmp_path / "half"), fresh)
    mean_hard = sum(hard_margins) / len(fresh)
    mean_half = sum(half_margins) / len(fresh)
    # p = 0.5 pulls every margin towards 0: the marker does not separate the scores.
    assert abs(mean_half) < 0.1 * mean_hard, (mean_half, mean_hard)

    run = json.loads((tmp_path / "hard" / "cai_run.json").read_text())
    assert run["kind"] == "cai-train-run" and run["command"] == "reward" and run["data"][0]["sha256"]
    rows = [json.loads(x) for x in (tmp_path / "hard" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [5, 10, 15, 20, 25, 30]
    # --eval-split: the held-out pairs' loss after every epoch (16 steps of 8 of the 128 training pairs),
    # and at the last step, where --max-steps ends the second epoch early.
    evals = [r for r in rows if "eval_loss" in r]
    assert [r["step"] for r in evals] == [16, 30], evals
    assert evals[-1]["eval_loss"] < 0.69 * 0.5 and evals[-1]["eval_accuracy"] >= 0.95, evals
    assert (tmp_path / "hard" / "curves" / "loss.png").is_file()
    # A finished run keeps no checkpoints (the full PM's is model + optimiser state: 1.6 GB at 135M).
    assert not (tmp_path / "hard" / "checkpoints").exists()


def test_score_critique_rounds_and_file_kinds():
    from cai.train.pm_score import round_answers, score_file

    class LengthPM:  # a stand-in PM: longer answers score higher
        def score(self, prompts, completions):
            assert all(isinstance(p, list) for p in prompts)
            return [float(len(c)) for c in completions]

    recs = [{"id": "a", "prompt": [{"role": "user", "content": "q"}], "initial": "x",
             "steps": [{"revision": "xxx"}, {"revision": "xxxxx"}], "final": "xxxxx"},
            {"id": "b", "prompt": [{"role": "user", "content": "q"}], "initial": "yy",
             "steps": [{"revision": ""}, {"stopped": True, "revision": None}], "final": "yy"},
            {"id": "c", "prompt": [{"role": "user", "content": "q"}], "initial": "z",
             "steps": [{"revision": "zzz"}], "final": "zzz"}]
    assert round_answers(recs[1]) == ["yy", "yy", "yy"]
    summary, rows = score_file(LengthPM(), recs)
    assert summary["kind"] == "critique"
    assert [r["mean"] for r in summary["rounds"]] == pytest.approx([4 / 3, 8 / 3, 10 / 3])
    assert summary["rounds"][2]["change"]["mean"] == pytest.approx(2.0)
    assert rows[2]["scores"] == [1.0, 3.0, 3.0]  # an early-stopped record keeps its last answer
    pairs, _ = score_file(LengthPM(), [{"prompt": "q", "chosen": "long answer", "rejected": "no"}])
    assert pairs["kind"] == "preference" and pairs["agreement"]["mean"] == 1.0
    answers, _ = score_file(LengthPM(), [{"messages": [{"role": "user", "content": "q"},
                                                       {"role": "assistant", "content": "abc"}]}])
    assert answers["score"]["mean"] == 3.0


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    from cai.cli import main

    bad = _write(tmp_path / "bad.jsonl", [{"prompt": "q", "completion": "a"}])
    assert main(["reward", "-m", "x", "--data", bad, "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.jsonl:1: a preference record needs chosen and rejected" in err, err
    assert main(["reward", "train", "-m", "x", "--data", str(tmp_path / "missing.jsonl"), "-o", "o"]) == 2
    assert "missing.jsonl: file not found" in capsys.readouterr().err
    assert main(["reward", "score", "-m", str(tmp_path), "--data", bad]) == 2
    assert "not a preference model folder" in capsys.readouterr().err


def test_lora_keep_adapter_folder_loads_as_a_pm(tiny_llama_dir, tmp_path):
    from cai.train.pm import PreferenceModel, is_pm_folder
    from cai.train.reward import RewardTrainConfig, run_reward

    data = _write(tmp_path / "p.jsonl", _marker_pairs(8, seed=4, p=1.0))
    out = tmp_path / "adapter"
    run_reward(RewardTrainConfig(model=tiny_llama_dir, data=(data,), output=str(out), max_steps=2, batch_size=4,
                                 max_length=64, lora=True, keep_adapter=True, lora_r=4, lora_alpha=8, lr=1e-3,
                                 eval_split=0.0, human_eval=(), bf16=False))
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    assert is_pm_folder(out)
    scores = PreferenceModel.load(out).score([[{"role": "user", "content": "hi"}]] * 2, ["a banana", "b"])
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores)


def test_pm_scores_at_the_precision_it_trains_in(tiny_llama_dir, tmp_path, monkeypatch):
    """A PM folder scores under bf16 autocast where `cai reward` trains in bf16 (its --bf16 flag,
    else the machine's default), in fp32 otherwise; an explicit dtype loads weights in it instead."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from cai.train.pm import PreferenceModel

    pm_dir = tmp_path / "pm"
    AutoModelForSequenceClassification.from_pretrained(tiny_llama_dir, num_labels=1).save_pretrained(pm_dir)
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(pm_dir)

    def trained_with(bf16):
        (pm_dir / "cai_run.json").write_text(json.dumps({"command": "reward", "config": {"bf16": bf16}}))

    monkeypatch.setattr("cai.train.model_io.use_bf16", lambda flag, device=None: True if flag is None else flag)
    trained_with(None)
    auto = PreferenceModel.load(pm_dir)
    assert auto.bf16_autocast and next(auto.model.parameters()).dtype == torch.float32
    trained_with(False)
    fp32 = PreferenceModel.load(pm_dir)
    assert not fp32.bf16_autocast
    assert not PreferenceModel.load(pm_dir, dtype="bfloat16").bf16_autocast

    seen = []
    auto.model.register_forward_hook(lambda m, i, out: seen.append(out.logits.dtype))
    prompts, answers = [[{"role": "user", "content": "hi"}]] * 3, ["a banana", "b", "a longer answer than the others"]
    got, want = auto.score(prompts, answers), fp32.score(prompts, answers)
    assert seen and all(d == torch.bfloat16 for d in seen)  # the forward really ran under autocast
    assert all(isinstance(s, float) for s in got)
    assert got == pytest.approx(want, abs=0.05 * max(1.0, max(abs(w) for w in want)))
    # Under autocast the linear layers hold the bf16 weights autocast would cast them to for each batch;
    # norms and embeddings stay fp32: the scores of fp32 weights under the same autocast, exactly.
    assert {m.weight.dtype for m in auto.model.modules() if isinstance(m, torch.nn.Linear)} == {torch.bfloat16}
    assert auto.model.get_input_embeddings().weight.dtype == torch.float32
    assert {p.dtype for n, p in auto.model.named_parameters() if "norm" in n} == {torch.float32}
    as_loaded = PreferenceModel(fp32.model, fp32.tokenizer, bf16_autocast=True)
    assert got == as_loaded.score(prompts, answers)
    assert auto.score_pairs(prompts, answers, answers[::-1]) == as_loaded.score_pairs(prompts, answers, answers[::-1])


def test_a_pm_kept_on_the_cpu_of_a_gpu_machine_takes_the_cpus_precision_rule(tiny_llama_dir, tmp_path, monkeypatch):
    """The GPU's bf16 support says nothing about scoring on the CPU: there the measured CPU rule decides."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from cai.train.pm import PreferenceModel

    pm_dir = tmp_path / "pm"
    AutoModelForSequenceClassification.from_pretrained(tiny_llama_dir, num_labels=1).save_pretrained(pm_dir)
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(pm_dir)
    (pm_dir / "cai_run.json").write_text(json.dumps({"command": "reward", "config": {"bf16": None}}))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr("cai.precision.cpu_prefers_bf16", lambda *a, **k: False)
    assert not PreferenceModel.load(pm_dir, device="cpu").bf16_autocast
    monkeypatch.setattr("cai.precision.cpu_prefers_bf16", lambda *a, **k: True)
    assert PreferenceModel.load(pm_dir, device="cpu").bf16_autocast
