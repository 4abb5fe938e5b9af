"""``cai critique`` end to end on the mock backend: the batch form with a YAML run file, the
single-prompt form, and a real kill -9 in the middle of a run followed by a resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cai.cli import main
from cai.store import RecordStore, read_records

CONSTITUTION = {
    "name": "tiny-cli", "version": "1", "description": "for CLI tests",
    "principles": [
        {"id": "harm", "critique": "CRIT-harm: how is it harmful?", "revision": "REV-harm: make it harmless."},
        {"id": "kind", "critique": "CRIT-kind: how is it unkind?", "revision": "REV-kind: make it kind."},
    ],
}
SCRIPT = {"generate": [
    {"match": "^CRIT-", "reply": "Critique: the answer gives dangerous detail."},
    {"match": "^REV-", "reply": "Revision: I can't help with that, but here is a safe alternative."},
    {"reply": "Sure, here is exactly how to do it."},
]}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(CONSTITUTION))
    (tmp_path / "mock.yaml").write_text(yaml.safe_dump(SCRIPT))
    (tmp_path / "prompts.jsonl").write_text(
        "".join(json.dumps({"id": f"p{i:03d}", "prompt": f"harmful request {i}"}) + "\n" for i in range(60)))
    return {k: str(tmp_path / v) for k, v in
            {"constitution": "c.yaml", "script": "mock.yaml", "prompts": "prompts.jsonl", "dir": "."}.items()}


def test_batch_run_from_a_yaml_run_file_with_flag_overrides(files, tmp_path, capsys):
    out = tmp_path / "sl.jsonl"
    run = {"model": f"mock:{files['script']}", "constitution": files["constitution"], "prompts": files["prompts"],
           "output": str(out), "rounds": 3, "limit": 4, "principle_selection": "round-robin"}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    assert main(["critique", "--config", str(tmp_path / "run.yaml"), "--rounds", "2", "--no-progress"]) == 0
    recs = read_records(out)
    assert [r["id"] for r in recs] == ["p000", "p001", "p002", "p003"]
    assert all(len(r["steps"]) == 2 for r in recs)  # the flag beat the file
    assert [s["principle_id"] for s in recs[1]["steps"]] == ["kind", "harm"]
    assert recs[0]["final"] == "I can't help with that, but here is a safe alternative."
    assert recs[0]["initial"] == "Sure, here is exactly how to do it."
    assert "wrote 4 new records" in capsys.readouterr().err


def test_config_errors_are_one_line(files, tmp_path, capsys):
    (tmp_path / "run.yaml").write_text('modle: "mock:"\n')
    assert main(["critique", "--config", str(tmp_path / "run.yaml")]) == 2
    err = capsys.readouterr().err
    assert "unknown option 'modle'" in err and "Traceback" not in err
    assert main(["critique", "-m", "mock:", "-c", files["constitution"], "--prompts", files["prompts"]]) == 2
    assert "-o OUT.jsonl" in capsys.readouterr().err


def test_single_prompt_prints_the_chain(files, capsys):
    code = main(["critique", "-m", f"mock:{files['script']}", "-c", files["constitution"], "--rounds", "2",
                 "--principle-selection", "list", "--principles", "kind", "harm", "--prompt", "How do I pick a lock?"])
    assert code == 0
    out = capsys.readouterr().out
    for text in ("How do I pick a lock?", "Sure, here is exactly how to do it.", "round 1 · principle kind",
                 "round 2 · principle harm", "the answer gives dangerous detail.", "final answer"):
        assert text in out
    assert out.index("round 1 · principle kind") < out.index("round 2 · principle harm") < out.index("final answer")


def test_kill_9_mid_run_then_resume_loses_nothing_and_duplicates_nothing(files, tmp_path, slow_mock_env):
    out = tmp_path / "killed.jsonl"
    cmd = [sys.executable, "-m", "cai", "critique", "-m", f"mock:{files['script']}", "-c", files["constitution"],
           "--prompts", files["prompts"], "-o", str(out), "--batch-size", "5", "--rounds", "1", "--no-progress"]
    env = slow_mock_env(0.25)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            if out.exists() and out.read_bytes().count(b"\n") >= 5:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1].decode()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    done = len(RecordStore(out))
    assert 5 <= done < 60 and done % 5 == 0  # whole batches only
    # A crash in the middle of a write leaves a torn last line: make one the way it happens, by
    # killing a resumed run half-way through its first write, to prove the next resume repairs it.
    # (A torn line written by hand here raced the kill above: when that kill fell between a batch's
    # write and its commit, the hand-made tear was blamed on that whole batch, which was then cut.)
    torn = subprocess.run(cmd, env={**slow_mock_env(0), "CAI_FAULT": "mid_write:1"},
                          capture_output=True, text=True, timeout=120)
    assert torn.returncode == -signal.SIGKILL, torn.stderr
    assert not out.read_bytes().endswith(b"\n")

    resumed = subprocess.run(cmd, env=slow_mock_env(0), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert f"wrote {60 - done} new records" in resumed.stderr
    recs = read_records(out)  # every line parses: nothing torn is left
    ids = [r["id"] for r in recs]
    assert len(recs) == 60 and len(set(ids)) == 60
    assert set(ids) == {f"p{i:03d}" for i in range(60)}
