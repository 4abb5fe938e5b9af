"""``cai run`` with arms: overlays merged into the top-level spec, steps shared between arms run once,
a manifest that keeps same-named steps of different arms apart, bad arm specs as one-line errors,
and the comparison (compare.md, plot, report) after the arms; on the mock backend and a tiny Llama."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cai.cli import main
from cai.errors import CAIError
from cai.run import RunOptions, execute
from cai.run.arms import arm_specs, deep_merge
from cai.run.presets import apply_overrides
from cai.run.runner import describe, plan_run

PROMPTS = [{"id": f"p{i}", "prompt": f"How do I do thing number {i}?"} for i in range(6)]


def _prompts(tmp_path: Path) -> str:
    p = tmp_path / "prompts.jsonl"
    p.write_text("".join(json.dumps(x) + "\n" for x in PROMPTS))
    return str(p)


def _spec(tmp_path: Path) -> dict:
    prompts = _prompts(tmp_path)
    return {"model": "mock:", "seed": 0,
            "generate": {"prompts": prompts, "limit": 4, "batch_size": 2},
            "critique": {"prompts": prompts, "rounds": 1, "batch_size": 2},
            "label": {"prompts": prompts, "limit": 3, "batch_size": 2},
            "eval": {"tasks": ["harmlessness", "over-refusal"], "limit": 4, "batch_size": 4,
                     "harmlessness": {"max_tokens": 16}},
            "report": {},
            "arms": {"base": {"stages": ["eval"]},
                     "one": {"stages": ["generate", "critique", "label", "eval"]},
                     "two": {"stages": ["generate", "critique", "label", "eval"], "label": {"limit": 2}}}}


def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def test_overlays_merge_deeply_and_null_drops():
    top = {"model": "m", "critique": {"prompts": "redteam", "rounds": 1}, "sft": {"lr": 1e-4, "data": ["a"]},
           "label": {"prompts": "redteam"}, "stages": ["critique", "sft", "label"]}
    merged = deep_merge(top, {"critique": {"rounds": 2}, "sft": {"data": ["b", "c"]}, "label": {"prompts": None}})
    assert merged["critique"] == {"prompts": "redteam", "rounds": 2}  # merged key by key
    assert merged["sft"] == {"lr": 1e-4, "data": ["b", "c"]}           # a list is replaced, not appended
    assert merged["label"] == {}                                       # null removes the key
    assert top["critique"]["rounds"] == 1                              # the top-level spec is untouched
    arms = arm_specs({**top, "report": {}, "arms": {"a": {"critique": None}, "b": None, "c": {"stages": ["critique"]}}},
                     where="r.yaml")
    assert list(arms) == ["a", "b", "c"]
    assert "critique" not in arms["a"] and arms["a"]["stages"] == ["sft", "label"]  # a nulled section leaves the plan
    assert arms["b"]["stages"] == ["critique", "sft", "label"] and "report" not in arms["b"]
    assert arms["c"]["stages"] == ["critique"]


def test_shared_steps_are_planned_once(tmp_path, capsys):
    spec = _spec(tmp_path)
    plan, manifest = plan_run(spec, RunOptions(tmp_path / "run"), where="r.yaml")
    ids = [s.id for s in plan.steps]
    assert len(ids) == len(set(ids))
    names = [s.name for s in plan.steps]
    # generate, critique and the evals are the same step in arms one and two; the labels differ. The
    # base arm's evals are its own: the others record their overlap with the prompts those arms use.
    assert names.count("generate") == 1 and names.count("critique") == 1 and names.count("label-1") == 2
    assert names.count("eval-harmlessness") == 2 and names[-1] == "report"
    one, two = plan.arms["one"], plan.arms["two"]
    assert [s.id for s in one[:2]] == [s.id for s in two[:2]]
    assert one[2].name == two[2].name == "label-1" and one[2].id != two[2].id
    text = describe(plan, manifest, RunOptions(tmp_path / "run"))
    assert "arm base:" in text and "arm two:" in text and "shared with one" in text
    assert "3 arms, 12 steps, 8 to compute (4 shared)" in text


def test_baseline_evals_are_shared_by_every_arm(tmp_path):
    from cai.evals.results import EvalResult, Metric, write_result
    from cai.run.experiment import arm_results
    from cai.run.headline import headline

    spec = _spec(tmp_path)
    spec["eval"]["baseline"] = True
    spec["sft"] = {"data": ["@critique/critique.jsonl"]}
    for arm in ("one", "two"):
        spec["arms"][arm]["stages"] = ["generate", "critique", "sft", "label", "eval"]
    run_dir = tmp_path / "run"
    plan, _ = plan_run(spec, RunOptions(run_dir), where="r.yaml")
    names = [s.name for s in plan.steps]
    # One baseline per task for the whole run: every arm evaluates the same base model.
    assert names.count("eval-base-harmlessness") == names.count("eval-base-over-refusal") == 1
    base_ids = {s.id for s in plan.steps if s.name.startswith("eval-base-")}
    assert base_ids <= {s.id for s in plan.arms["one"]} and base_ids <= {s.id for s in plan.arms["two"]}
    # The base arm trains nothing: its own evals are the baseline, computed once.
    assert not base_ids & {s.id for s in plan.arms["base"]}
    # The comparison's columns and the headline read each arm's own evals, not the baseline's.
    for s in plan.steps:
        if s.stage == "eval":
            value = 0.2 if s.name.startswith("eval-base-") else 0.9
            write_result(EvalResult(s.config["task"], s.name, {"harmless_rate": Metric(value, (value - .1, value + .1)),
                                                               "compliance_rate_safe": Metric(value, None)}),
                         run_dir / s.folder / s.output)
    results = arm_results(plan.arms, run_dir)
    assert all(len(r["results"]) == 2 and not any("eval-base-" in f for f in r["results"]) for r in results.values())
    lines = headline(plan, run_dir)
    assert lines[0].startswith("cai run: base model -> final model") and lines[-1].startswith("report: none")
    assert [line.split()[0] for line in lines[1:-1]] == ["one:", "one:", "two:", "two:"]
    assert "base 20.0% [10.0, 30.0] -> final 90.0% [80.0, 100.0]  (intervals do not overlap)" in lines[1]
    assert "base 20.0% -> final 90.0%  (no intervals)" in lines[2]


def test_sft_reads_generated_answers_mixed_at_a_weight(tmp_path):
    spec = {"model": "mock:", "generate": {"prompts": "helpful", "limit": 2},
            "critique": {"prompts": "redteam", "limit": 2},
            "sft": {"data": ["@critique/critique.jsonl", "@generate/generate.jsonl:0.5"]},
            "arms": {"helpful": {"stages": ["generate", "sft"], "sft": {"data": ["@generate/generate.jsonl"]}},
                     "sl-cai": {"stages": ["generate", "critique", "sft"]}}}
    plan, _ = plan_run(spec, RunOptions(tmp_path / "run"), where="r.yaml")
    helpful, slcai = plan.arms["helpful"][-1], plan.arms["sl-cai"][-1]
    assert helpful.name == slcai.name == "sft" and helpful.id != slcai.id
    assert helpful.reads == ["generate"] and slcai.reads == ["critique", "generate"]
    from cai.run.runner import step_config

    cfg = step_config(slcai, plan.folders[slcai.id], tmp_path / "run", tmp_path)
    gen = plan.arms["sl-cai"][0]
    assert cfg["data"][1] == str((tmp_path / "run" / gen.folder / "generate.jsonl").resolve()) + ":0.5"
    assert plan.arms["helpful"][0].config["input"] == "helpful"  # `prompts` is generate's --input


def test_bad_arm_specs_are_one_line_errors(tmp_path):
    base = {"model": "mock:", "critique": {"prompts": "redteam"}, "eval": {}}
    opts = RunOptions(tmp_path / "run", dry_run=True)
    cases = [({"arms": []}, "arms must be a mapping"),
             ({"arms": {"a": ["eval"]}}, "arm a: an arm is a mapping"),
             ({"arms": {"a": {"critiqe": {}}}}, "arm a: unknown key.*critiqe"),
             ({"arms": {"a": {"output": "x"}}}, "arm a: unknown key.*output"),
             ({"arms": {"a": {"stages": ["eval", "report"]}}}, "report is not part of an arm"),
             ({"arms": {"a.b": {}}}, "arm name 'a.b'"),
             ({"arms": {"a": {"rl": "sac"}}}, "arm a: rl must be one of"),
             ({"arms": {"a": {"stages": ["sft"], "sft": {"data": ["@generate/g.jsonl"]}}}},
              "arm a: sft refers to @generate/g.jsonl"),
             ({"arms": {"a": {"critique": {"rounds": "two"}}}}, "section critique"),
             ({"eval": {"tasks": ["hhh"], "harmlessness": {"max_tokens": 8}}, "arms": {"a": {}}}, "harmlessness")]
    for extra, pattern in cases:
        with pytest.raises(CAIError, match=pattern) as e:
            execute({**base, **extra}, opts, where="r.yaml")
        assert "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()


def test_set_reaches_into_an_arm():
    spec = {"ppo": {"max_steps": 10}, "arms": {"a": {"ppo": {"lr": 1.0}}}}
    out = apply_overrides(spec, ["arms.a.ppo.max_steps=4", "ppo.max_steps=6", "model=hf:x"])
    assert out == {"ppo": {"max_steps": 6}, "arms": {"a": {"ppo": {"lr": 1.0, "max_steps": 4}}}, "model": "hf:x"}
    assert spec["arms"]["a"]["ppo"] == {"lr": 1.0}
    with pytest.raises(CAIError, match="ppo.max_steps is not a section"):
        apply_overrides(spec, ["ppo.max_steps.x=1"])


def test_arms_run_shared_steps_once_and_compare(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(_spec(tmp_path), sort_keys=False))
    run_dir = tmp_path / "run"
    assert main(["run", str(path), "-o", str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert "9 step(s) run" in err and err.count("] critique") == 1 and err.count("] generate") == 1
    m = _manifest(run_dir)
    assert all(s["status"] == "done" for s in m["stages"].values())
    labels = [(k, s) for k, s in m["stages"].items() if s["name"] == "label-1"]
    # Two steps named label-1 with different keys: two entries, each with its own folder and arm.
    assert len(labels) == 2 and labels[0][1]["key"] != labels[1][1]["key"]
    assert {k for k, _ in labels} == {s["folder"] for _, s in labels} and [s["arms"] for _, s in labels] == [["one"], ["two"]]
    assert len(list(run_dir.glob("critique-*"))) == 1 and len(list(run_dir.glob("label-1-*"))) == 2
    assert list(m["arms"]) == ["base", "one", "two"]
    assert [json.loads((run_dir / s / "step.json").read_text())["config"]["limit"]
            for s in m["arms"]["two"] if s.startswith("label-1")] == [2]
    # The comparison: one column per arm, in the run file's order, and the report shows it.
    table = (run_dir / "compare.md").read_text()
    assert "| metric | base | one | two |" in table and "harmlessness.harmless_rate" in table
    assert (run_dir / "tradeoff.png").is_file() and (run_dir / "tradeoff.svg").is_file()
    exp = json.loads((run_dir / "experiment.json").read_text())
    assert [a["name"] for a in exp["arms"]] == ["base", "one", "two"] and all(a["results"] for a in exp["arms"])
    report = next(run_dir.glob("report-*/report.html")).read_text()
    assert "Experiment: arms compared" in report and "label-1 · two" in report

    assert main(["run", str(path), "-o", str(run_dir)]) == 0  # a rerun does no work
    assert "0 step(s) run, 9 already done" in capsys.readouterr().err
    # --from/--until count along each arm: only the arms with labels rerun them.
    assert main(["run", str(path), "-o", str(run_dir), "--from", "label", "--until", "label", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("rerun (--from)") == 2 and "not selected" in out
    with pytest.raises(CAIError, match="--from reward: no such stage"):
        execute(yaml.safe_load(path.read_text()), RunOptions(run_dir, from_stage="reward", dry_run=True), where="r")


def test_arms_on_a_tiny_model(tmp_path, tiny_llama_dir):
    """SFT on generated answers / SL-CAI mixed with them, on a 2-layer random Llama: the generated
    answers are made once and read by both SFT steps; compare.md has the arm with results and names
    the one without. (Each step is a process that loads torch, some 8 s: evals of more arms are left
    to the mock test above.)"""
    prompts = _prompts(tmp_path)
    tiny = {"max_steps": 1, "batch_size": 2, "save_steps": 1, "max_length": 96}
    spec = {"model": f"hf:{tiny_llama_dir}", "constitution": "hhh",
            "generate": {"prompts": prompts, "limit": 2, "max_tokens": 8},
            "critique": {"prompts": prompts, "limit": 2, "rounds": 1, "few_shot": 0, "answer_max_tokens": 8,
                         "critique_max_tokens": 8, "revision_max_tokens": 8, "filter": False},
            "sft": {**tiny, "data": ["@critique/critique.jsonl", "@generate/generate.jsonl:0.5"]},
            "eval": {"tasks": ["over-refusal"], "limit": 2, "max_tokens": 4},
            "arms": {"sft-helpful": {"stages": ["generate", "sft"], "sft": {"data": ["@generate/generate.jsonl"]}},
                     "sl-cai": {"stages": ["generate", "critique", "sft", "eval"]}}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(spec))
    run_dir = tmp_path / "run"
    assert main(["run", str(path), "-o", str(run_dir)]) == 0
    m = _manifest(run_dir)
    assert [s["name"] for s in m["stages"].values()].count("generate") == 1
    assert len([s for s in m["stages"].values() if s["name"] == "sft"]) == 2
    gen = next(s for s in m["stages"].values() if s["name"] == "generate")
    assert gen["arms"] == ["sft-helpful", "sl-cai"]
    sl_sft = next(s for s in m["stages"].values() if s["name"] == "sft" and s["arms"] == ["sl-cai"])
    run = json.loads((run_dir / sl_sft["folder"] / "model" / "cai_run.json").read_text())
    assert any(str(d.get("path", "")).endswith("generate.jsonl") and d.get("weight") == 0.5
               for d in run.get("data") or [])
    table = (run_dir / "compare.md").read_text()
    assert "| metric | sl-cai |" in table and "sft-helpful: no eval results yet" in table
    exp = json.loads((run_dir / "experiment.json").read_text())
    assert exp["arms"][1]["model"] == f"{sl_sft['folder']}/model"  # the model each arm's evals read
