"""cai sft on a tiny random Llama: the loss covers the answer only, refusals, and two processes
under accelerate launch (kill -9 resume: a case in tests/test_faults.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cai.errors import CAIError

ROOT = Path(__file__).resolve().parents[1]


def write_sl(path: Path, n: int = 24) -> str:
    with open(path, "w") as f:
        for i in range(n):
            prompt = [{"role": "user", "content": f"Question {i}: how do I do thing {i}?"}]
            final = [{"role": "assistant", "content": f"I can't help with thing {i}; here is a safe alternative."}]
            f.write(json.dumps({"id": str(i), "prompt": prompt, "completion": final, "messages": prompt + final,
                                "chosen": final, "rejected": [{"role": "assistant", "content": "Sure."}]}) + "\n")
    return str(path)


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cai", *args], env=cli_env(), capture_output=True, text=True,
                          timeout=timeout)


def test_labels_mask_the_prompt(tmp_path, tiny_llama_dir):
    """Only the final answer is trained on: every prompt token (chat template included) has label -100."""
    from transformers import AutoTokenizer

    from cai.train.data import load_mix
    from cai.train.rundir import RunDir
    from cai.train.sft import SFTRunConfig, build_sft_trainer

    data = write_sl(tmp_path / "sl.jsonl", 4)
    config = SFTRunConfig(model=tiny_llama_dir, data=[data], output=str(tmp_path / "out"), batch_size=4)
    examples, _ = load_mix(config.data, "sft", seed=0)
    run = RunDir(tmp_path / "out", command="sft", config={}, data=[], base_model=tiny_llama_dir)
    trainer = build_sft_trainer(config, examples, run, tiny_llama_dir, show_progress=False)
    batch = next(iter(trainer.get_train_dataloader()))
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        ids, labels = ids[mask.bool()].tolist(), labels[mask.bool()].tolist()
        text = tok.decode(ids)
        prompt = next(ex["prompt"] for ex in examples if ex["prompt"][0]["content"] in text)
        n_prompt = len(tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)["input_ids"])
        assert all(label == -100 for label in labels[:n_prompt]), "a prompt token is trained on"
        assert labels[n_prompt:] == ids[n_prompt:], "an answer token is not trained on"
        assert "I can't help" in tok.decode(ids[n_prompt:])


def test_refusals_before_any_model_work(tmp_path, tiny_llama_dir):
    from cai.train.sft import SFTRunConfig, run_sft

    data = write_sl(tmp_path / "sl.jsonl", 2)
    stranger = tmp_path / "notes"
    stranger.mkdir()
    (stranger / "todo.txt").write_text("mine")
    with pytest.raises(CAIError, match="holds no cai run"):
        run_sft(SFTRunConfig(model=tiny_llama_dir, data=[data], output=str(stranger)))
    with pytest.raises(CAIError, match="no output folder"):
        run_sft(SFTRunConfig(model=tiny_llama_dir, data=[data]))
    with pytest.raises(ValueError, match="--keep-adapter needs --lora"):
        SFTRunConfig(keep_adapter=True)
    result = run_cli("sft", "-m", tiny_llama_dir, "--data", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "x"))
    assert result.returncode == 2 and "missing.jsonl: file not found" in result.stderr
    assert not (tmp_path / "x").exists()


def test_two_processes_under_accelerate_launch(tmp_path, tiny_llama_dir):
    """The same command goes to DDP over gloo on a CPU, as it would to several GPUs."""
    data = write_sl(tmp_path / "sl.jsonl", 8)
    out = tmp_path / "ddp"
    accelerate = Path(sys.executable).parent / "accelerate"
    cmd = [str(accelerate), "launch", "--config_file", str(ROOT / "examples/accelerate/cpu-2proc.yaml"),
           "--main_process_port", str(29500 + os.getpid() % 1000), "-m", "cai", "sft", "-m", tiny_llama_dir,
           "--data", data, "-o", str(out), "--max-steps", "2", "--batch-size", "2", "--max-length", "128",
           "--no-progress"]
    result = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((out / "cai_run.json").read_text())
    assert record["status"] == "done" and record["final_metrics"]["global_step"] == 2
    # Two ranks of batch 2 cover 4 of the 8 examples per step: half an epoch after one step.
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["epoch"] == pytest.approx(0.5)
    assert (out / "model.safetensors").is_file()


def test_eval_split_holds_examples_out_and_logs_their_loss_each_epoch(tmp_path, tiny_llama_dir):
    """--eval-split: the held-out examples are never trained on, and eval_loss is logged once per epoch."""
    from cai.train.sft import SFTRunConfig, run_sft, split_examples

    examples = [{"prompt": [{"role": "user", "content": str(i)}]} for i in range(20)]
    train, held = split_examples(examples, 0.25, seed=0)
    assert len(held) == 5 and len(train) == 15
    assert not {e["prompt"][0]["content"] for e in held} & {e["prompt"][0]["content"] for e in train}
    assert split_examples(examples, 0.25, seed=0) == (train, held)  # seeded
    with pytest.raises(CAIError, match="leaves no training data"):
        split_examples(examples[:1], 0.5, seed=0)

    out = tmp_path / "out"
    summary = run_sft(SFTRunConfig(model=tiny_llama_dir, data=[write_sl(tmp_path / "sl.jsonl", 16)], output=str(out),
                                   batch_size=4, epochs=2, eval_split=0.25), show_progress=False)
    assert summary["examples"] == 12 and summary["held_out"] == 4
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in logs if "eval_loss" in r]
    assert len(evals) == 2, evals  # one per epoch
