"""``cai run``: the plan, skipping finished steps, rerunning what a changed setting touches, --from,
--until, --dry-run, and a step killed mid-way resuming, on the mock backend."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cai.cli import main
from cai.errors import CAIError
from cai.run.plan import build_plan, keyed, resolve_refs

PROMPTS = [{"id": f"p{i}", "prompt": f"How do I do thing number {i}?"} for i in range(6)]


def _spec(tmp_path: Path, **changes) -> Path:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    spec = {"model": "mock:", "constitution": "default", "stages": ["critique", "label"],
            "critique": {"prompts": str(prompts), "rounds": 1, "batch_size": 2},
            "label": {"prompts": str(prompts), "limit": 4, "batch_size": 2}}
    for key, value in changes.items():
        section, _, field = key.partition("__")
        spec[section][field] = value
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def test_plan_wires_stages_and_keys_follow_settings(tmp_path):
    spec = {"model": "base", "critique": {"prompts": "redteam"}, "sft": {}, "label": {"prompts": "redteam"},
            "reward": {}, "ppo": {}, "rl_rounds": 2, "eval": {"tasks": ["harmlessness"]}, "report": {}}
    steps = keyed(build_plan(spec), tmp_path)
    assert [s.name for s in steps] == ["critique", "sft", "label-1", "reward-1", "ppo-1", "label-2", "reward-2",
                                       "ppo-2", "eval-harmlessness", "report"]
    by = {s.name: s for s in steps}
    assert by["sft"].config["data"] == ["@critique/critique.jsonl"]
    folders = {s.name: tmp_path / s.folder for s in steps}
    resolved = resolve_refs(by["ppo-2"].config, folders)
    assert resolved["policy"] == str(folders["ppo-1"] / "model") and resolved["reward"] == str(folders["reward-2"] / "model")
    assert by["label-1"].config["policy"] == "@sft/model" and by["label-2"].config["policy"] == "@ppo-1/model"
    assert by["ppo-2"].config["reward"] == "@reward-2/model" and by["eval-harmlessness"].config["model"] == "@ppo-2/model"
    # One changed setting changes that step's key and every key downstream of it, not upstream.
    spec["reward"] = {"lr": 1e-4}
    again = {s.name: s.key for s in keyed(build_plan(spec), tmp_path)}
    assert again["critique"] == by["critique"].key and again["label-1"] == by["label-1"].key
    assert again["reward-1"] != by["reward-1"].key and again["ppo-2"] != by["ppo-2"].key


def test_evals_are_given_every_prompt_source_the_run_trains_on(tmp_path):
    spec = {"model": "base", "generate": {"prompts": "helpful"}, "critique": {"prompts": "redteam"},
            "sft": {"data": ["@critique/critique.jsonl", "@generate/generate.jsonl:0.5", "extra.jsonl:2"]},
            "label": {"prompts": "mine.jsonl"}, "reward": {}, "ppo": {"prompts": "hh-rlhf:train.jsonl"},
            "eval": {"tasks": ["harmlessness", "hhh"], "hhh": {"train_prompts": "also.jsonl"}}}
    by = {s.name: s for s in build_plan(spec)}
    sources = ["helpful", "redteam", "@critique/critique.jsonl", "@generate/generate.jsonl", "extra.jsonl",
               "mine.jsonl", "hh-rlhf:train.jsonl"]
    assert by["eval-harmlessness"].config["train_prompts"] == sources
    assert by["eval-hhh"].config["train_prompts"] == ["also.jsonl", *sources]
    assert by["eval-harmlessness"].trained_on["mine.jsonl"] == "label.prompts"
    assert by["eval-harmlessness"].trained_on["hh-rlhf:train.jsonl"] == "ppo.prompts"
    assert {"critique", "generate"} <= set(by["eval-harmlessness"].reads)  # it reads their files
    # No training stage in the run: nothing to check, the result says so with "overlap": null.
    assert "train_prompts" not in build_plan({"stages": ["eval"], "critique": {"prompts": "redteam"},
                                              "eval": {}})[0].config


def test_an_eval_set_in_the_training_prompts_stops_the_run_before_any_step(tmp_path, capsys):
    from cai.evals.datasets import dataset_path
    from cai.run import RunOptions, execute
    from cai.sources import load_prompts

    advbench = str(dataset_path("advbench"))
    spec = {"model": "mock:", "stages": ["critique", "eval"], "critique": {"prompts": advbench, "rounds": 1},
            "eval": {"tasks": ["over-refusal", "harmlessness"], "limit": 4}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(spec))
    run_dir = tmp_path / "run"
    assert main(["run", str(path), "-o", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "eval task harmlessness is not held out" in err
    assert f"critique.prompts ({advbench})" in err and "4 of 4 eval prompts" in err and "4 exact" in err
    assert " e.g. '" in err and not run_dir.exists()  # nothing ran
    # Reworded copies in another training stage are caught as near-duplicates, on a dry run too.
    goals = [p.messages[-1]["content"] for p in load_prompts(advbench, limit=40)]
    reworded = tmp_path / "reworded.jsonl"
    reworded.write_text("".join(json.dumps({"prompt": f"Please {g[0].lower()}{g[1:]} for me"}) + "\n" for g in goals))
    spec = {**spec, "stages": ["critique", "label", "eval"], "critique": {"prompts": str(tmp_path / "none.txt")},
            "label": {"prompts": str(reworded)}, "eval": {"tasks": ["harmlessness"]}}
    (tmp_path / "none.txt").write_text("Name three colours of the rainbow\n")
    with pytest.raises(CAIError, match=r"harmlessness is not held out from the training prompts of label.prompts"
                       r".* \(0 exact, [1-9][0-9]* near-duplicate\)"):
        execute(spec, RunOptions(run_dir, dry_run=True), where="run.yaml")


def test_bad_run_files_are_one_line_errors(tmp_path):
    with pytest.raises(CAIError, match="unknown key.*critiqe"):
        build_plan({"critiqe": {}})
    with pytest.raises(CAIError, match="rl must be one of"):
        build_plan({"rl": "sac"})
    with pytest.raises(CAIError, match="reward needs preference labels"):
        build_plan({"reward": {}, "ppo": {}})
    path = tmp_path / "r.yaml"
    path.write_text("critique: {prompts: x, rounds: two}\nstages: [critique]\nmodel: 'mock:'\n")
    # Every step's config is built before anything runs: the bad value is named, no folder is made.
    with pytest.raises(CAIError, match="section critique"):
        from cai.run import RunOptions, execute

        execute(yaml.safe_load(path.read_text()), RunOptions(tmp_path / "run", dry_run=True), where="r.yaml")
    assert not (tmp_path / "run").exists()
    assert main(["run", "--preset", "nope"]) == 2


def test_run_skips_done_steps_and_reruns_what_a_change_touches(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["run", str(_spec(tmp_path)), "-o", str(run_dir)]) == 0
    m = _manifest(run_dir)
    assert {n: s["status"] for n, s in m["stages"].items()} == {"critique": "done", "label-1": "done"}
    assert all(s["peak_rss_mb"] > 10 and s["seconds"] > 0 for s in m["stages"].values())
    critique_out = Path(m["stages"]["critique"]["outputs"]["output"])
    dropped = critique_out.with_name("critique.dropped.jsonl")  # the revision filter is on in a run
    assert sum(len(f.read_text().splitlines()) for f in (critique_out, dropped) if f.exists()) == 6
    first_keys = {n: s["key"] for n, s in m["stages"].items()}
    capsys.readouterr()

    assert main(["run", str(_spec(tmp_path)), "-o", str(run_dir)]) == 0  # a rerun does no work
    assert "0 step(s) run, 2 already done" in capsys.readouterr().err

    assert main(["run", str(_spec(tmp_path, label__limit=3)), "-o", str(run_dir), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "critique" in plan and "done" in plan.splitlines()[1] and "changed" in plan.splitlines()[2]
    assert main(["run", str(_spec(tmp_path, label__limit=3)), "-o", str(run_dir)]) == 0
    assert "1 step(s) run, 1 already done" in capsys.readouterr().err
    m = _manifest(run_dir)
    assert m["stages"]["critique"]["key"] == first_keys["critique"] and m["stages"]["label-1"]["key"] != first_keys["label-1"]
    assert len(list(run_dir.glob("label-1-*"))) == 2  # the old labels stay beside the new ones

    assert main(["run", str(_spec(tmp_path, label__limit=3)), "-o", str(run_dir), "--from", "label",
                 "--until", "label"]) == 0
    assert "1 step(s) run, 1 already done" in capsys.readouterr().err
    assert list(run_dir.glob("label-1-*.old-*"))  # --from reruns from scratch and keeps the old output


def test_a_failing_step_stops_the_run_with_its_reason(tmp_path, capfd):
    run_dir = tmp_path / "run"
    assert main(["run", str(_spec(tmp_path, critique__prompts="no/such.jsonl")), "-o", str(run_dir)]) == 2
    err = capfd.readouterr().err  # the step's own message comes from its process
    last = err.strip().splitlines()[-1]
    assert "no/such.jsonl" in err and "step critique stopped on the error above" in last
    # A rerun meets the same error: the advice is to fix its cause, not to resume.
    assert "fix the cause it names" in last and "resume" not in last
    assert _manifest(run_dir)["stages"]["critique"]["status"] == "failed"


def test_a_step_the_filter_leaves_empty_is_not_called_resumable(tmp_path, capfd):
    (tmp_path / "critic.yaml").write_text("generate:\n  - reply: \"The assistant's previous answer is not helpful.\"\n")
    spec = _spec(tmp_path, critique__limit=2)
    data = yaml.safe_load(spec.read_text())
    data.update(model=f"mock:{tmp_path / 'critic.yaml'}", stages=["critique", "sft"], sft={"max_steps": 1})
    spec.write_text(yaml.safe_dump(data))
    assert main(["run", str(spec), "-o", str(tmp_path / "run")]) == 2
    lines = capfd.readouterr().err.strip().splitlines()
    assert "the filter kept 0 of 2 records" in lines[-2]
    assert "fix the cause it names" in lines[-1] and "resume" not in lines[-1]


@pytest.mark.parametrize("code,what", [(130, "was interrupted"), (-9, "was killed (SIGKILL, often out of memory)"),
                                       (-15, "was killed (SIGTERM)"), (1, "crashed (exit 1; the traceback is above)")])
def test_an_interrupted_or_crashed_step_is_resumed_by_running_again(code, what, tmp_path, monkeypatch):
    import cai.run.runner

    monkeypatch.setattr(cai.run.runner, "run_child", lambda *step_files, **kw: (code, 0.0))
    with pytest.raises(CAIError) as e:
        from cai.run import RunOptions, execute

        execute(yaml.safe_load(_spec(tmp_path).read_text()), RunOptions(tmp_path / "run"), where="run.yaml")
    assert str(e.value) == f"step critique {what}; run the same command again to resume from it"
    assert _manifest(tmp_path / "run")["stages"]["critique"]["status"] == "interrupted"


def test_a_step_names_its_place_once(tmp_path, capsys):
    """The step's process prints "in step label-1: ...", without "run file, section label" again."""
    from cai.run.stages import main as step_main

    step = tmp_path / "step.json"
    step.write_text(json.dumps({"name": "label-1", "stage": "label", "section": "label",
                                "config": {"temperature": "x"}}))
    assert step_main([str(step)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "cai: error in step label-1: temperature must be a number, got 'x' (str); fix that value in the " \
                  "config file"


@pytest.mark.parametrize("text", ["1e-4", "1E-4", "1e9", "+2e3", ".5e-3", "1.0e-4"])
def test_numbers_with_an_exponent_are_numbers_in_run_files_and_set(text, tmp_path, capsys):
    """PyYAML reads YAML 1.1, where 1e-4 is text (a float needs a dot and a signed exponent); a run
    file, --config and --set read it as the number everyone means."""
    from cai.run import RunOptions, execute
    from cai.run.presets import apply_overrides, load_run_file

    want = float(text)
    spec = _spec(tmp_path)
    spec.write_text(spec.read_text() + f"sft: {{lr: {text}}}\n")
    loaded, _, _ = load_run_file(str(spec), None)
    assert loaded["sft"]["lr"] == want
    assert apply_overrides(loaded, [f"label.min_margin={text}"])["label"]["min_margin"] == want
    assert apply_overrides(loaded, [f"sft.lr={text}"])["sft"]["lr"] == want
    if want < 1:  # a valid learning rate: the whole run file plans
        execute(apply_overrides(loaded, [f"sft.lr={text}"]), RunOptions(tmp_path / "run", dry_run=True),
                where="run.yaml")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"min_margin: {text}\n")
    from cai.config import load_yaml

    assert load_yaml(cfg) == {"min_margin": want}


def test_set_temperature_1e9_is_a_number_too_hot_named_once(tmp_path, capsys):
    """`--set label.temperature=1e9` said "must be a number, got '1e9' (str)"; it is a number, and
    too hot, and the error names its place once."""
    spec = _spec(tmp_path)
    rc = main(["run", str(spec), "-o", str(tmp_path / "run"), "--dry-run", "--set", "label.temperature=1e9"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "temperature must be at most 10" in err and "got 1e+09" in err and "(str)" not in err
    assert err.count("section label") == 1 and err.count("run.yaml") == 1
    spec.write_text(spec.read_text().replace("  limit: 4\n", "  limit: 4\n  temperature: 1e9\n"))
    assert main(["run", str(spec), "-o", str(tmp_path / "run"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "temperature must be at most 10" in err and err.count("section label") == 1 and "(str)" not in err


# Every Python process of the killed run (the runner, its restart, its steps) gets the slow mock of
# tests/conftest.py: each generate call takes 0.2 s, so the critique step is still running when the
# test kills it. At full speed the mock wrote all six records within the test's 50 ms poll now and
# then, and the step was already done when the kill came.
def test_killed_run_resumes_and_finishes(tmp_path, slow_mock_env):
    run_dir = tmp_path / "run"
    spec = _spec(tmp_path, critique__batch_size=1)
    env = slow_mock_env(0.2)
    proc = subprocess.Popen([sys.executable, "-m", "cai", "run", str(spec), "-o", str(run_dir)], env=env,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    out = None
    while time.time() < deadline:
        outs = list(run_dir.glob("critique-*/critique*.jsonl"))
        if sum(o.read_text().count("\n") for o in outs) >= 2:
            out = outs[0].with_name("critique.jsonl")
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its step process, as a kill -9 of the session would
    proc.wait()
    assert out is not None, "the critique step never wrote its first records"
    assert _manifest(run_dir)["stages"]["critique"]["status"] == "running"
    assert main(["run", str(spec), "-o", str(run_dir)]) == 0
    lines = [line for f in (out, out.with_name("critique.dropped.jsonl")) if f.exists()
             for line in f.read_text().splitlines()]
    ids = [json.loads(line)["id"] for line in lines]
    assert len(ids) == len(set(ids)) == 6
    assert {s["status"] for s in _manifest(run_dir)["stages"].values()} == {"done"}


def test_eval_and_report_steps_write_their_files(tmp_path):
    spec = yaml.safe_load(_spec(tmp_path).read_text())
    spec["stages"] = ["critique", "eval", "report"]
    spec["eval"] = {"tasks": ["harmlessness", "over-refusal"], "limit": 4, "batch_size": 4}
    spec["report"] = {}
    path = tmp_path / "run2.yaml"
    path.write_text(yaml.safe_dump(spec))
    run_dir = tmp_path / "run"
    assert main(["run", str(path), "-o", str(run_dir)]) == 0
    m = _manifest(run_dir)
    assert list(m["stages"]) == ["critique", "eval-harmlessness", "eval-over-refusal", "report"]
    harm = json.loads(Path(m["stages"]["eval-harmlessness"]["outputs"]["output"]).read_text())
    assert harm["kind"] == "cai-eval-result" and harm["model"] == "mock:" and harm["metrics"]
    # Checked against what the run trains on, and clean: the run's prompts are not AdvBench's.
    prompts = str(tmp_path / "prompts.jsonl")
    assert harm["overlap"]["train_sources"] == [prompts] and harm["overlap"]["n"] == 4
    assert (harm["overlap"]["exact"], harm["overlap"]["near"], harm["overlap"]["share"]) == (0, 0, 0.0)
    assert m["stages"]["eval-harmlessness"]["summary"]["task"] == "harmlessness"
    report = Path(m["stages"]["report"]["outputs"]["output"])
    assert report.stat().st_size > 10_000 and "harmlessness" in report.read_text()


def test_baseline_evals_the_base_model_whatever_the_training_settings(tmp_path):
    spec = {"model": "mock:", "critique": {"prompts": "redteam"}, "sft": {"lr": 1e-4},
            "eval": {"tasks": ["harmlessness", "over-refusal"], "limit": 8, "baseline": True}, "report": {}}
    steps = keyed(build_plan(spec), tmp_path)
    assert [s.name for s in steps] == ["critique", "sft", "eval-base-harmlessness", "eval-base-over-refusal",
                                       "eval-harmlessness", "eval-over-refusal", "report"]
    by = {s.name: s for s in steps}
    base = by["eval-base-harmlessness"]
    assert base.config["model"] == "mock:" and base.reads == [] and base.config["limit"] == 8
    assert "train_prompts" not in base.config and "baseline" not in base.config
    assert by["eval-harmlessness"].config["model"] == "@sft/model" and "baseline" not in by["eval-harmlessness"].config
    assert {"eval-base-harmlessness", "eval-base-over-refusal"} <= set(by["report"].reads)
    # Off (the default, or false): no baseline steps, and the final evals keep the keys they had.
    off = keyed(build_plan({**spec, "eval": {"tasks": ["harmlessness", "over-refusal"], "limit": 8}}), tmp_path)
    false = keyed(build_plan({**spec, "eval": {**spec["eval"], "baseline": False}}), tmp_path)
    assert [s.name for s in off] == [s.name for s in false] == ["critique", "sft", "eval-harmlessness",
                                                                "eval-over-refusal", "report"]
    assert {s.name: s.key for s in off}["eval-harmlessness"] == by["eval-harmlessness"].key
    # A changed training setting reruns the final evals, never the baseline.
    for change in ({"sft": {"lr": 1e-3}}, {"critique": {"prompts": "helpful"}}):
        again = {s.name: s.key for s in keyed(build_plan({**spec, **change}), tmp_path)}
        assert again["eval-harmlessness"] != by["eval-harmlessness"].key
        assert again["eval-base-harmlessness"] == base.key
        assert again["eval-base-over-refusal"] == by["eval-base-over-refusal"].key
    # The base model itself is the baseline's one input from the top of the run file.
    assert {s.name: s.key for s in keyed(build_plan({**spec, "model": "other"}), tmp_path)}[
        "eval-base-harmlessness"] != base.key
    # A model name there stays what it was: helpfulness's opponent, for every task.
    named = {s.name: s for s in build_plan({**spec, "eval": {"tasks": ["helpfulness"], "baseline": "m2"}})}
    assert "eval-base-helpfulness" not in named and named["eval-helpfulness"].config["baseline"] == "m2"


def test_run_ends_with_base_and_final_side_by_side(tmp_path, capsys):
    spec = yaml.safe_load(_spec(tmp_path).read_text())
    spec["stages"] = ["critique", "eval", "report"]
    spec["eval"] = {"tasks": ["harmlessness", "over-refusal"], "limit": 4, "batch_size": 4, "baseline": True}
    spec["report"] = {}
    path = tmp_path / "run2.yaml"
    path.write_text(yaml.safe_dump(spec))
    run_dir = tmp_path / "run"
    assert main(["run", str(path), "-o", str(run_dir)]) == 0
    m = _manifest(run_dir)
    assert list(m["stages"]) == ["critique", "eval-base-harmlessness", "eval-base-over-refusal", "eval-harmlessness",
                                 "eval-over-refusal", "report"]
    out = capsys.readouterr().out
    pct = r"\d+\.\d% \[\d+\.\d, \d+\.\d\]"
    for task, metric in (("harmlessness", "harmless_rate"), ("over-refusal", "compliance_rate_safe"),
                         ("over-refusal", "refusal_rate_unsafe")):
        assert re.search(rf"{task} {metric}: +base {pct} -> final {pct}  \(intervals (do not )?overlap\)", out), out
    assert "correct_rate" not in out  # the headline metrics only
    report = next(run_dir.glob("report-*/report.html"))
    assert f"report: {report}" in out
    html = report.read_text()
    assert "Before and after" in html and "base model" in html and "final model" in html
    # A rerun does nothing, and says the same.
    assert main(["run", str(path), "-o", str(run_dir)]) == 0
    again = capsys.readouterr()
    assert "0 step(s) run, 6 already done" in again.err and again.out == out


def test_every_stage_end_to_end_on_a_tiny_model(tmp_path, tiny_llama_dir):
    """critique -> sft -> label -> reward -> ppo -> eval -> report, wired by the plan, on a 2-layer
    random Llama: slow to learn anything, quick to prove that each stage reads what the last wrote."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS[:4]))
    model = f"hf:{tiny_llama_dir}"
    tiny = {"max_steps": 2, "batch_size": 2, "save_steps": 1, "max_length": 128}
    spec = {"model": model, "constitution": "hhh", "rl": "ppo",
            "critique": {"prompts": str(prompts), "rounds": 1, "few_shot": 0, "answer_max_tokens": 8,
                         "critique_max_tokens": 8, "revision_max_tokens": 8, "filter": False},
            "sft": dict(tiny), "label": {"prompts": str(prompts), "pairs": "contrastive", "max_tokens": 8},
            "reward": {**tiny, "human_eval": [], "eval_split": 0.0},
            "ppo": {"prompts": str(prompts), "max_steps": 1, "batch_size": 2, "max_tokens": 8},
            "eval": {"tasks": ["over-refusal"], "limit": 4, "max_tokens": 8}, "report": {}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(spec))
    run_dir = tmp_path / "run"
    assert main(["run", str(path), "-o", str(run_dir)]) == 0
    m = _manifest(run_dir)
    assert list(m["stages"]) == ["critique", "sft", "label-1", "reward-1", "ppo-1", "eval-over-refusal", "report"]
    assert {s["status"] for s in m["stages"].values()} == {"done"}
    folder = {n: run_dir / s["folder"] for n, s in m["stages"].items()}
    assert (folder["sft"] / "model" / "cai_run.json").is_file()
    assert m["stages"]["ppo-1"]["config"]["policy"] == str((folder["sft"] / "model").resolve())
    assert m["stages"]["ppo-1"]["config"]["reward"] == str((folder["reward-1"] / "model").resolve())
    assert json.loads((folder["eval-over-refusal"] / "results.json").read_text())["model"].endswith(
        str(folder["ppo-1"] / "model"))


def test_relative_paths_are_read_beside_the_run_file(tmp_path, monkeypatch):
    # examples/customer-service/run.yaml names `prompts.jsonl` and `constitution.yaml` beside it;
    # the step key already hashes them there, so the step must read them there too, from any cwd.
    folder = tmp_path / "example"
    folder.mkdir()
    (folder / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PROMPTS[:2]))
    (folder / "run.yaml").write_text(yaml.safe_dump({
        "model": "mock:", "stages": ["critique"],
        "critique": {"prompts": "prompts.jsonl", "rounds": 1, "batch_size": 2, "filter": False}}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["run", str(folder / "run.yaml"), "-o", "run"]) == 0
    entry = _manifest(elsewhere / "run")["stages"]["critique"]
    assert entry["status"] == "done" and entry["inputs"]  # the prompt file's hash is in the key
    assert entry["config"]["prompts"] == str((folder / "prompts.jsonl").resolve())
    records = (elsewhere / "run" / entry["folder"] / "critique.jsonl").read_text().splitlines()
    assert len(records) == 2


def test_set_eval_baseline_true_or_false_is_the_switch(tmp_path):
    """`--set eval.baseline=false` said "baseline is text ... quote it" (helpfulness's `baseline`
    option names an opponent model); true/false is the run's own switch, as in the run file."""
    from cai.run.presets import apply_overrides

    spec = {"model": "mock:", "critique": {"prompts": "redteam"}, "sft": {"lr": 1e-4},
            "eval": {"tasks": ["harmlessness"], "limit": 8, "baseline": True}, "report": {}}
    off = apply_overrides(spec, ["eval.baseline=false"])
    assert off["eval"]["baseline"] is False
    assert [s.name for s in keyed(build_plan(off), tmp_path)] == ["critique", "sft", "eval-harmlessness", "report"]
    assert apply_overrides(off, ["eval.baseline=true"])["eval"]["baseline"] is True
    with pytest.raises(CAIError, match="baseline is text"):  # other non-text values still need quotes
        apply_overrides(spec, ["eval.baseline=7"])


@pytest.mark.parametrize("flag, bars", [([], False), (["--progress"], True), (["--no-progress"], False)])
def test_progress_flag_reaches_the_step_processes(flag, bars, tmp_path, capfd):
    """`cai run` had no --progress: its steps, processes of their own, drew bars only on a terminal."""
    assert main(["run", str(_spec(tmp_path)), "-o", str(tmp_path / "run"), *flag]) == 0
    err = capfd.readouterr().err
    assert ("it/s]" in err or "%|" in err) is bars, err[-2000:]
    assert "CAI_PROGRESS" not in os.environ  # put back when the command returns


def test_bars_follow_the_argument_then_the_environment_then_the_terminal(monkeypatch):
    from cai.progress import PROGRESS_ENV, bars_wanted

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    assert bars_wanted() is True and bars_wanted(False) is False
    monkeypatch.setenv(PROGRESS_ENV, "0")
    assert bars_wanted() is False and bars_wanted(True) is True
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    monkeypatch.setenv(PROGRESS_ENV, "1")
    assert bars_wanted() is True
    monkeypatch.setenv(PROGRESS_ENV, "")
    assert bars_wanted() is False
