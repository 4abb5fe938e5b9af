"""Prompt sources: every file format, field detection, HH-RLHF transcripts, the built-in sets, ids,
shuffling and limits, and the one-line errors."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from collections import Counter
from importlib import resources

import pytest

from cai.errors import CAIError
from cai.sources import Prompt, list_builtin_prompt_sets, load_prompts


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _user(text):
    return [{"role": "user", "content": text}]


# --- formats -------------------------------------------------------------------------------------

def test_jsonl_prompt_field_and_meta(tmp_path):
    f = _write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Hi there", "category": "a"}, {"prompt": "Bye", "category": "b"}])
    ps = load_prompts(f)
    assert [p.messages for p in ps] == [_user("Hi there"), _user("Bye")]
    assert [p.meta for p in ps] == [{"category": "a"}, {"category": "b"}]
    assert all(isinstance(p, Prompt) and p.source == str(f) for p in ps)


def test_jsonl_messages_keep_multi_turn_and_drop_trailing_answer(tmp_path):
    multi = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"},
             {"role": "assistant", "content": "Hi!"}, {"role": "user", "content": "Tell me a joke"}]
    sft = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]
    ps = load_prompts(_write_jsonl(tmp_path / "m.jsonl", [{"messages": multi}, {"messages": sft}]))
    assert ps[0].messages == multi
    assert ps[1].messages == _user("What is 2+2?")
    assert ps[1].meta["reference_answer"] == "4"


def test_conversation_without_user_turn_is_an_error(tmp_path):
    f = _write_jsonl(tmp_path / "bad.jsonl", [{"messages": [{"role": "assistant", "content": "hello"}]}])
    with pytest.raises(CAIError, match="row 1.*no user turn"):
        load_prompts(f)


def test_json_list_of_records_strings_and_wrapper(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"question": "Why?"}, {"question": "How?"}]))
    (tmp_path / "b.json").write_text(json.dumps(["One", "Two", "Three"]))
    (tmp_path / "c.json").write_text(json.dumps({"version": 1, "data": [{"instruction": "Sort", "input": "3 1 2"}]}))
    assert [p.messages[0]["content"] for p in load_prompts(tmp_path / "a.json")] == ["Why?", "How?"]
    assert [p.messages[0]["content"] for p in load_prompts(tmp_path / "b.json")] == ["One", "Two", "Three"]
    # Alpaca: the separate "input" is appended to the instruction rather than lost.
    assert load_prompts(tmp_path / "c.json")[0].messages == _user("Sort\n\n3 1 2")


def test_json_lines_saved_as_json(tmp_path):
    f = tmp_path / "lines.json"
    _write_jsonl(f, [{"prompt": "x"}, {"prompt": "y"}])
    assert len(load_prompts(f)) == 2


def test_csv_detects_goal_and_field_overrides(tmp_path):
    f = tmp_path / "b.csv"
    with open(f, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["goal", "target", "note"])
        w.writerow(["Say hello, politely", "Sure", "n1"])
        w.writerow(["Count to three", "Sure", "n2"])
    ps = load_prompts(f)
    assert [p.messages[0]["content"] for p in ps] == ["Say hello, politely", "Count to three"]
    assert ps[0].meta == {"target": "Sure", "note": "n1"}
    assert [p.messages[0]["content"] for p in load_prompts(f, field="note")] == ["n1", "n2"]


def test_csv_with_bom_and_tsv(tmp_path):
    f = tmp_path / "bom.csv"
    f.write_text("\ufeffBehavior,ContextString\nSummarise the text,\nTranslate it,Le chat dort.\n", encoding="utf-8")
    ps = load_prompts(f)
    assert ps[0].messages == _user("Summarise the text")
    # HarmBench contextual rows: the context comes first, joined as HarmBench does.
    assert ps[1].messages == _user("Le chat dort.\n\n---\n\nTranslate it")
    t = tmp_path / "x.tsv"
    t.write_text("text\tlang\nGood morning\ten\n", encoding="utf-8")
    assert load_prompts(t)[0].meta == {"lang": "en"}


def test_txt_one_prompt_per_line(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("First prompt\n\n  Second prompt  \nThird\n", encoding="utf-8")
    ps = load_prompts(f)
    assert [p.messages for p in ps] == [_user("First prompt"), _user("Second prompt"), _user("Third")]
    with pytest.raises(CAIError, match="plain text"):
        load_prompts(f, field="prompt")


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    f = tmp_path / "p.parquet"
    pq.write_table(pa.table({"instruction": ["Write a poem", "Name a colour"], "source": ["x", "y"]}), f)
    ps = load_prompts(f)
    assert [p.messages[0]["content"] for p in ps] == ["Write a poem", "Name a colour"]
    assert ps[1].meta == {"source": "y"}


def test_gzipped_jsonl(tmp_path):
    f = tmp_path / "p.jsonl.gz"
    with gzip.open(f, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps({"text": "compressed prompt"}) + "\n")
    ps = load_prompts(f)
    assert ps[0].messages == _user("compressed prompt")
    assert ps[0].id.startswith("p-")  # the source name drops both suffixes


def test_sharegpt_and_turns(tmp_path):
    f = _write_jsonl(tmp_path / "s.jsonl", [
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
                           {"from": "human", "value": "How are you?"}]}])
    assert load_prompts(f)[0].messages == [{"role": "user", "content": "Hi"},
                                           {"role": "assistant", "content": "Hello"},
                                           {"role": "user", "content": "How are you?"}]
    g = _write_jsonl(tmp_path / "mt.jsonl", [{"question_id": 1, "turns": ["Write a poem.", "Now shorter."]}])
    p = load_prompts(g)[0]
    assert p.messages == _user("Write a poem.") and p.meta["later_turns"] == ["Now shorter."]


def test_quoted_dialogue_in_a_prompt_column_is_kept_literally(tmp_path):
    text = "Human: hi\n\nAssistant: hello\n\nContinue this dialogue."
    assert load_prompts(_write_jsonl(tmp_path / "q.jsonl", [{"prompt": text}]))[0].messages == _user(text)


# --- field detection and errors ------------------------------------------------------------------

def test_no_prompt_column_error_lists_columns(tmp_path):
    f = _write_jsonl(tmp_path / "odd.jsonl", [{"foo": "a", "bar": "b"}])
    with pytest.raises(CAIError) as e:
        load_prompts(f)
    msg = str(e.value)
    assert "'foo'" in msg and "'bar'" in msg and "--field" in msg and "\n" not in msg


def test_unknown_field_error_lists_columns(tmp_path):
    f = _write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "kind": "b"}])
    with pytest.raises(CAIError, match=r"no column 'nope'.*'prompt', 'kind'"):
        load_prompts(f, field="nope")
    assert load_prompts(f, field="KIND")[0].messages == _user("b")  # case-insensitive fallback


def test_record_missing_the_field_names_its_row(tmp_path):
    f = _write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}, {"other": "b"}])
    with pytest.raises(CAIError, match="row 2.*'prompt'"):
        load_prompts(f)


def test_empty_prompt_and_bad_json_name_the_row(tmp_path):
    with pytest.raises(CAIError, match="row 2.*empty"):
        load_prompts(_write_jsonl(tmp_path / "e.jsonl", [{"prompt": "a"}, {"prompt": "  "}]))
    f = tmp_path / "broken.jsonl"
    f.write_text('{"prompt": "a"}\n{"prompt": \n', encoding="utf-8")
    with pytest.raises(CAIError, match=r"broken.jsonl:2: not valid JSON"):
        load_prompts(f)


def test_iter_jsonl_numbers_lines_and_names_each_kind_of_bad_line(tmp_path):
    from cai.sources.readers import iter_jsonl

    f = tmp_path / "x.jsonl"
    f.write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n\n  \n{"a": "\xe2\x80\xa8"}\n')  # BOM, CRLF, blanks, U+2028
    assert list(iter_jsonl(f)) == [(1, {"a": 1}), (4, {"a": "\u2028"})]
    cases = [(b'{"a": 1}\n\n{"a": \n', r"x\.jsonl:3: not valid JSON \(.+\); one thing a line$"),
             (b'{"a": 1}\n[1, 2]\n', r"x\.jsonl:2: expected a JSON object, got a list; one thing a line$"),
             (b'{"a": 1}\n"s"\n', r"x\.jsonl:2: expected a JSON object, got a string; one thing a line$"),
             (b'{"a": 1}\n\n{"a": "caf\xe9"}\n', r"x\.jsonl:3: not UTF-8 text .*re-save the file as UTF-8")]
    for data, message in cases:
        f.write_bytes(data)
        with pytest.raises(CAIError, match=message) as e:
            list(iter_jsonl(f, "one thing a line"))
        assert "\n" not in str(e.value)
    f.write_bytes(b'"s"\n[1]\n')
    assert list(iter_jsonl(f, objects=False)) == [(1, "s"), (2, [1])]


@pytest.mark.parametrize("name,content", [("empty.jsonl", ""), ("empty.txt", "\n\n"), ("empty.csv", "prompt\n"),
                                          ("empty.json", "[]")])
def test_empty_source_is_a_one_line_error(tmp_path, name, content):
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(CAIError, match="no prompts found") as e:
        load_prompts(tmp_path / name)
    assert "\n" not in str(e.value)


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(CAIError, match="no such file or built-in prompt set.*redteam"):
        load_prompts(tmp_path / "nope.jsonl")
    (tmp_path / "p.xml").write_text("<a/>")
    with pytest.raises(CAIError, match="unknown prompt file type '.xml'"):
        load_prompts(tmp_path / "p.xml")
    with pytest.raises(CAIError, match="limit"):
        load_prompts("helpful", limit=0)


# --- HH-RLHF and the hub -------------------------------------------------------------------------

def test_hh_rlhf_first_human_turn(tmp_path):
    rows = [{"chosen": "\n\nHuman: How do I pick a lock?\n\nAssistant: Why?\n\nHuman: My own door.\n\nAssistant: Call a locksmith.",
             "rejected": "\n\nHuman: How do I pick a lock?\n\nAssistant: Why?\n\nHuman: My own door.\n\nAssistant: Use a pin."}]
    ps = load_prompts(f"hh-rlhf:{_write_jsonl(tmp_path / 'hh.jsonl', rows)}")
    assert ps[0].messages == _user("How do I pick a lock?")
    assert ps[0].id.startswith("hh-rlhf-hh-")


def test_hh_rlhf_shared_test_split(shared_data):
    src = f"hh-rlhf:{shared_data / 'hh_rlhf_harmless_base' / 'test.jsonl.gz'}"
    ps = load_prompts(src)
    assert len(ps) == 2312 and len({p.id for p in ps}) == 2312
    assert all(len(p.messages) == 1 and p.messages[0]["role"] == "user" for p in ps)
    assert not any("Assistant:" in p.messages[0]["content"] or "Human:" in p.messages[0]["content"] for p in ps)
    # The first record opens with this request (and continues with more turns we must not keep).
    with gzip.open(shared_data / "hh_rlhf_harmless_base" / "test.jsonl.gz", "rt", encoding="utf-8") as f:
        first = json.loads(f.readline())["chosen"]
    assert first.count("\n\nHuman:") > 1
    assert ps[0].messages[0]["content"] == first.split("\n\nHuman: ")[1].split("\n\nAssistant:")[0].strip()


def test_hh_rlhf_needs_transcripts(tmp_path):
    with pytest.raises(CAIError, match=r"no transcript column.*'prompt'"):
        load_prompts(f"hh-rlhf:{_write_jsonl(tmp_path / 'p.jsonl', [{'prompt': 'x'}])}")
    with pytest.raises(CAIError, match="not a Human:/Assistant: transcript"):
        load_prompts(f"hh-rlhf:{_write_jsonl(tmp_path / 'q.jsonl', [{'chosen': 'no turns here'}])}")


def test_hf_offline_is_a_one_line_error(monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(CAIError) as e:
        load_prompts("hf:cai-test/surely-not-cached-dataset:test")
    msg = str(e.value)
    assert "unreachable" in msg and "local" in msg and "\n" not in msg
    with pytest.raises(CAIError, match="hf:DATASET"):
        load_prompts("hf:a:b:c:d")


# --- built-in sets -------------------------------------------------------------------------------

def test_builtin_sets_are_listed():
    assert {"redteam", "helpful"} <= set(list_builtin_prompt_sets())


def test_builtin_redteam():
    ps = load_prompts("redteam")
    cats = Counter(p.meta["category"] for p in ps)
    assert len(ps) >= 200 and len(cats) >= 10 and min(cats.values()) >= 10
    multi = [p for p in ps if len(p.messages) > 1]
    assert len(multi) >= 20
    assert all([m["role"] for m in p.messages] == ["user", "assistant", "user"] for p in multi)
    framings = Counter(p.meta["framing"] for p in ps)
    assert {"role-play", "fiction", "ignore-instructions"} <= set(framings)
    assert all(p.id.startswith("redteam-") and p.source == "redteam" for p in ps)


def test_builtin_helpful():
    ps = load_prompts("helpful")
    cats = Counter(p.meta["category"] for p in ps)
    assert len(ps) >= 100 and len(cats) >= 8
    assert {"coding", "writing", "math", "cooking", "travel", "health", "science", "advice"} <= set(cats)


def test_a_union_of_builtin_sets_keeps_each_prompts_id_and_source():
    border, benign = load_prompts("borderline"), load_prompts("benign")
    both = load_prompts("borderline+benign")
    assert both == border + benign  # ids, messages and sources as loaded alone, in order
    assert [p.source for p in both] == [p.source for p in border + benign]
    assert [p.meta for p in both] == [p.meta for p in border + benign]
    # --limit counts across the parts: all 300 borderline prompts, then the first 150 benign ones.
    assert load_prompts("borderline+benign", limit=len(border) + 150) == border + benign[:150]
    assert load_prompts("borderline+benign", limit=5) == border[:5]
    shuffled = load_prompts("borderline+benign", shuffle=True, seed=1, limit=40)
    assert {p.id for p in shuffled} <= {p.id for p in both} and any(p.source == "benign" for p in shuffled)


def test_a_file_whose_name_holds_a_plus_is_that_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_jsonl(tmp_path / "benign+borderline.jsonl", [{"prompt": "From the file?"}])
    assert [p.messages for p in load_prompts("benign+borderline.jsonl")] == [_user("From the file?")]
    _write_jsonl(tmp_path / "a+b.jsonl", [{"prompt": "Also a file."}])
    assert [p.messages for p in load_prompts(str(tmp_path / "a+b.jsonl"))] == [_user("Also a file.")]
    with pytest.raises(CAIError, match="no such file"):
        load_prompts("c+d.jsonl")


@pytest.mark.parametrize("spec,message", [
    ("borderline+nope", "'nope' is not a built-in prompt set"),
    ("benign+benign", "prompt id 'benign-001' is in both benign and benign"),
])
def test_bad_unions_are_one_line_errors(spec, message):
    with pytest.raises(CAIError, match=message):
        load_prompts(spec)


@pytest.mark.parametrize("name", ["redteam", "helpful"])
def test_builtin_records_are_well_formed(name):
    ps = load_prompts(name)
    assert len({p.id for p in ps}) == len(ps)
    assert all(p.messages[-1]["role"] == "user" and all(m["content"].strip() for m in p.messages) for p in ps)
    assert len({json.dumps(p.messages) for p in ps}) == len(ps)  # no repeated prompts


def test_builtins_are_our_own_words(shared_data):
    """The shipped sets must not copy the public red-team data kept for tests."""
    def norm(s):
        return " ".join(s.lower().split()).rstrip(".?!")

    theirs = set()
    for path, col in [("advbench/harmful_behaviors.csv", "goal"), ("harmbench/harmbench_behaviors_text_val.csv", "Behavior"),
                      ("jailbreakbench/behaviors.csv", "Goal"), ("xstest/xstest_prompts.csv", "prompt"),
                      ("jailbreak_llms/forbidden_question_set.csv", "question")]:
        with open(shared_data / path, newline="", encoding="utf-8") as f:
            theirs |= {norm(r[col]) for r in csv.DictReader(f) if r.get(col)}
    assert len(theirs) > 1000
    written = ("redteam", "helpful", "borderline", "everyday", "benign")
    ours = {norm(m["content"]) for name in written for p in load_prompts(name) for m in p.messages}
    assert not ours & theirs
    # The other shipped sets are derived from public data on purpose (tests/test_prompt_sets.py),
    # with the upstream files and their licences under prompts/data/.
    derived = ("harmful-train", "self-instruct")
    shipped = {p.name for p in (resources.files("cai") / "prompts").iterdir()}
    assert shipped == {f"{name}.jsonl" for name in written + derived} | {"data"}


# --- ids, shuffle, limit -------------------------------------------------------------------------

def test_ids_stable_unique_and_independent_of_location(tmp_path):
    rows = [{"prompt": "alpha"}, {"prompt": "beta"}, {"prompt": "alpha"}, {"prompt": " alpha "}, {"prompt": "gamma"}]
    f = _write_jsonl(tmp_path / "p.jsonl", rows)
    a, b = load_prompts(f), load_prompts(f)
    assert [p.id for p in a] == [p.id for p in b]
    ids = [p.id for p in a]
    assert len(set(ids)) == len(ids)
    # Repeats (whitespace is not a difference) share the base id plus a suffix, in file order.
    assert ids[2] == ids[0] + "-2" and ids[3] == ids[0] + "-3"
    other = tmp_path / "elsewhere"
    other.mkdir()
    shutil.copy(f, other / "p.jsonl")
    assert [p.id for p in load_prompts(other / "p.jsonl")] == ids
    # A different file name is a different source, and the content is part of the id.
    shutil.copy(f, tmp_path / "q.jsonl")
    assert not set(ids) & {p.id for p in load_prompts(tmp_path / "q.jsonl")}
    assert ids[0] != ids[1]


def test_records_with_their_own_ids_keep_them(tmp_path):
    f = _write_jsonl(tmp_path / "p.jsonl", [{"id": 7, "prompt": "a"}, {"id": "x", "prompt": "b"}, {"id": "x", "prompt": "c"}])
    assert [p.id for p in load_prompts(f)] == ["7", "x", "x-2"]


def test_shuffle_seed_and_limit(tmp_path):
    f = _write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"prompt {i}"} for i in range(50)])
    plain = load_prompts(f)
    by_id = {p.id: p.messages for p in plain}
    s1, s1b, s2 = (load_prompts(f, shuffle=True, seed=s) for s in (1, 1, 2))
    assert [p.id for p in s1] == [p.id for p in s1b]
    assert [p.id for p in s1] != [p.id for p in s2] != [p.id for p in plain]
    assert sorted(p.id for p in s1) == sorted(by_id)
    assert all(by_id[p.id] == p.messages for p in s1)  # an id follows its prompt through shuffling
    lim = load_prompts(f, shuffle=True, seed=1, limit=5)
    assert [p.id for p in lim] == [p.id for p in s1[:5]]
    assert [p.id for p in load_prompts(f, limit=3)] == [p.id for p in plain[:3]]
    assert len(load_prompts(f, limit=500)) == 50


def test_limit_without_shuffle_does_not_read_past_the_limit(tmp_path):
    f = _write_jsonl(tmp_path / "p.jsonl", [{"prompt": "ok"}, {"prompt": "ok too"}, {"prompt": ""}])
    assert len(load_prompts(f, limit=2)) == 2
    with pytest.raises(CAIError, match="row 3"):
        load_prompts(f, limit=2, shuffle=True)
