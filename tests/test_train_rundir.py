"""A trainer's output folder knows its run: flags that only change logging, saving or the
evaluation after training resume it; anything that changes what is trained is another run."""

from __future__ import annotations

import pytest

from cai.errors import CAIError
from cai.train.rundir import RunDir

DATA = [{"path": "prefs.jsonl", "sha256": "ab" * 32, "weight": 1.0}]
CONFIG = {"output": "pm", "lr": 1e-5, "eval_split": 0.1, "human_eval": ["hh-rlhf", "hhh"], "human_limit": 500,
          "save_steps": 50, "logging_steps": 1}


def _run(path, **changes):
    return RunDir(path, command="reward", config={**CONFIG, **changes}, data=DATA, base_model="base")


def test_eval_and_logging_flags_resume_the_same_run(tmp_path):
    _run(tmp_path).start(None)
    for change in ({"human_eval": []}, {"human_limit": 50}, {"save_steps": 1, "logging_steps": 5}):
        assert _run(tmp_path, **change).check() == "resume", change


@pytest.mark.parametrize("change,flag", [({"lr": 2e-5}, "--lr"), ({"eval_split": 0.2}, "--eval-split")])
def test_a_flag_that_changes_training_is_another_run(tmp_path, change, flag):
    _run(tmp_path).start(None)
    with pytest.raises(CAIError, match=f"holds another run .*differs in {flag}"):
        _run(tmp_path, **change).check()


def test_ppo_kl_warn_resumes(tmp_path):
    def ppo(**changes):
        return RunDir(tmp_path, command="ppo", config={"output": "x", "lr": 1e-5, "kl_warn": None, **changes},
                      data=DATA, base_model="base")

    ppo().start(None)
    assert ppo(kl_warn=5.0).check() == "resume"
    with pytest.raises(CAIError, match="differs in --lr"):
        ppo(lr=1.0).check()


def test_another_ranks_half_written_record_is_not_a_foreign_file(tmp_path):
    # Under accelerate launch, rank 1 checks while rank 0 writes cai_run.json through a temp file.
    (tmp_path / ".cai_run.json.4242.tmp").write_text("{")
    assert _run(tmp_path).check() == "new"
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CAIError, match="holds no cai run"):
        _run(tmp_path).check()


def test_keep_checkpoints_resumes_the_same_run(tmp_path):
    _run(tmp_path).start(None)
    assert _run(tmp_path, keep_checkpoints=True).check() == "resume"


@pytest.mark.parametrize("keep", [False, True])
def test_a_finished_run_deletes_its_checkpoints_unless_told_to_keep_them(tmp_path, keep):
    run = _run(tmp_path, keep_checkpoints=keep)
    run.start(None)
    (run.checkpoints / "checkpoint-3").mkdir(parents=True)
    (run.checkpoints / "checkpoint-3" / "trainer_state.json").write_text("{}")
    assert run.last_checkpoint()  # while the run is not done, it resumes from there
    run.finish({"loss": 0.5})
    assert run.checkpoints.exists() is keep
    assert _run(tmp_path).check() == "done"
