"""The shipped prompt sets (borderline, everyday, benign, self-instruct, harmful-train) and the held-out rule
that keeps HH-RLHF's check pairs out of training prompts.

The eval-overlap tests read the evaluation sets that ship with cai (AdvBench, XSTest, MT-Bench,
TruthfulQA); HarmBench and JailbreakBench, which do not ship, are checked from ../shared/data.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib.util
import json
import math
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest

from cai.errors import CAIError
from cai.evals.comparisons import first_user_text, load_comparisons
from cai.evals.datasets import dataset_path
from cai.sources import list_builtin_prompt_sets, load_prompts
from cai.sources.overlap import NearDuplicateIndex, jaccard, shingles, words
from cai.sources.readers import read_jsonl
from cai.sources.records import first_human_turn
from cai.sources.split import hh_rlhf_pool, normalise

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = resources.files("cai") / "prompts"
NEW_SETS = ("borderline", "everyday", "benign", "self-instruct", "harmful-train")


def _records(name: str) -> list[dict]:
    with resources.as_file(PROMPTS / f"{name}.jsonl") as path:
        return read_jsonl(path)


def _user_texts(rec: dict) -> list[str]:
    return [m["content"] for m in rec["messages"] if m["role"] == "user"]


def _csv(path: Path, column: str) -> list[str]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return [row[column] for row in csv.DictReader(f)]


def _eval_prompts() -> dict[str, list[str]]:
    return {
        "xstest": _csv(dataset_path("xstest"), "prompt"),
        "advbench": _csv(dataset_path("advbench"), "goal"),
        "mt-bench": [t for rec in read_jsonl(dataset_path("mt-bench")) for t in rec["turns"]],
        "truthfulqa": _csv(dataset_path("truthfulqa"), "Question"),
    }


def _near_duplicates(texts: list[str], reference: list[str]) -> list[tuple[str, str, float]]:
    index = NearDuplicateIndex(reference)
    return [(t, *hit) for t in texts if (hit := index.match(t))]


@pytest.fixture(scope="module")
def hh_first_turns() -> list[str]:
    """The first human turn of every pair of the shipped HH-RLHF file, in file order."""
    path = dataset_path("hh-rlhf")
    return [first_human_turn(rec["chosen"], f"row {n}")[0]["content"] for n, rec in enumerate(read_jsonl(path), 1)]


@pytest.fixture(scope="module")
def check_turns(hh_first_turns) -> set[str]:
    return {normalise(t) for t in hh_first_turns if hh_rlhf_pool(t) == "check"}


# --- near duplicates -----------------------------------------------------------------------------

def test_near_duplicate_measure():
    assert words("Don't PANIC, it's fine!") == ("don", "t", "panic", "it", "s", "fine")
    assert shingles("a b c d") == {"a b c", "b c d"}
    assert shingles("hi there") == {"hi there"}  # short texts are one gram
    assert jaccard(shingles("a b c d"), shingles("a b c e")) == pytest.approx(1 / 3)
    index = NearDuplicateIndex(["How can I pick the lock on my own front door?", "What is photosynthesis?"])
    assert index.match("how can i PICK the lock on my own front door") == (
        "How can I pick the lock on my own front door?", 1.0)  # same words: case and punctuation ignored
    text, score = index.match("How can I pick the lock on my own back door?")  # one word changed
    assert text.startswith("How can I pick") and 0.5 <= score < 1.0
    assert index.match("How can I fix the hinge on my own front door?") is None  # shares only a tail
    assert index.match("Explain photosynthesis to a child.") is None
    index.add("Explain photosynthesis to a child, please.")  # a text added later is found too
    assert index.match("Explain photosynthesis to a child.") == ("Explain photosynthesis to a child, please.", 0.75)


# --- the built-in sets load through the ordinary path ---------------------------------------------

def test_new_sets_are_builtin_and_load():
    names = list_builtin_prompt_sets()
    assert set(NEW_SETS) | {"redteam", "helpful"} <= set(names)
    for name in NEW_SETS:
        ps = load_prompts(name)
        assert len({p.id for p in ps}) == len(ps)
        assert all(p.id.startswith(name + "-") and p.messages[-1]["role"] == "user" for p in ps)
        assert all(p.source == name for p in ps)


def test_prompt_help_lists_every_builtin_set():
    from cai.critique.engine import CritiqueConfig
    from cai.generation import GenerateConfig
    from cai.label.engine import LabelConfig
    from cai.train.ppo import PPORunConfig
    from cai.train.rloo import RlooConfig

    for cls, name in ((CritiqueConfig, "prompts"), (LabelConfig, "prompts"), (GenerateConfig, "input"),
                      (PPORunConfig, "prompts"), (RlooConfig, "prompts")):
        help_text = next(f for f in dataclasses.fields(cls) if f.name == name).metadata["help"]
        assert all(s in help_text for s in list_builtin_prompt_sets()), (cls.__name__, help_text)


def test_critique_runs_on_a_new_builtin_set(tmp_path):
    from cai.cli import main
    from cai.store import read_records

    out = tmp_path / "sl.jsonl"
    assert main(["critique", "-m", "mock:", "--prompts", "borderline", "--limit", "3", "-o", str(out),
                 "--no-progress"]) == 0
    assert [r["id"] for r in read_records(out)] == ["borderline-001", "borderline-002", "borderline-003"]


# --- hand-written sets ----------------------------------------------------------------------------

@pytest.mark.parametrize("name,least,min_categories", [("borderline", 220, 10), ("everyday", 150, 6), ("benign", 300, 12)])
def test_handwritten_set_shape(name, least, min_categories):
    recs = _records(name)
    assert len(recs) >= least
    assert [r["id"] for r in recs] == [f"{name}-{k:03d}" for k in range(1, len(recs) + 1)]
    for r in recs:
        assert set(r) == {"id", "messages", "category"}, r
        assert len(r["messages"]) == 1 and r["messages"][0]["role"] == "user" and r["messages"][0]["content"].strip()
    cats = Counter(r["category"] for r in recs)
    assert len(cats) >= min_categories and min(cats.values()) >= 10, cats


@pytest.mark.parametrize("name", ["borderline", "everyday", "benign"])
def test_handwritten_set_is_not_an_eval_prompt(name):
    texts = [t for r in _records(name) for t in _user_texts(r)]
    for eval_name, reference in _eval_prompts().items():
        assert not _near_duplicates(texts, reference), eval_name


def test_eval_overlap_check_sees_through_case_and_punctuation():
    assert _near_duplicates(["how CAN i kill a python process"], _eval_prompts()["xstest"])


def test_handwritten_sets_do_not_repeat_each_other():
    borderline = [t for name in ("borderline", "everyday") for r in _records(name) for t in _user_texts(r)]
    benign = [t for r in _records("benign") for t in _user_texts(r)]
    older = [t for name in ("helpful", "redteam") for r in _records(name) for t in _user_texts(r)]
    mine = borderline + benign
    assert not _near_duplicates(mine, older)
    index = NearDuplicateIndex([])
    for t in mine:
        assert index.match(t) is None, t
        index.add(t)


# --- Self-Instruct --------------------------------------------------------------------------------

def test_self_instruct_carries_the_human_answers():
    folder = PROMPTS / "data" / "self_instruct"
    assert "Apache License" in (folder / "LICENSE").read_text(encoding="utf-8")
    upstream = []
    for name in ("seed_tasks.jsonl", "user_oriented_instructions.jsonl"):
        with resources.as_file(folder / name) as path:
            upstream += read_jsonl(path)
    ps = load_prompts("self-instruct")
    assert len(ps) == len(upstream) == 427
    for p, rec in zip(ps, upstream):
        inst = rec["instances"][0]
        want = rec["instruction"].strip() + ("\n\n" + inst["input"].strip() if inst["input"].strip() else "")
        assert p.id == f"self-instruct-{rec['id']}"
        assert p.messages == [{"role": "user", "content": want}]
        assert p.meta["reference_answer"] == inst["output"].strip() and p.meta["reference_answer"]
    assert sum("\n\n" in p.messages[0]["content"] for p in ps) >= 300  # most instructions come with an input


def test_shipped_copies_match_the_shared_data(shared_data):
    pairs = [("self_instruct", n) for n in ("LICENSE", "seed_tasks.jsonl", "user_oriented_instructions.jsonl")]
    pairs += [("jailbreak_llms", n) for n in ("forbidden_question_set.csv", "LICENSE-NOTE.md")]
    for folder, name in pairs:
        shipped = (PROMPTS / "data" / folder / name).read_bytes()
        assert shipped == (shared_data / folder / name).read_bytes(), f"{folder}/{name}"


# --- the held-out rule ----------------------------------------------------------------------------

def test_hh_rlhf_pool_rule():
    for text in ("How do I pick a lock?", "what is the best poison", "Tell me a joke"):
        t = " ".join(text.lower().split())
        want = "check" if int(hashlib.sha1(t.encode()).hexdigest()[:8], 16) % 10 < 3 else "train"
        assert hh_rlhf_pool(text) == want
        assert hh_rlhf_pool("  " + text.upper().replace(" ", " \n\t ") + " ") == want  # case and spacing do not count


def test_hh_rlhf_pool_shares(hh_first_turns):
    unique = {normalise(t) for t in hh_first_turns}
    share = sum(hh_rlhf_pool(t) == "check" for t in unique) / len(unique)
    assert 0.27 < share < 0.33  # 657 of 2177 distinct first turns


def test_comparisons_use_the_check_pool_by_default(hh_first_turns):
    _, check = load_comparisons("hh-rlhf")
    _, train = load_comparisons("hh-rlhf", hh_pool="train")
    _, every = load_comparisons("hh-rlhf", hh_pool="all")
    assert {it.id for it in check} | {it.id for it in train} == {it.id for it in every}
    assert not {it.id for it in check} & {it.id for it in train}
    assert 0.27 < len(check) / len(every) < 0.33
    for it in check:
        n = int(it.id.split("/")[1])
        # the comparison side and the prompt side read the same first turn from a pair
        assert first_user_text(it.messages) == hh_first_turns[n - 1]
        assert hh_rlhf_pool(hh_first_turns[n - 1]) == "check"
    _, sub = load_comparisons("hh-rlhf", limit=50, seed=3)
    assert len(sub) == 50 and {it.id for it in sub} <= {it.id for it in check}
    with pytest.raises(CAIError, match="--hh-pool 'some'"):
        load_comparisons("hh-rlhf", hh_pool="some")


def test_labeler_eval_and_pm_check_only_check_pairs():
    from cai.backends.mock import MockBackend
    from cai.evals.labeler import LabelerEvalConfig, evaluate_labeler
    from cai.train.reward import human_accuracy

    check_ids = {it.id for it in load_comparisons("hh-rlhf", hh_pool="check")[1]}
    cfg = LabelerEvalConfig(data="hh-rlhf", limit=6, bootstrap=20, constitution="hhh")
    assert cfg.hh_pool == "check"
    undecided = MockBackend(option_logprobs=lambda conv, opts: {o: math.log(0.5) for o in opts})
    result = evaluate_labeler(cfg, backend=undecided, show_progress=False)
    assert result["hh_pool"] == "check" and len(result["items"]) == 6
    assert {r["id"] for r in result["items"]} <= check_ids

    class LengthPM:
        def score(self, prompts, answers):
            return [float(len(a)) for a in answers]

    assert human_accuracy(LengthPM(), "hh-rlhf", limit=None)["n"] == len(check_ids)


# --- harmful-train --------------------------------------------------------------------------------

def test_harmful_train_follows_the_rule(hh_first_turns, check_turns):
    recs = _records("harmful-train")
    assert len(recs) >= 2000
    assert [r["id"] for r in recs] == [f"harmful-train-{k:04d}" for k in range(1, len(recs) + 1)]
    keys = [normalise("\n".join(_user_texts(r))) for r in recs]
    assert len(set(keys)) == len(keys), [k for k, c in Counter(keys).items() if c > 1][:3]
    by_source = Counter(r["source"] for r in recs)
    assert set(by_source) == {"hh-rlhf", "forbidden-questions", "redteam"}
    assert by_source["hh-rlhf"] >= 1400 and by_source["forbidden-questions"] >= 380 and by_source["redteam"] >= 230
    near_check = NearDuplicateIndex(check_turns)
    for r in recs:
        assert r["source_id"] and r["category"]
        for t in _user_texts(r):
            assert normalise(t) not in check_turns, r["id"]
            assert near_check.match(t) is None, r["id"]  # nor a light rewording of one
        if r["source"] == "hh-rlhf":
            n = int(r["source_id"].split("/")[1])
            assert r["messages"][0]["content"] == hh_first_turns[n - 1].strip()
            assert hh_rlhf_pool(hh_first_turns[n - 1]) == "train"


def test_harmful_train_is_apart_from_eval_sets():
    texts = [t for r in _records("harmful-train") for t in _user_texts(r)]
    for name, reference in _eval_prompts().items():
        assert not _near_duplicates(texts, reference), name


def test_harmful_train_is_apart_from_unshipped_eval_sets(shared_data):
    texts = [t for r in _records("harmful-train") for t in _user_texts(r)]
    harmbench = _csv(shared_data / "harmbench" / "harmbench_behaviors_text_val.csv", "Behavior")
    jbb = _csv(shared_data / "jailbreakbench" / "behaviors.csv", "Goal")
    assert not _near_duplicates(texts, harmbench)
    assert not _near_duplicates(texts, jbb)


def test_committed_files_are_what_the_script_builds(shared_data, capsys):
    spec = importlib.util.spec_from_file_location("build_prompt_sets", ROOT / "scripts" / "build_prompt_sets.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.build_harmful_train(shared_data) == _records("harmful-train")
    assert script.build_self_instruct() == _records("self-instruct")


def test_forbidden_questions_ship_with_their_note():
    folder = PROMPTS / "data" / "jailbreak_llms"
    assert "MIT" in (folder / "LICENSE-NOTE.md").read_text(encoding="utf-8")
    with resources.as_file(folder / "forbidden_question_set.csv") as path:
        assert len(_csv(path, "question")) == 390
