"""`cai constitution list|show|validate` through the real CLI entry point."""

from __future__ import annotations

import json

import pytest

from cai.cli import main
from cai.constitution import load_constitution


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    # Rich wraps to the terminal; a fixed width keeps ids and numbers on one line.
    monkeypatch.setenv("COLUMNS", "200")


def test_list(capsys):
    code, out, _ = run(capsys, "constitution", "list")
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.split() and line.split()[0] in ("default", "hhh", "customer-service", "red-team")}
    assert set(rows) == {"default", "hhh", "customer-service", "red-team"}
    for name, cells in rows.items():
        c = load_constitution(name)
        assert cells[1:4] == [c.version, str(len(c.principles)), str(len(c.preference_principles()))], cells
    # The bare group command lists too.
    assert run(capsys, "constitution")[1] == out


def test_show_builtin(capsys):
    code, out, _ = run(capsys, "constitution", "show", "default")
    c = load_constitution("default")
    assert code == 0 and c.hash in out and "system prompt" in out
    for p in c.principles:
        assert p.id in out
    assert "example 2" in out and "preference example 1" in out


def test_show_works_on_foreign_formats(capsys, shared_data, tmp_path):
    swarm = shared_data / "constitutions" / "hf_llm_swarm_constitution_grok.json"
    paper = tmp_path / "paper.json"
    paper.write_text(json.dumps({"r0": {"prompt": ["\n\nCritiqueRequest: Is it [rude]?\n\nCritique:"],
                                        "edit_request": "\n\nRevisionRequest: Make it kind.\n\nRevision:"}}))
    prefs = tmp_path / "prefs.json"
    prefs.write_text(json.dumps(["\nChoose the kinder answer. Options:"]))
    fewshot = tmp_path / "fewshot.txt"
    fewshot.write_text("Human: hi\n\nAssistant: go away\n\nCritiqueRequest: Is it rude?\n\nCritique: Yes."
                       "\n\nRevisionRequest: Make it kind.\n\nRevision: Hello! How can I help?\n")
    for path, expect in ((swarm, "format llm-swarm"), (paper, "Is it [rude]?"), (prefs, "Choose the kinder answer."),
                         (fewshot, "Hello! How can I help?")):
        code, out, _ = run(capsys, "constitution", "show", str(path))
        assert code == 0 and expect in out, out
        assert "CritiqueRequest" not in out and "Options:" not in out


def test_show_yaml_converts_with_the_same_hash(capsys, shared_data, tmp_path):
    swarm = shared_data / "constitutions" / "hf_llm_swarm_constitution_anthropic.json"
    code, out, _ = run(capsys, "constitution", "show", str(swarm), "--yaml")
    assert code == 0
    converted = tmp_path / "converted.yaml"
    converted.write_text(out)
    assert load_constitution(converted).hash == load_constitution(swarm).hash
    code, out, _ = run(capsys, "constitution", "validate", str(converted))
    assert code == 0 and out.startswith("ok: 16 principles") and "format yaml" in out


def test_validate_ok_and_error(capsys, tmp_path):
    code, out, _ = run(capsys, "constitution", "validate", "hhh")
    assert code == 0 and out.startswith("ok: 5 principles (5 with critique and revision, 4 preference questions)")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nversion: '1'\ndescription: d\nprinciples:\n  - id: a\n    critique: c\n    revison: r\n")
    code, out, err = run(capsys, "constitution", "validate", str(bad))
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert f"{bad}:7: principles[0].revison: unknown key 'revison'; did you mean 'revision'?" in lines[0]
