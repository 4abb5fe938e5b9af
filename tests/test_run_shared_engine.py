"""Steps of one ``cai run`` that use the same model in a row share one engine (issue 16): consecutive
eval steps of one model run in one step process (``python -m cai.run.stages A.json B.json``), which
loads the model once, and only when a step has model work; each keeps its own manifest entry.

Backends are counted where every one is built (``cai.backends._factory``), in this process: the
step process is tested in-process through ``cai.run.stages.main``, the runner through the child
processes it starts (``cai.run.runner.run_child``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cai.cli import main

TASKS = ["harmlessness", "over-refusal", "hhh", "truthfulqa", "ifeval"]


@pytest.fixture
def built(monkeypatch) -> list[str]:
    """The kinds of the backends built in this process, in order."""
    import cai.backends as backends

    real, seen = backends._factory, []

    def factory(kind: str):
        seen.append(kind)
        return real(kind)

    monkeypatch.setattr(backends, "_factory", factory)
    return seen


def _step_files(tmp_path: Path, tasks: list[str], model: str = "mock:") -> list[Path]:
    files = []
    for task in tasks:
        folder = tmp_path / f"eval-{task}"
        folder.mkdir()
        config = {"task": task, "model": model, "limit": 3, "bootstrap": 50, "output": str(folder / "results.json")}
        if task == "harmlessness":
            config["grader"] = "judge"  # the model judges its own answers: the same engine again
        if task == "ifeval":
            config["max_tokens"] = 8
        path = folder / "step.json"
        path.write_text(json.dumps({"name": f"eval-{task}", "stage": "eval", "section": "eval", "config": config}))
        files.append(path)
    return files


def test_eval_steps_in_one_process_load_their_model_once_and_only_for_work(tmp_path, built):
    from cai.run.stages import main as step_main

    files = _step_files(tmp_path, TASKS)
    assert step_main([str(f) for f in files]) == 0
    assert built == ["mock"]  # five tasks, one engine
    for f in files:
        summary = json.loads(f.with_name("summary.json").read_text())
        assert summary["summary"]["task"] == json.loads(f.read_text())["config"]["task"]
        assert summary["seconds"] >= 0 and summary["started"] <= summary["ended"]
        assert json.loads(f.with_name("results.json").read_text())["model"] == "mock:"

    # Every output finished (a group resumed after its summaries were lost): no engine at all.
    built.clear()
    assert step_main([str(f) for f in files]) == 0
    assert built == []

    # The middle one a record short: one engine, started by the step that has work.
    records = files[2].with_name("results.examples.jsonl")
    lines = records.read_text().splitlines(keepends=True)
    records.write_text("".join(lines[:-1]))
    assert step_main([str(f) for f in files]) == 0
    assert built == ["mock"] and len(records.read_text().splitlines()) == len(lines)


def test_a_step_alone_in_its_process_loads_its_own_model_as_before(tmp_path, built, monkeypatch):
    import cai.run.stages as stages

    seen = []
    real = stages.run_step
    monkeypatch.setattr(stages, "run_step", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    files = _step_files(tmp_path, ["hhh", "truthfulqa"])
    for f in files:
        assert stages.main([str(f)]) == 0
    assert built == ["mock", "mock"] and all("backend" not in kw for kw in seen)


def test_the_shared_model_is_the_eval_model_of_tasks_that_take_a_backend():
    from cai.run.stages import shared_model

    for task in TASKS:
        assert shared_model("eval", {"task": task, "model": "m"}) == "m"
    # Helpfulness loads three models (model, baseline, judge): never shared; nor is any other stage.
    assert shared_model("eval", {"task": "helpfulness", "model": "m"}) is None
    assert shared_model("label", {"policy": "m", "model": "m"}) is None


def _spec(tmp_path: Path, tasks: list[str], **extra) -> dict:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"How do I do thing {i}?"}) + "\n"
                               for i in range(4)))
    return {"model": "mock:", "stages": ["critique", "eval"],
            "critique": {"prompts": str(prompts), "rounds": 1, "batch_size": 2},
            "eval": {"tasks": tasks, "limit": 3, "batch_size": 4, "bootstrap": 50}, **extra}


@pytest.fixture
def children(monkeypatch) -> list[list[str]]:
    """The step files of each process the runner starts (the processes still run)."""
    import cai.run.runner as runner

    calls: list[list[str]] = []
    real = runner.run_child

    def run_child(*files, **kw):
        calls.append([Path(f).parent.name.rsplit("-", 1)[0] for f in files])
        return real(*files, **kw)

    monkeypatch.setattr(runner, "run_child", run_child)
    return calls


def _run(tmp_path: Path, spec: dict, *args: str) -> int:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(spec))
    return main(["run", str(path), "-o", str(tmp_path / "run"), *args])


def _manifest(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "run" / "manifest.json").read_text())


def test_eval_steps_of_one_model_run_in_one_process(tmp_path, children, capfd):
    spec = _spec(tmp_path, ["harmlessness", "over-refusal"])
    assert _run(tmp_path, spec, "--dry-run") == 0
    plan = capfd.readouterr().out.splitlines()
    assert "(sharing the engine of eval-harmlessness)" in plan[3] and "sharing" not in plan[2]
    assert _run(tmp_path, spec) == 0
    assert children == [["critique"], ["eval-harmlessness", "eval-over-refusal"]]
    err = capfd.readouterr().err
    assert "cai run: [2/3] eval-harmlessness (elapsed" in err
    assert "cai run: [3/3] eval-over-refusal (sharing the engine of eval-harmlessness" in err
    stages = _manifest(tmp_path)["stages"]
    harm, over = stages["eval-harmlessness"], stages["eval-over-refusal"]
    assert harm["status"] == over["status"] == "done" and harm["seconds"] > 0 and over["seconds"] >= 0
    assert harm["shared_process_with"] == ["eval-over-refusal"] and over["shared_process_with"] == ["eval-harmlessness"]
    assert harm["peak_rss_mb"] == over["peak_rss_mb"] > 10  # the process's peak, which both lived in
    assert over["summary"]["task"] == "over-refusal" and harm["ended"] <= over["ended"]
    assert "shared_process_with" not in stages["critique"]


def test_eval_steps_of_different_models_run_apart(tmp_path, children):
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"generate": [{"reply": "I can't help with that."}]}))
    spec = _spec(tmp_path, ["harmlessness", "over-refusal"])
    spec["stages"] = ["eval"]
    spec["arms"] = {"a": {}, "b": {"model": f"mock:{other}"}}
    assert _run(tmp_path, spec) == 0
    assert children == [["eval-harmlessness", "eval-over-refusal"]] * 2  # one process per model
    models = {e["config"]["model"] for e in _manifest(tmp_path)["stages"].values()}
    assert models == {"mock:", f"mock:{other}"}


def test_a_failure_in_a_group_keeps_the_steps_before_it_and_a_rerun_resumes_from_it(tmp_path, children, capfd):
    from cai.run import RunOptions
    from cai.run.runner import plan_run

    spec = _spec(tmp_path, ["harmlessness", "over-refusal", "hhh"])
    spec["stages"] = ["eval"]
    plan, _ = plan_run(spec, RunOptions(tmp_path / "run"), where="run.yaml")
    folder = {s.name: tmp_path / "run" / s.folder for s in plan.steps}
    folder["eval-over-refusal"].mkdir(parents=True)
    foreign = folder["eval-over-refusal"] / "results.json"
    foreign.write_text("not a result\n")  # the step refuses to write over it: a cai error, exit 2
    assert _run(tmp_path, spec) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert "step eval-over-refusal stopped on the error above" in err[-1]
    stages = _manifest(tmp_path)["stages"]
    assert stages["eval-harmlessness"]["status"] == "done" and stages["eval-harmlessness"]["summary"]["metrics"]
    assert stages["eval-over-refusal"]["status"] == "failed"
    assert "eval-hhh" not in stages and not folder["eval-hhh"].exists()  # never reached: as it was

    foreign.unlink()
    assert _run(tmp_path, spec) == 0
    assert children[-1] == ["eval-over-refusal", "eval-hhh"]
    assert "2 step(s) run, 1 already done" in capfd.readouterr().err
    assert {e["status"] for e in _manifest(tmp_path)["stages"].values()} == {"done"}


def test_a_small_group_starts_vllm_quickly_and_a_large_or_unknown_one_does_not(tmp_path, monkeypatch):
    """cai.backends.start_options: a vLLM CPU engine for a job of at most QUICK_START_TOKENS
    generated tokens (prompts x token limit, summed over the group) skips its compile warm-up."""
    import cai.backends as backends
    from cai.backends import QUICK_START_TOKENS, start_options
    from cai.run.stages import group_start_options, job_tokens

    monkeypatch.setattr(backends, "vllm_available", lambda: True)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert start_options("smollm2-135m", QUICK_START_TOKENS) == {"quick_start": True}
    assert start_options("vllm:smollm2-135m", 1000) == {"quick_start": True}
    assert start_options("smollm2-135m", QUICK_START_TOKENS + 1) == {}
    assert start_options("smollm2-135m", None) == {}
    assert start_options("hf:smollm2-135m", 1000) == {} and start_options("mock:", 1000) == {}
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert start_options("vllm:smollm2-135m", 1000) == {}  # eager mode would lose CUDA graphs
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    # A folder a cai trainer wrote starts compiled without vLLM's AOT cache: a larger job still pays.
    from cai.backends import QUICK_START_TOKENS_TRAINED

    trained, plain = tmp_path / "sft-model", tmp_path / "downloaded"
    trained.mkdir(), plain.mkdir()
    (trained / "cai_run.json").write_text("{}")
    assert start_options(f"vllm:{trained}", QUICK_START_TOKENS_TRAINED) == {"quick_start": True}
    assert start_options(str(trained), QUICK_START_TOKENS + 1) == {"quick_start": True}
    assert start_options(f"vllm:{trained}", QUICK_START_TOKENS_TRAINED + 1) == {}
    assert start_options(f"vllm:{plain}", QUICK_START_TOKENS + 1) == {}

    files = _step_files(tmp_path, ["harmlessness", "over-refusal", "hhh"], model="smollm2-135m")
    steps = [json.loads(f.read_text()) for f in files]
    # 3 prompts x the task's default 256 tokens each; hhh scores options: its size is unknown.
    assert [job_tokens(s["stage"], s["config"]) for s in steps] == [3 * 256, 3 * 256, None]
    assert group_start_options(files[:2]) == {"smollm2-135m": {"quick_start": True}}
    assert group_start_options(files) == {"smollm2-135m": {}}
    for f in files[:2]:  # 2 x 40 prompts x 256 tokens is past the bound
        step = json.loads(f.read_text())
        step["config"]["limit"] = 40
        f.write_text(json.dumps(step))
    assert group_start_options(files[:2]) == {"smollm2-135m": {}}


def test_the_group_engine_is_loaded_with_its_start_options(tmp_path, monkeypatch):
    import cai.backends as backends
    from cai.run.stages import main as step_main

    loaded = []
    monkeypatch.setattr("cai.run.stages.group_start_options", lambda paths: {"mock:": {"quick_start": True}})
    real = backends.load_backend
    monkeypatch.setattr(backends, "load_backend", lambda spec, **kw: loaded.append((spec, kw)) or real(spec, **kw))
    files = _step_files(tmp_path, ["over-refusal", "truthfulqa"])
    assert step_main([str(f) for f in files]) == 0
    assert ("mock:", {"quick_start": True}) in loaded


def test_an_eval_alone_asks_for_the_start_its_job_size_calls_for(tmp_path, monkeypatch):
    """`cai eval harmlessness` (or a step alone in its process) sizes its own job: prompts x --max-tokens."""
    import cai.backends as backends
    from cai.run.stages import main as step_main

    asked = []
    monkeypatch.setattr(backends, "start_options", lambda spec, n: asked.append((spec, n)) or {})
    (f,) = _step_files(tmp_path, ["over-refusal"])
    assert step_main([str(f)]) == 0
    assert asked == [("mock:", 3 * 256)]
