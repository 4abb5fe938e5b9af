"""--pairs revision and --pairs contrastive: pairs labelled by how they were made (p_chosen = 1),
optionally checked by the judge, resumable like every `cai label` run."""

from __future__ import annotations

import json
import math

import pytest

from cai.backends.mock import MockBackend
from cai.errors import CAIError
from cai.label import LabelConfig, run_label, skipped_path
from cai.store import read_records


def _critique_file(tmp_path):
    recs = [{"id": f"r{i}", "prompt": [{"role": "user", "content": f"question {i}"}], "initial": f"bad answer {i}",
             "steps": [{"principle_id": "harmless", "revision": f"good answer {i}"}], "final": f"good answer {i}"}
            for i in range(4)]
    recs[2]["final"] = recs[2]["initial"]  # not revised: no pair
    path = tmp_path / "sl.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_revision_pairs_prefer_the_final_revision_and_resume(tmp_path):
    out = tmp_path / "prefs.jsonl"
    cfg = LabelConfig(prompts=str(_critique_file(tmp_path)), output=str(out), pairs="revision", limit=2, batch_size=1)
    counts = run_label(cfg)
    assert counts["pairs"] == 2
    cfg = LabelConfig(prompts=str(_critique_file(tmp_path)), output=str(out), pairs="revision", batch_size=1)
    counts = run_label(cfg)  # resumed: only the third revised record is new
    recs = read_records(out)
    assert counts["already_done"] == 2 and [r["id"] for r in recs] == ["r0:revision", "r1:revision", "r3:revision"]
    assert recs[0]["chosen"][0]["content"] == "good answer 0" and recs[0]["rejected"][0]["content"] == "bad answer 0"
    assert recs[0]["p_chosen"] == 1.0 and recs[0]["label_source"] == "revision"
    assert recs[0]["principles"] == [{"id": "harmless"}]


def test_revision_pairs_need_a_critique_file(tmp_path):
    bad = tmp_path / "p.jsonl"
    bad.write_text(json.dumps({"id": "x", "prompt": "hi"}) + "\n")
    with pytest.raises(CAIError, match=r"p\.jsonl:1: --pairs revision reads a `cai critique` file"):
        run_label(LabelConfig(prompts=str(bad), output=str(tmp_path / "o.jsonl"), pairs="revision"))


def test_contrastive_pairs_sample_under_opposite_system_prompts(tmp_path):
    def reply(conv):
        return "SAFE" if "careful" in conv[0]["content"] else "UNSAFE"

    policy = MockBackend("", responses=reply)
    out = tmp_path / "prefs.jsonl"
    counts = run_label(LabelConfig(prompts="redteam", limit=3, output=str(out), pairs="contrastive",
                                   constitution="hhh", principles="harmless"), policy=policy)
    recs = read_records(out)
    assert counts["pairs"] == 3 and all(r["chosen"][0]["content"] == "SAFE" for r in recs)
    assert all(r["rejected"][0]["content"] == "UNSAFE" and r["label_source"] == "contrastive" for r in recs)
    assert "least likely to be considered harmful" in recs[0]["system_prompts"]["chosen"]
    # The policy saw the user's turns under each system prompt, never the record's own system prompt twice.
    convs = [c for kind, cs in policy.calls if kind == "generate" for c in cs]
    assert len(convs) == 6 and all(c[0]["role"] == "system" and sum(m["role"] == "system" for m in c) == 1
                                   for c in convs)


def test_contrastive_answers_do_not_depend_on_the_batch(tmp_path):
    # Each prompt's two answers draw from seeds made from its id: another --batch-size gives the same pairs.
    def pairs(name, batch_size):
        run_label(LabelConfig(prompts="redteam", limit=5, output=str(tmp_path / name), pairs="contrastive",
                              constitution="hhh", principles="harmless", batch_size=batch_size, temperature=1.0),
                  policy=MockBackend(""))
        return {r["prompt_id"]: (r["chosen"][-1]["content"], r["rejected"][-1]["content"]) for r in read_records(tmp_path / name)}

    by_two = pairs("a.jsonl", 2)
    assert pairs("b.jsonl", 5) == by_two and len(set(by_two.values())) == 5


def test_judge_filter_records_the_judge_and_skips_what_it_rejects(tmp_path):
    def scores(conv, options):
        # The judge likes whichever answer mentions "good" (pairwise A/B question).
        text = conv[-2]["content"]
        a_good = text.index("(A)") < text.index("good answer") < text.index("(B)") if "(B)" in text else True
        return {"A": math.log(0.9 if a_good else 0.1), "B": math.log(0.1 if a_good else 0.9)}

    judge = MockBackend("", option_logprobs=scores)
    out = tmp_path / "prefs.jsonl"
    run_label(LabelConfig(prompts=str(_critique_file(tmp_path)), output=str(out), pairs="revision",
                          judge_filter=True, constitution="hhh", principles="harmless"), feedback=judge)
    kept = read_records(out)
    assert len(kept) == 3 and all(r["judge_p_chosen"] == pytest.approx(0.9) for r in kept)
    assert not skipped_path(out).exists() or read_records(skipped_path(out)) == []
    with pytest.raises(CAIError, match="--judge-filter is for"):
        LabelConfig(prompts="x", output="y", judge_filter=True).check()
