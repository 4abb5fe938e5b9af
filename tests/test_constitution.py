"""Constitutions: built-ins, our YAML schema and its errors, content hash."""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
from pathlib import Path

import pytest
import yaml

from cai.constitution import (
    Constitution,
    ConstitutionError,
    Example,
    PreferenceExample,
    Principle,
    builtin_path,
    list_constitutions,
    load_constitution,
)
from cai.errors import CAIError

HARMS = ["harmful", "unethical", "racis", "sexis", "toxic", "dangerous", "illegal", "insensitive",
         "child", "manipulat", "crime", "privacy"]


def test_builtins_are_listed_and_load():
    assert list_constitutions() == ["customer-service", "default", "hhh", "red-team"]
    for name in list_constitutions():
        c = load_constitution(name)
        assert isinstance(c, Constitution)
        assert c.name == name and c.source == f"builtin:{name}" and c.format == "yaml"
        assert re.fullmatch(r"[0-9a-f]{64}", c.hash)
        for p in c.principles:
            assert isinstance(p, Principle) and p.critique and p.revision
            # Requests a small model can follow: a critique request asks about the answer, a
            # revision request asks for a rewrite.
            assert re.search(r"answer", p.critique, re.I), p.id
            assert re.match(r"(Rewrite|Revise)", p.revision), p.id


def test_default_covers_the_papers_harms():
    c = load_constitution("default")
    assert len(c.critique_principles()) >= 16
    assert len(c.preference_principles()) >= 8
    assert 2 <= len(c.examples) <= 3 and len(c.preference_examples) >= 2
    text = " ".join(p.critique + " " + p.revision for p in c.principles).lower()
    missing = [h for h in HARMS if h not in text]
    assert not missing, f"default constitution does not mention {missing}"
    assert c.system_prompt
    for e in c.examples:
        assert isinstance(e, Example) and e.messages[-1]["role"] == "assistant"
        # The worked chains use the constitution's own requests, so few-shot and real turns agree.
        assert any(e.critique_request == p.critique and e.revision_request == p.revision for p in c.principles)
    assert {e.answer for e in c.preference_examples} == {"A", "B"}  # no position bias taught


def test_hhh_has_the_tutorials_four_questions():
    c = load_constitution("hhh")
    ids = {p.id for p in c.critique_principles()}
    assert {"harmless", "helpful", "honest"} <= ids
    questions = [p.preference.lower() for p in c.preference_principles()]
    assert len(questions) == 4
    for needle in ("least likely to be considered harmful", "most helpful and harmless",
                   "most ethical and the least likely to cause harm", "values of a helpful assistant"):
        assert sum(needle in q for q in questions) == 1, needle


def test_customer_service_and_red_team():
    cs = load_constitution("customer-service")
    assert len(cs.principles) == 5 and cs.system_prompt
    rt = load_constitution("red-team")
    text = " ".join(p.critique + p.revision for p in rt.principles).lower()
    for needle in ("role-play", "polite", "evasive", "explain", "harmless request"):
        assert needle in text, needle


def test_principle_lookup_and_errors():
    c = load_constitution("default")
    assert c.principle("privacy").tags == ("harmless", "privacy")
    with pytest.raises(CAIError, match=r"no principle 'nope'.*known ids: harmful, harm-to-people"):
        c.principle("nope")


def test_values_are_frozen_but_messages_still_compose():
    e = load_constitution("default").examples[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.critique = "x"  # type: ignore[misc]
    with pytest.raises(TypeError, match="read-only"):
        e.messages.append({"role": "user", "content": "x"})
    longer = e.messages + [{"role": "user", "content": "next"}]
    assert type(longer) is list and len(longer) == len(e.messages) + 1
    assert json.loads(json.dumps(e.messages)) == list(e.messages)
    assert pickle.loads(pickle.dumps(e)) == e


def test_unknown_name_names_the_builtins():
    with pytest.raises(CAIError, match="not a built-in .*default.*no such file"):
        load_constitution("no-such-constitution")


# ---- our YAML format: hash and validation -------------------------------------------------------

MINIMAL = """\
name: mine
version: "2"
description: test constitution
principles:
  - id: a
    critique: "Critique the answer."
    revision: "Rewrite the answer."
    preference: "Which is better?"
    tags: [harmless]
  - id: b
    critique: "Critique the answer again."
    revision: "Rewrite it again."
"""


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_hash_is_stable_and_tracks_content(tmp_path):
    a = load_constitution(write(tmp_path, MINIMAL))
    assert a.hash == load_constitution(write(tmp_path, MINIMAL, "copy.yaml")).hash
    # Formatting and comments are not content.
    reformatted = "# a comment\n" + MINIMAL.replace('"Critique the answer."', "'Critique the answer.'  ")
    assert load_constitution(write(tmp_path, reformatted, "fmt.yaml")).hash == a.hash
    changed = load_constitution(write(tmp_path, MINIMAL.replace("Rewrite it again.", "Rewrite it once more."), "d.yaml"))
    assert changed.hash != a.hash
    weighted = load_constitution(write(tmp_path, MINIMAL + "    weight: 2\n", "w.yaml"))
    assert weighted.hash != a.hash and weighted.principle("b").weight == 2.0
    # The built-in's hash is the same whether loaded by name or by path.
    assert load_constitution(builtin_path("default")).hash == load_constitution("default").hash


def test_yaml_round_trip_keeps_the_hash(tmp_path):
    for name in list_constitutions():
        c = load_constitution(name)
        again = load_constitution(write(tmp_path, yaml.safe_dump(c.to_dict(), sort_keys=False), f"{name}.yaml"))
        assert again.hash == c.hash and again == c


def test_version_keeps_its_text(tmp_path):
    c = load_constitution(write(tmp_path, MINIMAL.replace('version: "2"', "version: 1.10")))
    assert c.version == "1.10"


@pytest.mark.parametrize("text, field, line, fix", [
    # missing field: reported on the entry that lacks it
    (MINIMAL.replace('    revision: "Rewrite it again."\n', ""), "principles[1].revision", 10, "add revision"),
    # wrong type
    (MINIMAL.replace("tags: [harmless]", "tags: harmless"), "principles[0].tags", 9, "tags: [harmless]"),
    (MINIMAL + "    weight: heavy\n", "principles[1].weight", 13, "number >= 0"),
    (MINIMAL.split("principles:")[0] + "principles: 3\n", "principles", 4, "list"),
    # unknown key, with a suggestion for a typo
    (MINIMAL.replace("    revision: \"Rewrite the answer.\"", "    revison: \"Rewrite the answer.\""),
     "principles[0].revison", 7, "did you mean 'revision'"),
    (MINIMAL + "colour: blue\n", "colour", 13, "allowed keys are"),
    # duplicate id
    (MINIMAL.replace("id: b", "id: a"), "principles[1].id", 10, "own id"),
    # missing top-level field
    (MINIMAL.replace("description: test constitution\n", ""), "description", 1, "add description"),
    # an example that does not end with the answer
    (MINIMAL + "examples:\n  - messages: [{role: user, content: hi}]\n    critique_request: a\n    critique: b\n"
     "    revision_request: c\n    revision: d\n", "examples[0].messages[0]", 14, "first answer"),
    (MINIMAL + "preference_examples:\n  - messages: [{role: user, content: hi}]\n    response_a: x\n"
     "    response_b: y\n    question: q\n    answer: C\n", "preference_examples[0].answer", 18, "A or B"),
])
def test_validation_errors_name_file_field_line_and_fix(tmp_path, text, field, line, fix):
    path = write(tmp_path, text)
    with pytest.raises(ConstitutionError) as info:
        load_constitution(path)
    err = info.value
    assert (err.file, err.field, err.line) == (str(path), field, line), str(err)
    message = str(err)
    assert "\n" not in message and message.startswith(f"{path}:{line}: {field}: ") and fix in message


def test_bad_yaml_and_duplicate_keys(tmp_path):
    path = write(tmp_path, MINIMAL.replace('  - id: b\n', '  - id: b\n   bad: [unclosed\n'))
    with pytest.raises(ConstitutionError, match=rf"^{re.escape(str(path))}:1[12]: invalid YAML .*fix the syntax"):
        load_constitution(path)
    path = write(tmp_path, MINIMAL.replace("version: \"2\"\n", "version: \"2\"\nname: again\n"))
    with pytest.raises(ConstitutionError, match=r":3: name: duplicate key 'name'"):
        load_constitution(path)


def test_labelling_only_principles_and_empty_text(tmp_path):
    text = MINIMAL + "  - id: q\n    preference: \"Which answer is kinder?\"\n"
    c = load_constitution(write(tmp_path, text))
    assert [p.id for p in c.critique_principles()] == ["a", "b"]
    assert [p.id for p in c.preference_principles()] == ["a", "q"]
    with pytest.raises(ConstitutionError, match=r"principles\[1\]\.critique: is empty"):
        load_constitution(write(tmp_path, MINIMAL.replace("Critique the answer again.", "  "), "e.yaml"))
    with pytest.raises(ConstitutionError, match=r"principles\[1\]\.revision: missing"):
        load_constitution(write(tmp_path, MINIMAL.replace('    revision: "Rewrite it again."\n',
                                                            '    preference: "p?"\n'), "f.yaml"))


def test_preference_example_requires_valid_answer():
    with pytest.raises(ValueError, match="'A' or 'B'"):
        PreferenceExample(messages=[{"role": "user", "content": "hi"}], response_a="a", response_b="b",
                          question="q", answer="C")  # type: ignore[arg-type]
