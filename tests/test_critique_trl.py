"""A critique file trains as it is: ``datasets`` loads it, and TRL's SFTTrainer and DPOTrainer each
prepare it and take one step on the tiny random Llama. One file serves both trainers, though it
carries ``messages``, ``prompt``/``completion`` and ``prompt``/``chosen``/``rejected`` at once."""

from __future__ import annotations

import json

import pytest

from cai.backends.mock import MockBackend
from cai.constitution import Constitution, Principle
from cai.critique import critique_revise

pytest.importorskip("trl")


@pytest.fixture(scope="module")
def critique_file(tmp_path_factory):
    c = Constitution(name="t", version="1", description="d", principles=(
        Principle("harm", "CRIT: how is it harmful?", "REV: rewrite it."),))

    def reply(conv):
        last = conv[-1]["content"]
        if last.startswith("CRIT"):
            return "It gives dangerous detail."
        if last.startswith("REV"):
            return "I won't help with that, but I can explain the safety rules."
        return "Here is how to do the dangerous thing."

    recs = critique_revise([f"request {i}" for i in range(4)], policy=MockBackend(responses=reply), constitution=c,
                           rounds=2, early_stop=True, early_stop_threshold=0.99)
    path = tmp_path_factory.mktemp("trl") / "sl.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return str(path)


def load(path):
    from datasets import load_dataset

    return load_dataset("json", data_files=path, split="train")


def test_datasets_reads_the_file(critique_file):
    ds = load(critique_file)
    assert ds.num_rows == 4
    for col in ("id", "prompt", "messages", "completion", "chosen", "rejected", "steps", "provenance"):
        assert col in ds.column_names
    row = ds[0]
    assert row["messages"][-1] == {"role": "assistant", "content": row["final"]}
    assert row["steps"][0]["principle_id"] == "harm"


def _model(path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path)


def test_sft_trainer_takes_the_file_and_trains_on_the_revision(critique_file, tiny_llama_dir, tmp_path):
    from trl import SFTConfig, SFTTrainer

    model, tok = _model(tiny_llama_dir)
    args = SFTConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, report_to=[],
                     save_strategy="no", use_cpu=True, max_length=256, dataset_num_proc=None)
    trainer = SFTTrainer(model=model, args=args, train_dataset=load(critique_file), processing_class=tok)
    row = trainer.train_dataset[0]
    # prompt + completion: the loss covers the final revision, not the prompt
    learned = tok.decode([t for t, label in zip(row["input_ids"], row["labels"]) if label != -100])
    assert "I won't help with that" in learned and "request" not in learned
    assert trainer.train().training_loss > 0


def test_dpo_trainer_takes_the_file(critique_file, tiny_llama_dir, tmp_path):
    from trl import DPOConfig, DPOTrainer

    model, tok = _model(tiny_llama_dir)
    args = DPOConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, report_to=[],
                     save_strategy="no", use_cpu=True, max_length=256)
    trainer = DPOTrainer(model=model, args=args, train_dataset=load(critique_file), processing_class=tok)
    row = trainer.train_dataset[0]
    assert "I won't help with that" in tok.decode(row["chosen_ids"])
    assert "dangerous thing" in tok.decode(row["rejected_ids"])
    assert trainer.train().training_loss > 0
