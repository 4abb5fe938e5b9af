"""The files in examples/ stay in step with the code: the preset copies hold the presets' settings
and plan the same steps, and the walk-through's run files and constitution are valid."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cai.cli import main
from cai.run.plan import build_plan, keyed
from cai.run.presets import PRESETS, load_run_file, preset_names

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_every_preset_has_its_copy_in_examples():
    assert {"quickstart", "paper", "hf-recipe", "demo-effect"} <= set(preset_names())
    assert all((EXAMPLES / f"{name}.yaml").is_file() for name in preset_names())


@pytest.mark.parametrize("name", preset_names())
def test_preset_copies_match_the_presets(name):
    preset = yaml.safe_load((PRESETS / f"{name}.yaml").read_text())
    copy = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    assert copy == preset, f"examples/{name}.yaml differs from the preset: copy the change across"
    spec, _, base = load_run_file(None, name)
    spec_file, _, base_file = load_run_file(str(EXAMPLES / f"{name}.yaml"), None)
    # The same step keys: `cai run --preset X` and `cai run examples/X.yaml` reuse each other's work.
    assert [s.key for s in keyed(build_plan(spec), base)] == [s.key for s in keyed(build_plan(spec_file), base_file)]


@pytest.mark.parametrize("run_file", ["customer-service/run.yaml", "gpu-cluster/run.yaml"])
def test_example_run_files_plan(run_file, tmp_path, capsys):
    assert main(["run", str(EXAMPLES / run_file), "-o", str(tmp_path / "run"), "--dry-run"]) == 0
    assert "critique" in capsys.readouterr().out


def test_compare_plans_every_arm(tmp_path, capsys):
    spec, where, base = load_run_file(str(EXAMPLES / "compare.yaml"), None)
    from cai.run import RunOptions
    from cai.run.runner import plan_run, validate

    opts = RunOptions(tmp_path / "run", base=base)
    plan, _ = plan_run(spec, opts, where=where)
    validate(plan, opts, where=where)  # every step's config builds, in every arm
    assert list(plan.arms) == ["base", "sft-helpful", "sl-cai", "ppo-judge", "ppo-pointwise", "ppo-contrastive",
                               "ppo-revision", "dpo"]
    last = {arm: steps[-6] for arm, steps in plan.arms.items() if arm != "base"}  # the model the evals read
    assert [s.stage for s in last.values()] == ["sft", "sft", "ppo", "ppo", "ppo", "ppo", "dpo"]
    sl_sft = plan.arms["sl-cai"][2]
    assert all(sl_sft in steps for arm, steps in plan.arms.items() if arm.startswith(("ppo", "dpo")))
    assert [s.name for s in plan.steps].count("critique") == 1
    assert plan.arms["ppo-contrastive"][3] is plan.arms["dpo"][3] or \
        plan.arms["ppo-contrastive"][3].id == plan.arms["dpo"][3].id  # the same contrastive labels
    assert plan.arms["ppo-revision"][3].config["prompts"] == "@critique/critique.jsonl"
    assert main(["run", str(EXAMPLES / "compare.yaml"), "-o", str(tmp_path / "run"), "--dry-run"]) == 0
    assert "arm dpo:" in capsys.readouterr().out


def test_customer_service_constitution_and_prompts_are_valid(capsys):
    assert main(["constitution", "validate", str(EXAMPLES / "customer-service" / "constitution.yaml")]) == 0
    from cai.sources import load_prompts

    assert len(load_prompts(EXAMPLES / "customer-service" / "prompts.jsonl")) == 20


def test_dose_study_seed_trains_a_replicate_beside_the_dose(tmp_path, monkeypatch, dose_study):
    """`examples/dose_response.py --seed 1` trains the same mix with SFT seed 1 into sft-N-seed1 (so
    a replicate never resumes, or overwrites, the seed-0 model), and its summary row keeps N."""
    import json
    import sys

    dose = dose_study
    calls = []

    def fake_cai(*args, log):
        calls.append(args)
        if args[:2] == ("data", "refusals"):
            out = Path(args[args.index("-o") + 1])
            out.write_text("".join(json.dumps({
                "id": f"h{i}", "prompt": [{"role": "user", "content": f"harm {i}"}],
                "completion": [{"role": "assistant", "content": "I won't help with that."}],
                "refusal": 0, "meta": {"source": "redteam", "source_id": f"r{i}"}}) + "\n" for i in range(3)))

    monkeypatch.setattr(dose, "cai", fake_cai)
    monkeypatch.setattr(sys, "argv", ["dose_response.py", "--out", str(tmp_path / "study"), "--doses", "2",
                                      "--seed", "1", "--helpful", "benign:4", "--evals", "harmlessness"])
    dose.main()
    sft = [c for c in calls if c[0] == "sft"]
    assert len(sft) == 1
    assert sft[0][sft[0].index("-o") + 1] == str(tmp_path / "study" / "sft-2-seed1")
    assert sft[0][sft[0].index("--seed") + 1] == "1"
    assert sft[0][sft[0].index("--data") + 1] == str(tmp_path / "study" / "data" / "mix-2.jsonl")
    evals = [c for c in calls if c[0] == "eval"]
    assert [c[c.index("-m") + 1] for c in evals] == ["smollm2-135m", str(tmp_path / "study" / "sft-2-seed1")]
    assert "| sft-2-seed1 | 2 |" in (tmp_path / "study" / "dose.md").read_text()
