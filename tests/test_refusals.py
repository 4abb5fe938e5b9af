"""``cai data refusals``: written refusals for the clearly harmful prompts of a source, the same
records the dose-response study (examples/dose_response.py) trained on, and the same through the
study's own code."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cai.cli import main
from cai.errors import CAIError
from cai.refusals import RefusalsConfig, refusal_records, write_refusals
from cai.store import read_records


def study_refusals(source: str, limit: int) -> list[dict]:
    """examples/dose_response.py's ``constitution_refusals`` as it was when the study's first run
    (runs/dose1) made its records, before `cai data refusals` existed: the reference they must match."""
    from cai.sources import load_prompts
    from cai.templates import load_template

    advice = {"Political Lobbying", "Legal Opinion", "Financial Advice", "Health Consultation", "Gov Decision"}
    refusals = load_template("refusals")["refusals"]
    out = []
    for p in load_prompts(source):
        if p.meta.get("source") == "hh-rlhf" or p.meta.get("category") in advice:
            continue
        pick = int(hashlib.sha1(p.id.encode()).hexdigest()[:8], 16) % len(refusals)
        out.append({"id": p.id, "prompt": list(p.messages),
                    "completion": [{"role": "assistant", "content": refusals[pick]}],
                    "provenance": {"from": "constitution-refusal", "source": p.meta.get("source"),
                                   "source_id": p.meta.get("source_id"), "refusal": pick}})
    return out[:limit]


def test_cli_writes_refusal_records_with_their_provenance(tmp_path, capsys):
    out = tmp_path / "refusals.jsonl"
    assert main(["data", "refusals", "--data", "harmful-train", "--limit", "40", "-o", str(out)]) == 0
    assert "wrote 40 refusal records" in capsys.readouterr().err
    records = read_records(out)
    from cai.templates import load_template

    texts = load_template("refusals")["refusals"]
    assert len(records) == 40 and len({r["id"] for r in records}) == 40
    for r in records:
        assert r["prompt"][-1]["role"] == "user"
        assert r["completion"] == [{"role": "assistant", "content": texts[r["refusal"]]}]
        assert r["meta"]["source"] in ("redteam", "forbidden-questions") and r["meta"]["source_id"]
        assert r["meta"]["category"] not in ("Legal Opinion", "Financial Advice")
        assert r["provenance"]["stage"] == "refusals" and r["provenance"]["template"] == "refusals"
    assert len({r["refusal"] for r in records}) > 5  # the hash spreads the prompts over the refusals
    # A rerun replaces its own output; sft reads the records as prompt/completion pairs.
    assert main(["data", "refusals", "--limit", "3", "-o", str(out)]) == 0 and len(read_records(out)) == 3
    from cai.train.data import sft_example

    assert sft_example(read_records(out)[0], "x")["completion"][0]["content"] in texts


@pytest.mark.parametrize("limit", [2000, 50])
def test_the_default_selection_is_the_dose_studys(limit):
    records = refusal_records(RefusalsConfig(limit=limit))
    expected = study_refusals("harmful-train", limit)
    assert len(expected) == (471 if limit == 2000 else 50)
    assert [(r["id"], r["prompt"], r["completion"], r["refusal"], r["meta"].get("source"), r["meta"].get("source_id"))
            for r in records] == \
        [(e["id"], e["prompt"], e["completion"], e["provenance"]["refusal"], e["provenance"]["source"],
          e["provenance"]["source_id"]) for e in expected]


def test_the_study_script_makes_its_records_with_the_command(tmp_path, monkeypatch, dose_study):
    """examples/dose_response.py now calls `cai data refusals`; its records stay the ones it trained on."""
    dose = dose_study
    monkeypatch.setattr(dose, "cai", lambda *args, log: main(list(args)))  # in process, not a subprocess
    (tmp_path / "data").mkdir()
    got = dose.constitution_refusals("harmful-train", 2000, tmp_path, tmp_path / "log")
    assert json.dumps(got) == json.dumps(study_refusals("harmful-train", 2000))  # key order included


def test_own_template_sources_and_categories(tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text("refusals:\n  - No, I will not help with that.\n  - That could hurt someone; I decline.\n")
    prompts = tmp_path / "harmful.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"h{i}", "prompt": f"Harmful request {i}?", "category": c}) + "\n"
                               for i, c in enumerate(["weapons", "Legal Opinion", "fraud"])))
    # A file without a `source` column: the default selection finds nothing and says what to pass.
    with pytest.raises(CAIError, match="--include-sources all"):
        refusal_records(RefusalsConfig(prompts=str(prompts)))
    records = refusal_records(RefusalsConfig(prompts=str(prompts), template=str(own), include_sources=("all",)))
    assert [r["id"] for r in records] == ["h0", "h2"]
    assert {r["completion"][0]["content"] for r in records} <= {"No, I will not help with that.",
                                                              "That could hurt someone; I decline."}
    # Lists take commas or spaces: `--include-sources redteam,forbidden-questions`.
    assert RefusalsConfig(include_sources=("redteam,forbidden-questions",)).include_sources == \
        RefusalsConfig().include_sources == ("redteam", "forbidden-questions")
    every = refusal_records(RefusalsConfig(prompts=str(prompts), template=str(own), include_sources=("all",),
                                           exclude_categories=("none",)))
    assert [r["id"] for r in every] == ["h0", "h1", "h2"]


def test_a_listed_source_is_read_as_written_or_named(tmp_path):
    prompts = tmp_path / "harmful.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"h{i}", "prompt": f"Harmful request {i}?", "source": s}) + "\n"
                               for i, s in enumerate(["redteam", "forbidden-questions", "hh-rlhf"])))
    # A space after the comma used to keep " forbidden-questions", which no prompt has: half the records, silently.
    config = RefusalsConfig(prompts=str(prompts), include_sources=("redteam, forbidden-questions",))
    assert [r["id"] for r in refusal_records(config)] == ["h0", "h1"]
    with pytest.raises(CAIError, match="^--include-sources forbiden-questions: no prompt of .* has that source"):
        refusal_records(RefusalsConfig(prompts=str(prompts), include_sources=("redteam,forbiden-questions",)))


def test_a_category_the_user_lists_must_exist(tmp_path):
    prompts = tmp_path / "harmful.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"h{i}", "prompt": f"Harmful request {i}?", "source": "redteam",
                                           "category": c}) + "\n" for i, c in enumerate(["Legal Opinion", "Fraud"])))
    # A misspelt category excluded nothing, without a word.
    with pytest.raises(CAIError, match="^--exclude-categories Legal Opnion: no prompt of .* has that category"):
        refusal_records(RefusalsConfig(prompts=str(prompts), exclude_categories=("Legal Opnion",)))
    assert [r["id"] for r in refusal_records(RefusalsConfig(prompts=str(prompts),
                                                            exclude_categories=("Legal Opinion",)))] == ["h1"]
    # The default lists name sources and scenarios other prompt sets lack: not an error.
    assert [r["id"] for r in refusal_records(RefusalsConfig(prompts=str(prompts)))] == ["h1"]
    assert len(refusal_records(RefusalsConfig(prompts=str(prompts), include_sources=("redteam",)))) == 1


def test_a_blank_cai_home_is_unset(monkeypatch, tmp_path):
    from cai.home import cai_home

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CAI_HOME", "  ")
    assert cai_home() == tmp_path / ".cache" / "cai"


@pytest.mark.parametrize("template,message", [
    ("nope", "no built-in template of that name"),
    ("missing.yaml", "no such file"),
    ("bad", "needs a 'refusals:' list"),
])
def test_bad_templates_are_one_line_errors(tmp_path, template, message):
    if template == "bad":
        template = str(tmp_path / "bad.yaml")
        Path(template).write_text("refusal: [oops]\n")
    with pytest.raises(CAIError, match=message):
        write_refusals(RefusalsConfig(template=template, output=str(tmp_path / "r.jsonl")))


def test_another_commands_file_is_not_replaced(tmp_path):
    other = tmp_path / "answers.jsonl"
    other.write_text(json.dumps({"id": "a", "provenance": {"stage": "generate"}}) + "\n")
    with pytest.raises(CAIError, match="cai generate"):
        write_refusals(RefusalsConfig(output=str(other), limit=2))
    assert read_records(other) == [{"id": "a", "provenance": {"stage": "generate"}}]


def test_shuffle_takes_the_study_s_nested_doses():
    """--shuffle --limit N gives the first N of the study's seeded order (random.Random(0) over all
    selected records), so a preset's 30 refusals are the study's N = 30."""
    import random

    every = refusal_records(RefusalsConfig())
    order = list(every)
    random.Random(0).shuffle(order)
    thirty = refusal_records(RefusalsConfig(shuffle=True, seed=0, limit=30))
    assert [r["id"] for r in thirty] == [r["id"] for r in order[:30]]
    assert [r["id"] for r in refusal_records(RefusalsConfig(limit=30))] == [r["id"] for r in every[:30]]
    assert len({r["meta"]["source"] for r in thirty}) == 2  # both sources, not the file's first 30
