"""The files in examples/ stay in step with the code: the preset copies hold the presets' settings
and plan the same steps, and the walk-through's run files and constitution are valid."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cai.cli import main
from cai.run.plan import build_plan, keyed
from cai.run.presets import PRESETS, load_run_file

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("name", ["quickstart", "paper", "hf-recipe"])
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


def test_customer_service_constitution_and_prompts_are_valid(capsys):
    assert main(["constitution", "validate", str(EXAMPLES / "customer-service" / "constitution.yaml")]) == 0
    from cai.sources import load_prompts

    assert len(load_prompts(EXAMPLES / "customer-service" / "prompts.jsonl")) == 20
