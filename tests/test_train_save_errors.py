"""Issue 17, section 4: a trainer whose save fails (a full disk, a folder it may not write) stops
with one line naming the folder and the cause, keeps its last good checkpoint, and the same
command resumes from it once the cause is fixed. Every trainer (sft, reward, dpo, rloo, ppo), run
through the CLI entry on a tiny model, with the save made to fail the way the libraries fail:
``OSError(ENOSPC)``, safetensors' ``SafetensorError`` and torch's ``RuntimeError`` from its stream
writer (the two tracebacks of the issue), and ``EACCES``."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from cai.cli import main

THIS = Path(__file__).resolve()
TRAIN = ["--max-steps", "2", "--save-steps", "1", "--batch-size", "2", "--max-length", "64", "--no-bf16",
         "--no-progress", "--lr", "1e-4"]
PROMPTS = "".join(json.dumps({"id": f"p{i}", "prompt": f"question {i}"}) + "\n" for i in range(4))
SAFETENSORS_FULL = ('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on '
                    'device" })')
TORCH_WRITER = ("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file data/0: "
                "file write failed")


def length_reward(prompts, completions):
    return [1.0 / (1 + len(c)) for c in completions]


def argv(trainer: str, d: Path, model: str) -> list[str]:
    out = ["-o", str(d / "run")]
    if trainer in ("sft", "dpo"):
        return [trainer, "-m", model, "--data", str(d / "sl.jsonl"), *out, *TRAIN]
    if trainer == "reward":
        return ["reward", "-m", model, "--data", str(d / "sl.jsonl"), *out, "--human-eval", "none", *TRAIN]
    rl = ["--policy", model, "--reward", f"{THIS}:length_reward", "--prompts", str(d / "p.jsonl"), "--max-tokens", "4"]
    if trainer == "rloo":
        kept = [a for a in TRAIN[:-2] if a not in ("--max-length", "64")]  # rloo has none: it cuts no prompt
        return ["rloo", *rl, *out, *kept, "--samples-per-prompt", "2", "--lr", "1e-4"]
    return ["ppo", *rl, *out, "--ppo-epochs", "1", *TRAIN]


def inputs(d: Path) -> None:
    from test_train_sft import write_sl

    write_sl(d / "sl.jsonl", 8)
    (d / "p.jsonl").write_text(PROMPTS)


def make_error(kind: str) -> BaseException:
    if kind == "enospc":
        return OSError(errno.ENOSPC, "No space left on device")
    if kind == "eacces":
        return PermissionError(errno.EACCES, "Permission denied")
    if kind == "safetensors":
        from safetensors import SafetensorError

        return SafetensorError(SAFETENSORS_FULL)
    return RuntimeError(TORCH_WRITER)


def fail_save(monkeypatch, at: int, kind: str) -> dict:
    """Every model save goes through ``save_pretrained``: the ``at``-th call writes half a weights
    file into its folder, then fails as a full disk (or a locked folder) makes it fail."""
    import transformers.modeling_utils as mu

    real = mu.PreTrainedModel.save_pretrained
    calls = {"n": 0}

    def save(self, folder, *a, **k):
        calls["n"] += 1
        if calls["n"] == at:
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / "model.safetensors").write_bytes(b"\0" * 100)
            raise make_error(kind)
        return real(self, folder, *a, **k)

    monkeypatch.setattr(mu.PreTrainedModel, "save_pretrained", save)
    if kind == "torch":  # torch's message names no cause; the free space does
        import shutil

        monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 30, 10 << 30, 1 << 20))
    return calls


def one_error_line(rc: int, err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("cai: error:")]
    assert rc != 0, err[-2000:]
    assert "Traceback" not in err, err[-3000:]
    assert len(lines) == 1, err[-2000:]
    return lines[0]


CAUSE = {"enospc": "disk is full", "safetensors": "disk is full", "torch": "disk is full", "eacces": "not writable"}


@pytest.mark.parametrize("trainer,kind", [("sft", "enospc"), ("reward", "safetensors"), ("dpo", "torch"),
                                          ("rloo", "eacces"), ("ppo", "enospc")])
def test_a_failed_checkpoint_save_is_one_line_and_keeps_the_last_good_one(trainer, kind, tmp_path, tiny_llama_dir,
                                                                          capsys, monkeypatch):
    inputs(tmp_path)
    calls = fail_save(monkeypatch, 2, kind)  # the checkpoint of step 2; step 1's is whole
    line = one_error_line(main(argv(trainer, tmp_path, tiny_llama_dir)), capsys.readouterr().err)
    assert calls["n"] == 2
    run = tmp_path / "run"
    assert str(run) in line and CAUSE[kind] in line, line
    good = "step-1" if trainer == "ppo" else "checkpoint-1"
    assert good in line and "resume" in line, line
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir() if "step-" in p.name or "checkpoint-" in p.name)
    assert ckpts == [good], ckpts  # the half-written one is gone, the good one kept
    assert json.loads((run / "cai_run.json").read_text())["status"] == "running"


def test_a_failed_final_save_keeps_the_checkpoint_and_the_rerun_finishes(tmp_path, tiny_llama_dir, capsys,
                                                                          monkeypatch):
    inputs(tmp_path)
    fail_save(monkeypatch, 3, "safetensors")  # checkpoints 1 and 2, then the final model folder
    line = one_error_line(main(argv("sft", tmp_path, tiny_llama_dir)), capsys.readouterr().err)
    run = tmp_path / "run"
    assert str(run) in line and "disk is full" in line and "checkpoint-2" in line, line
    assert not (run / "model.safetensors").exists()  # no half-written model left to be loaded
    assert (run / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()
    monkeypatch.undo()
    assert main(argv("sft", tmp_path, tiny_llama_dir)) == 0
    record = json.loads((run / "cai_run.json").read_text())
    assert record["status"] == "done" and record["resumed_from"][-1].endswith("checkpoint-2")
    assert (run / "model.safetensors").is_file()


def test_other_errors_in_training_keep_their_traceback(tmp_path, tiny_llama_dir, monkeypatch):
    """Only save failures become one line: a bug elsewhere still shows where it is."""
    from cai.train.saving import save_failure

    assert save_failure(RuntimeError("CUDA out of memory"), tmp_path) is None
    assert save_failure(ValueError("bad"), tmp_path) is None
    assert save_failure(ConnectionError(errno.ECONNREFUSED, "refused"), tmp_path) is None
    assert save_failure(OSError(errno.ENOSPC, "full"), tmp_path) == "the disk is full"
    assert "not writable" in save_failure(OSError(errno.EROFS, "read-only"), tmp_path)
    assert os.path.isdir(tmp_path)
