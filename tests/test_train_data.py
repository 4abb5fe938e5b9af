"""Training data for cai sft / cai dpo: the record shapes cai writes, weights, and one-line errors."""

from __future__ import annotations

import json

import pytest

from cai.errors import CAIError
from cai.train.data import DataSpec, load_mix

PROMPT = [{"role": "user", "content": "How do I pick a lock?"}]
FINAL = [{"role": "assistant", "content": "I can't help with that, but a locksmith can."}]
FIRST = [{"role": "assistant", "content": "Use a tension wrench."}]


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def critique_record(i, revised=True):
    """The shape cai critique writes (cai.critique.engine._Engine._record)."""
    final = FINAL if revised else FIRST
    return {"id": str(i), "prompt": PROMPT, "initial": FIRST[0]["content"], "steps": [], "final": final[0]["content"],
            "revised": revised, "messages": PROMPT + final, "completion": final, "chosen": final, "rejected": FIRST}


def generate_record(i):
    """The shape cai generate writes: ``completion`` there is token usage, not an answer."""
    return {"id": str(i), "messages": PROMPT + FINAL, "source": "helpful",
            "completion": {"prompt_tokens": 5, "completion_tokens": 9, "finish_reason": "stop"}}


def test_data_spec_weights_and_paths_with_colons():
    assert DataSpec.parse("a.jsonl").weight == 1.0
    assert DataSpec.parse("a.jsonl:0.5") == DataSpec(DataSpec.parse("a.jsonl").path, 0.5)
    assert str(DataSpec.parse("dir:x/a.jsonl").path) == "dir:x/a.jsonl"  # not a number: part of the path
    with pytest.raises(CAIError, match="weight"):
        DataSpec.parse("a.jsonl:-1")


def test_sft_reads_critique_generate_messages_and_prompt_completion(tmp_path):
    crit = _write(tmp_path / "sl.jsonl", [critique_record(i) for i in range(4)])
    gen = _write(tmp_path / "helpful.jsonl", [generate_record(i) for i in range(4)])
    plain = _write(tmp_path / "plain.jsonl", [{"prompt": "Hi", "completion": "Hello!"}])
    examples, files = load_mix([crit, gen + ":0.5", plain + ":2"], "sft", seed=0)
    assert [f.used for f in files] == [4, 2, 2]
    assert len(examples) == 8
    for ex in examples:
        assert set(ex) == {"prompt", "completion"}
        assert ex["completion"][-1]["role"] == "assistant" and ex["prompt"][-1]["role"] == "user"
    assert examples[0] == {"prompt": PROMPT, "completion": FINAL}
    assert examples[4] == {"prompt": PROMPT, "completion": FINAL}  # generate: last turn split off messages
    assert examples[-1]["prompt"] == [{"role": "user", "content": "Hi"}]
    assert files[0].sha256 and len(files[0].sha256) == 64


@pytest.mark.parametrize("line, message", [
    ({"text": "hello"}, r"bad\.jsonl:2: an SFT record needs 'messages'"),
    ({"messages": PROMPT}, r"bad\.jsonl:2: 'messages' must end with an assistant turn"),
    ({"prompt": "x", "completion": ""}, r"bad\.jsonl:2: the completion is empty"),
])
def test_sft_bad_records_name_file_and_line(tmp_path, line, message):
    bad = _write(tmp_path / "bad.jsonl", [critique_record(0), line])
    with pytest.raises(CAIError, match=message):
        load_mix([bad], "sft", seed=0)


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(CAIError, match="file not found"):
        load_mix([str(tmp_path / "nope.jsonl")], "sft", seed=0)
    (tmp_path / "broken.jsonl").write_text('{"messages": [}\n')
    with pytest.raises(CAIError, match=r"broken\.jsonl:1: not valid JSON \(.+\); each line of a --data file is one"):
        load_mix([str(tmp_path / "broken.jsonl")], "sft", seed=0)
    (tmp_path / "broken.jsonl").write_text(json.dumps(critique_record(0)) + '\n\n["messages"]\n')
    with pytest.raises(CAIError, match=r"broken\.jsonl:3: expected a JSON object, got a list; each line of a --data"):
        load_mix([str(tmp_path / "broken.jsonl")], "sft", seed=0)
    with pytest.raises(CAIError, match="no training data"):
        load_mix([], "sft", seed=0)


def test_preferences_from_label_and_critique_files(tmp_path):
    label = _write(tmp_path / "prefs.jsonl", [
        {"id": "a:0-1", "prompt": PROMPT, "chosen": FINAL, "rejected": FIRST, "p_chosen": 0.9, "tie": False},
        {"id": "b:0-1", "prompt": PROMPT, "chosen": FINAL, "rejected": FIRST, "p_chosen": 0.55, "tie": False},
    ])
    crit = _write(tmp_path / "sl.jsonl", [critique_record(0), critique_record(1, revised=False)])
    examples, files = load_mix([label, crit], "preference", seed=0)
    assert [ex["p_chosen"] for ex in examples] == [0.9, 0.55, 1.0]  # critique pairs are certain
    assert files[1].dropped == {"identical": 1}  # an unrevised answer is no preference
    # --min-margin reads |2 p_chosen - 1| as cai label's does: 0.9 is 0.8 from a tie, 0.55 only 0.1.
    examples, files = load_mix([label], "preference", seed=0, min_margin=0.2)
    assert [ex["p_chosen"] for ex in examples] == [0.9] and files[0].dropped == {"below_min_margin": 1}
    edge = _write(tmp_path / "edge.jsonl", [
        {"id": f"e:{i}", "prompt": PROMPT, "chosen": FINAL, "rejected": FIRST, "p_chosen": p, "tie": False}
        for i, p in enumerate([0.75, 0.25, 0.5, 0.875])])
    examples, _ = load_mix([edge], "preference", seed=0, min_margin=0.5)  # at most M is dropped, as in cai label
    assert [ex["p_chosen"] for ex in examples] == [0.875]
    examples, _ = load_mix([edge], "preference", seed=0, min_margin=0.0)  # 0 drops exact ties only
    assert sorted(ex["p_chosen"] for ex in examples) == [0.25, 0.75, 0.875]
    assert len(load_mix([edge], "preference", seed=0)[0]) == 4  # no --min-margin keeps every pair


def test_preference_bad_records(tmp_path):
    bad = _write(tmp_path / "p.jsonl", [{"prompt": "x", "chosen": "y"}])
    with pytest.raises(CAIError, match=r"p\.jsonl:1: a preference record needs .*missing rejected"):
        load_mix([bad], "preference", seed=0)
    bad = _write(tmp_path / "q.jsonl", [{"prompt": "x", "chosen": "y", "rejected": "z", "p_chosen": 1.5}])
    with pytest.raises(CAIError, match=r"q\.jsonl:1: 'p_chosen' must be a probability"):
        load_mix([bad], "preference", seed=0)
    # JSON's true reads as the int 1 in Python; it is no probability, for dpo (load_mix) or reward (load_pairs).
    from cai.train.prefdata import load_pairs

    bad = _write(tmp_path / "t.jsonl", [{"prompt": "x", "chosen": "y", "rejected": "z", "p_chosen": True}])
    with pytest.raises(CAIError, match=r"t\.jsonl:1: 'p_chosen' must be a probability in \[0, 1\], got True"):
        load_mix([bad], "preference", seed=0)
    with pytest.raises(CAIError, match=r"t\.jsonl:1: p_chosen must be a probability in \[0, 1\], got True"):
        load_pairs([bad])
