"""``cai data stats``: numbers computed from known records, and the terminal tables."""

from __future__ import annotations

import json

import pytest

from cai.cli import main
from cai.data_stats import summarize


def step(pid, revision, critique="c c", stopped=None):
    s = {"principle_id": pid, "critique_request": "cr", "critique": critique, "revision_request": "rr",
         "revision": revision, "empty_revision": not revision}
    if stopped is not None:
        s.update(stopped=stopped, p_comply=0.9 if stopped else 0.2)
    return s


def critique_records():
    return [
        {"id": "a", "prompt": [{"role": "user", "content": "qa"}], "initial": "one two", "final": "x y z",
         "steps": [step("harm", "x y z"), step("kind", "x y z")]},          # 2nd revision repeats the 1st
        {"id": "b", "prompt": [{"role": "user", "content": "qb"}], "initial": "same", "final": "same",
         "steps": [step("harm", ""), step("harm", "same")]},               # empty, then unchanged
        {"id": "c", "prompt": [{"role": "user", "content": "qc"}], "initial": "abcd", "final": "abcd",
         "steps": [step("kind", None, critique=None, stopped=True)]},
    ]


def test_critique_summary_counts():
    s = summarize(critique_records(), examples=2)
    assert s["kind"] == "critique" and s["records"] == 3
    assert s["revised"] == 1 and s["revised_rate"] == pytest.approx(1 / 3)
    assert s["steps_per_record"] == {1: 1, 2: 2}
    assert s["principles"]["harm"] == {"steps": 3, "changed": 1, "empty": 1}
    assert s["principles"]["kind"] == {"steps": 2, "stopped": 1}
    assert s["lengths"]["initial"]["chars"] == pytest.approx((7 + 4 + 4) / 3)
    assert s["lengths"]["final"]["words"] == pytest.approx((3 + 1 + 1) / 3)
    assert s["lengths"]["critique"]["n"] == 4  # the stopped step wrote no critique
    assert s["early_stop"] == {"judged": 1, "mean_p_comply": 0.9, "stopped": 1}
    assert len(s["examples"]) == 2 and {e["id"] for e in s["examples"]} <= {"a", "b", "c"}


def test_preference_summary():
    recs = [
        {"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "good"}],
         "rejected": [{"role": "assistant", "content": "bad answer"}], "p_chosen": 0.9, "orders_agree": True,
         "principle_ids": ["harmless"]},
        {"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "same"}],
         "rejected": [{"role": "assistant", "content": "same"}], "p_chosen": 0.52, "orders_agree": False,
         "principle_ids": ["harmless", "honest"]},
    ]
    s = summarize(recs)
    assert s["kind"] == "preference" and s["identical_pairs"] == 1
    assert s["p_chosen"]["mean"] == pytest.approx(0.71)
    assert s["p_chosen"]["margin"] == {">= 0.3": 1, "< 0.05": 1}
    assert s["orders_agree_rate"] == 0.5
    assert s["principles"] == {"harmless": 2, "honest": 1}
    assert s["lengths"]["rejected"]["words"] == pytest.approx(1.5)


def test_unknown_files_are_refused():
    with pytest.raises(ValueError, match="critique or preference"):
        summarize([{"id": 1, "text": "x"}])


def test_cli_prints_tables(tmp_path, capsys):
    path = tmp_path / "sl.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in critique_records()))
    assert main(["data", "stats", str(path), "--examples", "1"]) == 0
    out = capsys.readouterr().out
    for text in ("final differs from first answer", "1 (33.3%)", "harm", "kind", "mean lengths", "example "):
        assert text in out
    assert main(["data", "stats", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["principles"]["harm"]["steps"] == 3
    assert main(["data", "stats", str(tmp_path / "missing.jsonl")]) == 2
