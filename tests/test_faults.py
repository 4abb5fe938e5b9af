"""kill -9 at several points of every resumable command, then resume: the records must equal an
uninterrupted run's, none lost and none duplicated. A new stage adds one line to CASES."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from faults import PROMPTS, Case, assert_same_records, kill_and_resume, normalised, run_cai, trained, workdir


def _eval_result_matches(ref: Path, got: Path) -> None:
    a, b = (json.loads((d / "res.json").read_text()) for d in (ref, got))
    assert a["overall"] == b["overall"] and [i["id"] for i in a["items"]] == [i["id"] for i in b["items"]]


CASES = [
    Case("generate", lambda d: ["generate", "-m", "mock:", "-i", str(d / "prompts.jsonl"), "-o", str(d / "out.jsonl"),
                                "--batch-size", "2", "--no-progress"], ("out.jsonl",)),
    Case("critique", lambda d: ["critique", "-m", "mock:", "-c", "default", "--prompts", str(d / "prompts.jsonl"),
                                "-o", str(d / "out.jsonl"), "--batch-size", "2", "--rounds", "2", "--no-progress"],
         ("out.jsonl",)),
    Case("label", lambda d: ["label", "--policy", "mock:", "-c", "default", "--prompts", str(d / "prompts.jsonl"),
                             "-o", str(d / "out.jsonl"), "-k", "3", "--batch-size", "2", "--no-progress"],
         ("out.jsonl", "out.skipped.jsonl")),
    Case("eval-labeler", lambda d: ["eval", "labeler", "-m", "mock:", "--data", "hhh", "--limit", "7", "--batch-size",
                                    "2", "--bootstrap", "50", "-o", str(d / "res.json"), "--no-progress"],
         ("res.examples.jsonl",), extra_check=_eval_result_matches),
]
def _rerun_says(argv: list[str], needle: str) -> None:
    import contextlib
    import io

    from cai.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        main(argv)
    assert needle in err.getvalue() and len(err.getvalue().strip().splitlines()) == 1, err.getvalue()


def _trained_then_rerun(name: str, argv, differs: str):
    """After the resumed run: rerunning it trains nothing, and another setting is refused in one line."""
    done = trained(4)

    def check(ref, work: Path) -> None:
        done(ref, work)
        args = argv(work)
        if name == "sft":
            _rerun_says(args, "already holds this finished run")
        i = args.index(differs)
        _rerun_says([*args[:i + 1], "0.5", *args[i + 2:]], f"differs in {differs}")

    return check


# Trainers on the tiny model: 4 steps, a checkpoint at each; killed once checkpoint-2 is complete,
# the rerun resumes from it and ends at step 4 (issue 9: sft, reward and ppo).
TRAIN = ["--max-steps", "4", "--save-steps", "1", "--batch-size", "2", "--max-length", "64", "--no-bf16",
         "--no-progress"]
CHECKPOINT = ("after_checkpoint:2",)
SFT = lambda d: ["sft", "-m", str(d / "model"), "--data", str(d / "sl.jsonl"), "-o", str(d / "run"), "--lr", "1e-4",
                 *TRAIN]  # noqa: E731
REWARD_PM = lambda d: ["reward", "-m", str(d / "model"), "--data", str(d / "sl.jsonl"), "-o", str(d / "run"),  # noqa: E731
                       "--lr", "1e-4", "--human-eval", "none", *TRAIN]
CASES += [
    Case("sft", SFT, (), points=CHECKPOINT, reference=False, model=True,
         extra_check=_trained_then_rerun("sft", SFT, "--lr")),
    Case("reward", REWARD_PM, (), points=CHECKPOINT, reference=False, model=True,
         extra_check=_trained_then_rerun("reward", REWARD_PM, "--lr")),
    Case("ppo", lambda d: ["ppo", "--policy", str(d / "model"), "--reward", f"{d / 'reward.py'}:shortness", "--prompts",
                           str(d / "prompts.jsonl"), "-o", str(d / "run"), "--max-tokens", "4", "--ppo-epochs", "1",
                           *TRAIN],
         (), points=CHECKPOINT, reference=False, model=True, extra_check=trained(4)),
    # cai run runs each step in a child process: the kill takes both, as a kill -9 of the session would.
    Case("run", lambda d: ["run", str(d / "run.yaml"), "-o", str(d / "out")],
         ("out/critique-*/critique.jsonl", "out/critique-*/critique.dropped.jsonl", "out/label-*/prefs.jsonl"),
         points=("mid_write:2",), group=True),
    # issue 11: `cai run` killed in the middle of its PPO step (runner and step process together, once
    # PPO's step-2 checkpoint is complete) resumes that step from the checkpoint and finishes it.
    Case("run-ppo", lambda d: ["run", str(d / "run-ppo.yaml"), "-o", str(d / "out")], (),
         points=CHECKPOINT, reference=False, model=True, group=True, extra_check=trained(4, "out/ppo-*/model")),
]
# Batches of 2 over 7 items: 4 writes. Kill in the first batch's write, after work on the second is
# done but before it is written, and after the third is durable.
POINTS = ["mid_write:1", "before_write:2", "after_write:3"]
RUN_SPEC = {"model": "mock:", "constitution": "default", "stages": ["critique", "label"],
            "critique": {"prompts": "prompts.jsonl", "rounds": 1, "batch_size": 2},
            "label": {"prompts": "prompts.jsonl", "limit": 4, "batch_size": 2}}
RUN_PPO_SPEC = {"model": "model", "constitution": "default", "stages": ["ppo"],
                "ppo": {"reward": "reward.py:shortness", "prompts": "prompts.jsonl", "max_tokens": 4, "ppo_epochs": 1,
                        "max_steps": 4, "save_steps": 1, "batch_size": 2, "max_length": 64, "bf16": False}}
REWARD = "def shortness(prompts, completions):\n    return [1.0 / (1 + len(c)) for c in completions]\n"


def _prepare(d: Path, case: Case, request) -> Path:
    import yaml

    workdir(d)
    (d / "run.yaml").write_text(yaml.safe_dump(RUN_SPEC))
    (d / "run-ppo.yaml").write_text(yaml.safe_dump(RUN_PPO_SPEC))
    (d / "reward.py").write_text(REWARD)
    if case.model and not (d / "model").exists():
        (d / "model").symlink_to(request.getfixturevalue("tiny_llama_dir"))
    return d


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict[str, Path]:
    refs = {}
    for case in CASES:
        if not case.reference:
            continue
        d = workdir(tmp_path_factory.mktemp(f"ref-{case.name}"))
        (d / "run.yaml").write_text(__import__("yaml").safe_dump(RUN_SPEC))
        done = run_cai(case.argv(d), d)
        assert done.returncode == 0, done.stderr
        refs[case.name] = d
    return refs


@pytest.mark.parametrize("case,point", [(c, p) for c in CASES for p in (c.points or POINTS)],
                         ids=[f"{c.name}-{p}" for c in CASES for p in (c.points or POINTS)])
def test_kill_and_resume(case: Case, point: str, request, tmp_path):
    ref = request.getfixturevalue("references")[case.name] if case.reference else None
    kill_and_resume(case, point, ref, _prepare(tmp_path / "run", case, request))


def test_rerun_of_a_finished_run_writes_nothing(references, tmp_path):
    case = CASES[0]
    d = workdir(tmp_path / "run")
    assert run_cai(case.argv(d), d).returncode == 0
    before = (d / "out.jsonl").read_bytes()
    again = run_cai(case.argv(d), d)
    assert again.returncode == 0 and "wrote 0 new records" in again.stderr
    assert (d / "out.jsonl").read_bytes() == before
    assert_same_records(references["generate"], d, case.outputs)


def test_harness_catches_a_lost_record(references, tmp_path):
    """The comparison itself must fail when a record is missing or doubled."""
    d = workdir(tmp_path / "run")
    lines = (references["generate"] / "out.jsonl").read_text().splitlines(keepends=True)
    (d / "out.jsonl").write_text("".join(lines[:-1]))
    with pytest.raises(AssertionError, match="lost or extra"):
        assert_same_records(references["generate"], d, ("out.jsonl",))
    (d / "out.jsonl").write_text("".join(lines + lines[:1]))
    with pytest.raises(AssertionError, match="duplicated"):
        assert_same_records(references["generate"], d, ("out.jsonl",))


def test_a_failing_server_keeps_partial_results_and_resumes(tmp_path):
    """A server that starts failing mid-run: retries, then a one-line error within the deadline;
    the batches already answered stay written, and the same command finishes the job later."""
    from test_backend_openai import chat_body, fake_server

    state = {"ok": 2}

    def respond(handler, payload):
        if payload is None:
            return 200, {"data": [{"id": "m"}]}, {}
        if state["ok"] > 0:
            state["ok"] -= 1
            return 200, chat_body(payload["messages"][-1]["content"]), {}
        return 500, {"error": {"message": "overloaded"}}, {}

    d = workdir(tmp_path / "run")
    with fake_server(respond) as (url, _):
        argv = ["generate", "-m", f"openai:{url}#m", "-i", str(d / "prompts.jsonl"), "-o", str(d / "out.jsonl"),
                "--batch-size", "1", "--no-progress"]
        env = {"CAI_OPENAI_RETRIES": "1", "CAI_OPENAI_DEADLINE": "10"}
        failed = run_cai(argv, d, env=env)
        assert failed.returncode == 2 and "Traceback" not in failed.stderr
        err = [ln for ln in failed.stderr.splitlines() if ln.startswith("cai: error")]
        assert len(err) == 1 and "500" in err[0] and "attempts" in err[0], failed.stderr
        assert [r["id"] for r in normalised(d / "out.jsonl")] == ["p1", "p2"]
        state["ok"] = 100  # the server recovers
        done = run_cai(argv, d, env=env)
        assert done.returncode == 0, done.stderr
        ids = [r["id"] for r in normalised(d / "out.jsonl")]
        assert ids == [p["id"] for p in PROMPTS]


def test_the_last_checkpoint_leaves_the_optimiser_state_out_and_still_resumes(request, tmp_path):
    """transformers checkpoints the last step; cai keeps only the model and trainer state there (a run
    resumed at its last step takes no optimiser step). Killed once that checkpoint is complete, the
    rerun finishes with its weights; a checkpoint before the last keeps the optimiser state, and
    --keep-checkpoints keeps it in the last one too."""
    import signal

    from safetensors.torch import load_file

    case = next(c for c in CASES if c.name == "reward")
    work = _prepare(tmp_path / "run", case, request)
    ckpts = work / "run" / "checkpoints"
    killed = run_cai(REWARD_PM(work), work, fault="after_checkpoint:3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (ckpts / "checkpoint-3" / "optimizer.pt").is_file()
    killed = run_cai(REWARD_PM(work), work, fault="after_checkpoint:4")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    last = ckpts / "checkpoint-4"
    assert (last / "trainer_state.json").is_file() and not (last / "optimizer.pt").exists()
    weights = load_file(last / "model.safetensors")
    done = run_cai(REWARD_PM(work), work)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((work / "run" / "cai_run.json").read_text())
    assert record["status"] == "done" and record["resumed_from"][-1].endswith("checkpoint-4"), record
    assert record["final_metrics"]["global_step"] == 4
    final = load_file(work / "run" / "model.safetensors")
    assert final.keys() == weights.keys()
    assert all(final[k].equal(weights[k].to(final[k].dtype)) for k in final)

    kept = workdir(tmp_path / "kept")
    (kept / "model").symlink_to(work / "model")
    argv = [*REWARD_PM(kept), "--keep-checkpoints"]
    assert run_cai(argv, kept).returncode == 0
    assert (kept / "run" / "checkpoints" / "checkpoint-4" / "optimizer.pt").is_file()


def test_a_lora_run_killed_at_its_last_checkpoint_finishes_without_another_step(request, tmp_path):
    """The same for an adapter checkpoint (cai sft --lora): the rerun loads it and saves the merged
    model at the step count an unbroken run ends with."""
    import signal

    case = next(c for c in CASES if c.name == "sft")
    work = _prepare(tmp_path / "run", case, request)
    argv = [*SFT(work), "--lora"]
    killed = run_cai(argv, work, fault="after_checkpoint:4")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (work / "run" / "checkpoints" / "checkpoint-4" / "optimizer.pt").exists()
    done = run_cai(argv, work)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((work / "run" / "cai_run.json").read_text())
    assert record["status"] == "done" and record["resumed_from"][-1].endswith("checkpoint-4"), record
    assert record["final_metrics"]["global_step"] == 4
    assert (work / "run" / "model.safetensors").is_file()
