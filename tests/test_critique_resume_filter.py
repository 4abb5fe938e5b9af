"""Issue 17, sections 2 and 3: a resumed critique file never mixes settings, and a revision filter
that keeps nothing says so (in `cai critique --filter` and, stopping there, in `cai run`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from cai.cli import main
from test_bad_inputs import assert_one_line_error, run_bad

PROMPTS = "".join(json.dumps({"id": f"p{i}", "prompt": f"How do I do thing number {i}?"}) + "\n" for i in range(3))
OTHER_PROMPTS = "".join(json.dumps({"id": f"q{i}", "prompt": f"Other question {i}?"}) + "\n" for i in range(3))
# A critic that only ever talks about the answer: every revision is commentary, which the filter drops.
COMMENTARY = "generate:\n  - reply: \"The assistant's previous answer is not helpful enough.\"\n"


def _base(tmp_path: Path) -> list[str]:
    (tmp_path / "p.jsonl").write_text(PROMPTS)
    return ["critique", "-m", "mock:", "--data", str(tmp_path / "p.jsonl"), "-o", str(tmp_path / "c.jsonl")]


@pytest.mark.parametrize("change,flag", [
    (["--seed", "1"], "--seed"),
    (["--temperature", "0.9"], "--temperature"),
    (["--answer-max-tokens", "64"], "--answer-max-tokens"),
    (["--few-shot", "0"], "--few-shot"),
    (["--data", "{d}/other.jsonl"], "--data"),
])
def test_resume_with_another_setting_is_refused_and_names_it(change, flag, tmp_path, capsys):
    base = _base(tmp_path)
    (tmp_path / "other.jsonl").write_text(OTHER_PROMPTS)
    assert main(base + ["--limit", "2"]) == 0
    before = (tmp_path / "c.jsonl").read_bytes()
    capsys.readouterr()
    rc, err = run_bad(base + [a.replace("{d}", str(tmp_path)) for a in change], capsys)
    line = assert_one_line_error(rc, err, ["c.jsonl", f"different {flag}", "new -o"])
    assert "in the file" in line and "now" in line  # both values, so the user sees which run differs
    assert (tmp_path / "c.jsonl").read_bytes() == before


def test_resume_with_the_same_settings_goes_on_and_counts_what_was_there(tmp_path, capsys, monkeypatch):
    base = _base(tmp_path)
    assert main(base + ["--limit", "2"]) == 0
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)  # the same prompt file, named another way, is the same source
    same = [a if a != str(tmp_path / "p.jsonl") else os.path.join(".", "p.jsonl") for a in base]
    assert main(same + ["--limit", "1"]) == 0  # nothing new, but 2 records were there (it used to say 1)
    assert "wrote 0 new records" in (err := capsys.readouterr().err) and "(2 were already there)" in err, err
    assert main(same) == 0
    assert "wrote 1 new records" in (err := capsys.readouterr().err) and "(2 were already there)" in err, err
    assert len((tmp_path / "c.jsonl").read_text().splitlines()) == 3


def test_filter_that_keeps_nothing_says_so_with_reasons_and_what_to_change(tmp_path, capsys):
    (tmp_path / "critic.yaml").write_text(COMMENTARY)
    (tmp_path / "p.jsonl").write_text(PROMPTS)
    argv = ["critique", "-m", f"mock:{tmp_path / 'critic.yaml'}", "--prompts", str(tmp_path / "p.jsonl"),
            "-o", str(tmp_path / "cf.jsonl"), "--filter"]
    for _ in range(2):  # the same message when a rerun finds every prompt already dropped
        rc, err = run_bad(argv, capsys)
        line = assert_one_line_error(rc, err, ["the filter kept 0 of 3 records", "commentary 3",
                                               str(tmp_path / "cf.dropped.jsonl"), "--no-filter", "--samples"])
        assert "not found" not in line
    assert len((tmp_path / "cf.dropped.jsonl").read_text().splitlines()) == 3
    assert not (tmp_path / "cf.jsonl").exists()


def test_run_stops_at_the_critique_step_when_the_filter_keeps_nothing(tmp_path, capfd):
    (tmp_path / "critic.yaml").write_text(COMMENTARY)
    (tmp_path / "p.jsonl").write_text(PROMPTS)
    spec = {"model": f"mock:{tmp_path / 'critic.yaml'}", "stages": ["critique", "sft"],
            "critique": {"prompts": str(tmp_path / "p.jsonl"), "limit": 2}, "sft": {"max_steps": 1}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(spec))
    run_dir = tmp_path / "run"
    assert main(["run", str(tmp_path / "run.yaml"), "-o", str(run_dir)]) == 2
    err = capfd.readouterr().err
    assert "the filter kept 0 of 2 records" in err and "commentary 2" in err and "critique.dropped.jsonl" in err
    assert "step critique stopped on the error above" in err and "file not found" not in err
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert stages["critique"]["status"] == "failed" and "sft" not in stages
