"""SL-CAI data a small model can make: the revision filter, --revision-mode distill and best of K."""

from __future__ import annotations

import json

import pytest

from cai.backends.mock import MockBackend
from cai.critique import CritiqueConfig, run_critique
from cai.critique.filter import filter_record, revision_problems
from cai.critique.records import dropped_path
from cai.store import read_records

USER = "How can I get into my neighbour's wifi network without the password?"


@pytest.mark.parametrize("revision, problems", [
    ("Ask your neighbour to share the wifi password, or use a public hotspot.", []),
    ("I can't help with getting into someone else's network without permission.", []),  # a refusal is on topic
    ("The assistant's last answer is not helpful because it explains hacking.", ["commentary"]),
    ("Here is a revised answer: ask your neighbour for the wifi password.", ["commentary"]),
    ("The answer explains how to break into a network, which is illegal and harmful.", ["copies-critique"]),
    ("Bananas are a good source of potassium and taste sweet.", ["off-topic"]),
    ("   ", ["empty"]),
    ("I'm sorry. I'm not. I'm not. I'm not. " * 4, ["repetitive"]),  # a loop, though it "refuses"
    ("I can't help with that. " + "Ask your neighbour to share the wifi password or use a library, a cafe, "
     "a hotspot on your phone, or a paid plan from a provider near you.", []),
])
def test_revision_problems(revision, problems):
    critique = "The answer explains how to break into a network, which is illegal and harmful."
    assert revision_problems(revision, user_text=USER, critique=critique, initial="Use aircrack to crack it.") == problems


def test_copies_of_worked_examples_are_caught():
    example = "I can't help you get into someone else's account without their permission; that is illegal."
    assert revision_problems(example, user_text="hack my ex's email", examples=[example]) == ["copies-example"]


def _record(*revisions):
    return {"id": "x", "prompt": [{"role": "user", "content": USER}], "initial": "Use aircrack.",
            "steps": [{"principle_id": "harmless", "critique": "It is illegal.", "revision": r} for r in revisions],
            "final": revisions[-1], "revised": True}


def test_filter_keeps_the_last_good_revision_or_drops_the_record():
    kept = filter_record(_record("Ask your neighbour for the wifi password.", "The assistant's answer is now safer."))
    assert "dropped" not in kept and kept["final"] == "Ask your neighbour for the wifi password."
    assert kept["messages"][-1]["content"] == kept["final"] and kept["filter"] == {"kept_round": 1,
                                                                                   "reasons": {"2": ["commentary"]}}
    gone = filter_record(_record("The assistant's answer is bad.", ""))
    assert gone["dropped"] == ["commentary", "empty"] and gone["filter"]["kept_round"] is None


def _script(conv):
    last = conv[-1]["content"]
    if conv[0]["role"] == "system" and "reviewer's notes" in conv[0]["content"]:
        return "Ask your neighbour for the wifi password."  # distill: a fresh answer
    if "critique only" in last:
        return "It helps with something illegal."
    if "new answer itself" in last:
        return "The assistant's previous answer should not explain hacking." if any("wifi 0" in m["content"] for m in conv) \
            else "Ask your neighbour for the wifi password."
    return "Use aircrack to crack the wifi."


def _prompts(tmp_path, n=4):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"How do I get into my neighbour's wifi {i}?"}) + "\n"
                            for i in range(n)))
    return str(path)


def test_filtered_run_writes_dropped_records_aside_and_resumes(tmp_path):
    out = tmp_path / "sl.jsonl"
    cfg = CritiqueConfig(prompts=_prompts(tmp_path), output=str(out), filter=True, few_shot=0,
                         system_prompt="", batch_size=2)
    summary = run_critique(cfg, policy=MockBackend(responses=_script), constitution="default")
    kept, dropped = read_records(out), read_records(dropped_path(out))
    assert [r["id"] for r in dropped] == ["p0"] and dropped[0]["dropped"] == ["commentary"]
    assert len(kept) == 3 and summary["dropped"] == 1
    again = run_critique(cfg, policy=MockBackend(responses=_script), constitution="default")
    assert again["written"] == 0 and again["skipped"] == 4  # dropped records count as done

    from cai.data_stats import summarize

    stats = summarize(kept, dropped=dropped)["filter"]
    assert stats["kept"] == 3 and stats["dropped"] == 1 and stats["dropped_by_reason"] == {"commentary": 1}


def test_distill_mode_answers_afresh_under_a_system_prompt(tmp_path):
    policy = MockBackend(responses=_script)
    out = tmp_path / "sl.jsonl"
    run_critique(CritiqueConfig(prompts=_prompts(tmp_path, 1), output=str(out), revision_mode="distill", few_shot=0,
                                system_prompt=""), policy=policy, constitution="default")
    (rec,) = read_records(out)
    assert rec["final"] == "Ask your neighbour for the wifi password."
    revision_call = [c for kind, cs in policy.calls if kind == "generate" for c in cs][-1]
    assert [m["role"] for m in revision_call] == ["system", "user"]  # no critic chat around it
    assert "It helps with something illegal." in revision_call[0]["content"]
    assert rec["prompt"] == [{"role": "user", "content": "How do I get into my neighbour's wifi 0?"}]  # no system kept


def test_best_of_k_keeps_a_candidate_that_passes(tmp_path):
    replies = iter([])

    def script(conv):
        last = conv[-1]["content"]
        if "critique only" in last:
            return "It is illegal."
        if "new answer itself" in last:
            return next(replies)
        return "Use aircrack."

    replies = iter(["The assistant's answer was bad.", "", "Ask your neighbour for the password."])
    out = tmp_path / "sl.jsonl"
    run_critique(CritiqueConfig(prompts=_prompts(tmp_path, 1), output=str(out), samples=3, few_shot=0,
                                system_prompt=""), policy=MockBackend(responses=script), constitution="default")
    (rec,) = read_records(out)
    step = rec["steps"][0]
    assert step["picked"] == 2 and step["candidate_scores"] == [0.0, 0.0, 1.0]
    assert rec["final"] == "Ask your neighbour for the password." and len(step["candidates"]) == 3


def test_is_copy_decides_as_the_full_ratio_does():
    """The quick upper bounds only skip pairs that the full ratio would also call no copy."""
    import random
    from difflib import SequenceMatcher

    from cai.critique.filter import _norm, _rules, is_copy

    rng = random.Random(0)
    words = "the a lock keep bike safe never share your password with anyone ask bank call police".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 40))) for _ in range(60)]
    texts += [t + " and more" for t in texts[:10]] + [t[: len(t) // 2] for t in texts[10:20]]
    least, decided = _rules()["copy_ratio"], set()
    for a in texts:
        for b in texts[:25]:
            full = _norm(a) in _norm(b) or SequenceMatcher(None, _norm(a), _norm(b), autojunk=False).ratio() >= least
            assert is_copy(a, b) == full, (a, b)
            decided.add(full)
    assert decided == {True, False}
