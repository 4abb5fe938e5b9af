"""The `refusals` stage of `cai run` and the demo-effect preset: written refusals and the model's own
filtered answers become one SFT mix, and the evals are held out from both."""

from __future__ import annotations

import json

import pytest
import yaml

from cai.cli import main
from cai.errors import CAIError
from cai.run.plan import build_plan, keyed
from cai.run.presets import load_run_file


def test_sft_reads_the_refusals_and_the_generated_answers_by_default(tmp_path):
    spec = {"model": "base", "refusals": {"data": "harmful-train", "limit": 10},
            "generate": {"data": "borderline+benign", "filter": True}, "sft": {}, "eval": {"tasks": ["harmlessness"]}}
    by = {s.name: s for s in keyed(build_plan(spec), tmp_path)}
    assert list(by) == ["generate", "refusals", "sft", "eval-harmlessness"]
    assert by["refusals"].config == {"prompts": "harmful-train", "limit": 10, "output": "refusals.jsonl"}
    assert by["sft"].config["data"] == ["@refusals/refusals.jsonl", "@generate/generate.jsonl"]
    assert set(by["sft"].reads) == {"refusals", "generate"}
    assert by["eval-harmlessness"].trained_on == {"borderline+benign": "generate.prompts",
                                                  "harmful-train": "refusals.prompts",
                                                  "@refusals/refusals.jsonl": "sft.data",
                                                  "@generate/generate.jsonl": "sft.data"}
    # Refusals alone, and beside critique data; generate without refusals is mixed in only by hand.
    assert build_plan({"refusals": {}, "sft": {}})[1].config["data"] == ["@refusals/refusals.jsonl"]
    both = {s.name: s for s in build_plan({"refusals": {}, "critique": {"prompts": "redteam"}, "sft": {}})}
    assert both["sft"].config["data"] == ["@critique/critique.jsonl", "@refusals/refusals.jsonl"]
    plain = {s.name: s for s in build_plan({"generate": {}, "critique": {"prompts": "redteam"}, "sft": {}})}
    assert plain["sft"].config["data"] == ["@critique/critique.jsonl"]
    with pytest.raises(CAIError, match="add a critique or refusals section"):
        build_plan({"generate": {}, "sft": {}})
    # A change to the refusals reaches sft's key, not generate's.
    spec["refusals"]["limit"] = 11
    again = {s.name: s.key for s in keyed(build_plan(spec), tmp_path)}
    assert again["generate"] == by["generate"].key and again["sft"] != by["sft"].key


def test_demo_effect_preset_plans_and_is_held_out(tmp_path, capsys):
    spec, where, base = load_run_file(None, "demo-effect")
    steps = {s.name: s for s in build_plan(spec)}
    assert list(steps) == ["generate", "refusals", "sft", "eval-base-harmlessness", "eval-base-over-refusal",
                           "eval-harmlessness", "eval-over-refusal", "report"]
    assert steps["generate"].config["input"] == "borderline+benign" and steps["generate"].config["filter"] is True
    assert steps["sft"].config["data"] == ["@refusals/refusals.jsonl", "@generate/generate.jsonl"]
    assert not any(s.stage in ("label", "reward", "ppo", "dpo", "rloo") for s in steps.values())
    assert "limit" not in steps["eval-harmlessness"].config  # all 520 AdvBench, all 450 XSTest
    # The dry run builds every step's config and compares the eval sets with every training source.
    assert main(["run", "--preset", "demo-effect", "-o", str(tmp_path / "run"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "refusals" in out and "eval-over-refusal" in out and not (tmp_path / "run").exists()


def test_a_run_writes_refusals_and_filtered_answers(tmp_path):
    script = tmp_path / "mock.yaml"
    script.write_text('generate:\n  - match: "(?i)kill"\n    reply: "I\'m sorry, I cannot help with that."\n'
                      '  - reply: "Here is a helpful answer with enough words in it."\n')
    spec = {"model": f"mock:{script}", "stages": ["generate", "refusals"],
            "refusals": {"data": "harmful-train", "limit": 5},
            "generate": {"data": "borderline+benign", "limit": 4, "filter": True, "batch_size": 2}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(spec))
    run_dir = tmp_path / "run"
    assert main(["run", str(path), "-o", str(run_dir)]) == 0
    manifest = json.loads((run_dir / "manifest.json").read_text())
    folders = {s["name"]: run_dir / s["folder"] for s in manifest["stages"].values()}
    refusals = [json.loads(line) for line in (folders["refusals"] / "refusals.jsonl").read_text().splitlines()]
    assert len(refusals) == 5 and all(r["provenance"]["stage"] == "refusals" for r in refusals)
    kept = (folders["generate"] / "generate.jsonl").read_text().splitlines()
    dropped = [json.loads(line) for line in (folders["generate"] / "generate.dropped.jsonl").read_text().splitlines()]
    # borderline-001/002 ask how to "kill" an engine and a treadmill: the mock refuses them.
    assert [r["id"] for r in dropped] == ["borderline-001", "borderline-002"]
    assert all(r["dropped"] == ["refuses"] for r in dropped) and len(kept) == 2

