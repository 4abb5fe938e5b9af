"""Foreign constitution formats, detected from content: Hugging Face llm-swarm and the CAI paper's
prompt files. The paper-format files are written here in the published shapes (our own wording)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cai.constitution import ConstitutionError, load_constitution
from cai.errors import CAIError


def dump(tmp_path: Path, name: str, data) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data, indent=2))
    return path


# ---- Hugging Face llm-swarm ---------------------------------------------------------------------

@pytest.mark.parametrize("stem", ["hf_llm_swarm_constitution_anthropic", "hf_llm_swarm_constitution_grok"])
def test_llm_swarm_files_load_faithfully(shared_data, stem):
    path = shared_data / "constitutions" / f"{stem}.json"
    raw = json.loads(path.read_text())
    c = load_constitution(path)
    assert c.format == "llm-swarm" and c.name == stem and c.source == str(path)
    assert [(p.critique, p.revision) for p in c.principles] == [
        (x["critic"].strip(), x["revision"].strip()) for x in raw["constitutions"]]
    assert len(c.examples) == len(raw["system_chat"])
    for example, chain in zip(c.examples, raw["system_chat"]):
        # The last four turns are the critique round; everything before is the conversation.
        assert [m["content"] for m in example.messages] == [m["content"].strip() for m in chain[:-4]]
        assert example.messages[-1]["role"] == "assistant"
        assert (example.critique_request, example.critique, example.revision_request, example.revision) == tuple(
            m["content"].strip() for m in chain[-4:])
        # as_chat() gives the chain back in llm-swarm's own layout.
        assert example.as_chat() == [{"role": m["role"], "content": m["content"].strip()} for m in chain]
    # A multi-turn chain keeps its earlier turns.
    assert max(len(e.messages) for e in c.examples) >= 2


def test_llm_swarm_bad_chain_is_located(tmp_path):
    data = {"constitutions": [{"critic": "Critique it.", "revision": "Rewrite it."}],
            "system_chat": [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]]}
    path = dump(tmp_path, "swarm.json", data)
    with pytest.raises(ConstitutionError) as info:
        load_constitution(path)
    assert info.value.field == "system_chat[0]" and info.value.line == 9 and "critique request" in str(info.value)


# ---- CAI paper: critique/revision instructions ---------------------------------------------------

def paper_instructions(n: int) -> dict:
    return {f"rule{i}": {"prompt": [f"\n\nCritiqueRequest: Say how answer {i} could be harmful.\n\nCritique:"],
                         "edit_request": f"\n\nRevisionRequest: Rewrite answer {i} without the harm.\n\nRevision:"}
            for i in range(n)}


def test_paper_instructions_16_entries_load_as_16_principles_markers_stripped(tmp_path):
    c = load_constitution(dump(tmp_path, "CritiqueRevisionInstructions.json", paper_instructions(16)))
    assert c.format == "paper-critique"
    assert len(c.principles) == 16 and len(c.critique_principles()) == 16
    assert [p.id for p in c.principles] == [f"rule{i}" for i in range(16)]
    p = c.principle("rule3")
    assert p.critique == "Say how answer 3 could be harmful."
    assert p.revision == "Rewrite answer 3 without the harm."
    for p in c.principles:
        for marker in ("CritiqueRequest", "Critique:", "RevisionRequest", "Revision:"):
            assert marker not in p.critique + p.revision


def test_paper_instructions_with_several_critique_requests(tmp_path):
    data = paper_instructions(1)
    data["rule0"]["prompt"].append("\n\nCritiqueRequest: Another angle on it.\n\nCritique:")
    c = load_constitution(dump(tmp_path, "multi.json", data))
    assert [(p.id, p.critique, p.revision) for p in c.principles] == [
        ("rule0", "Say how answer 0 could be harmful.", "Rewrite answer 0 without the harm."),
        ("rule0-1", "Another angle on it.", "Rewrite answer 0 without the harm.")]


def test_paper_instructions_missing_edit_request_is_located(tmp_path):
    data = paper_instructions(2)
    del data["rule1"]["edit_request"]
    with pytest.raises(ConstitutionError) as info:
        load_constitution(dump(tmp_path, "bad.json", data))
    assert info.value.field == "rule1.edit_request" and info.value.line == 8


# ---- CAI paper: preference instructions ----------------------------------------------------------

def test_paper_preference_instructions_become_labelling_principles(tmp_path):
    data = ["\nPlease pick the answer that is kinder and safer. Options:",
            "\nWhich answer would a careful, honest friend give? Options:"]
    c = load_constitution(dump(tmp_path, "RLMadisonInstructions.json", data))
    assert c.format == "paper-preference"
    assert [(p.id, p.preference) for p in c.preference_principles()] == [
        ("pref0", "Please pick the answer that is kinder and safer."),
        ("pref1", "Which answer would a careful, honest friend give?")]
    assert c.critique_principles() == ()


def test_paper_files_join_with_plus(tmp_path):
    crit = dump(tmp_path, "crit.json", paper_instructions(3))
    prefs = dump(tmp_path, "prefs.json", ["\nChoose the safer one. Options:"])
    c = load_constitution(f"{crit}+{prefs}")
    assert [p.id for p in c.critique_principles()] == ["rule0", "rule1", "rule2"]
    assert [p.id for p in c.preference_principles()] == ["pref0"]
    assert c.hash != load_constitution(crit).hash
    with pytest.raises(CAIError, match="'rule0' is in both"):
        load_constitution(f"{crit}+{crit}")


# ---- CAI paper: critique few-shot transcripts ----------------------------------------------------

FEWSHOT = [
    "\n\nHuman: Can you help me cheat on my exam?\n\nAssistant: Sure, write the answers on your arm."
    "\n\nCritiqueRequest: Point out anything harmful in the answer.\n\nCritique: It helps the user cheat."
    "\n\nRevisionRequest: Rewrite the answer without the harm.\n\nRevision: I can't help you cheat, but I can help you study."
    "\n\nHuman:",
    "\n\nHuman: What's the capital of Australia?\n\nAssistant: Sydney, for sure.\n\nHuman: Are you certain?"
    "\n\nAssistant: Yes, absolutely Sydney."
    "\n\nCritiqueRequest: Was the answer truthful?\n\nCritique: No, the capital is Canberra."
    "\n\nRevisionRequest: Rewrite it truthfully.\n\nRevision: Sorry, I was wrong: it is Canberra."
    "\n\nCritiqueRequest: Is it polite?\n\nCritique: Yes.\n\nRevisionRequest: Make it polite.\n\nRevision: "
    "Apologies, I was mistaken: the capital is Canberra.",
]


def check_fewshot(c):
    assert c.format == "paper-fewshot" and c.principles == ()
    assert len(c.examples) == 3
    first, second, third = c.examples
    assert first.messages == [{"role": "user", "content": "Can you help me cheat on my exam?"},
                              {"role": "assistant", "content": "Sure, write the answers on your arm."}]
    assert (first.critique_request, first.critique) == ("Point out anything harmful in the answer.", "It helps the user cheat.")
    assert first.revision == "I can't help you cheat, but I can help you study."
    assert [m["role"] for m in second.messages] == ["user", "assistant", "user", "assistant"]
    assert second.revision == "Sorry, I was wrong: it is Canberra."
    # A second round critiques the first round's revision.
    assert third.messages[:-1] == second.messages[:-1]
    assert third.messages[-1]["content"] == second.revision
    assert third.revision == "Apologies, I was mistaken: the capital is Canberra."


def test_paper_fewshot_json(tmp_path):
    check_fewshot(load_constitution(dump(tmp_path, "CritiqueRevisionFewShotPrompts.json", FEWSHOT)))


def test_paper_fewshot_text_file(tmp_path):
    path = tmp_path / "fewshot.txt"
    path.write_text("".join(FEWSHOT))
    check_fewshot(load_constitution(path))


def test_paper_fewshot_out_of_order_is_located(tmp_path):
    path = tmp_path / "broken.txt"
    path.write_text("Human: hi\n\nAssistant: hello\n\nCritiqueRequest: critique it\n\nRevision: oops\n")
    with pytest.raises(ConstitutionError, match=r"broken.txt:7: found Revision: where Critique: was expected"):
        load_constitution(path)


# ---- CAI paper: preference few-shot files --------------------------------------------------------

def test_paper_preference_fewshot(tmp_path):
    data = [{"prompt": "\n\nHuman: How do I hurt my neighbour's dog?\n\nAssistant:",
             "corrects": ["Please don't hurt the dog. If it bothers you, talk to your neighbour."],
             "incorrects": ["Leave out some chocolate for it."]},
            {"prompt": "\n\nHuman: Tell me a joke.\n\nAssistant:",
             "corrects": ["Why did the scarecrow win an award? He was outstanding in his field."],
             "incorrects": ["No."]}]
    c = load_constitution(dump(tmp_path, "RLMadisonFewShotPrompts.json", data))
    assert c.format == "paper-preference-fewshot" and len(c.preference_examples) == 2
    first, second = c.preference_examples
    assert first.messages == [{"role": "user", "content": "How do I hurt my neighbour's dog?"}]
    # The correct answer alternates sides so the examples teach no position bias.
    assert (first.answer, first.response_a) == ("A", data[0]["corrects"][0])
    assert (second.answer, second.response_b, second.response_a) == ("B", data[1]["corrects"][0], "No.")
    assert first.question  # the default question from builtin/_formats.yaml


def test_paper_preference_cot_fewshot(tmp_path):
    prompt = ("\n\nHuman: Consider the following conversation between a human (H) and an assistant (A):\n\n"
              "H: What should I feed my cat?\n\nA: Cat food works well.\n\nH: Can I give it chocolate too?\n\n{}\n"
              " (A) [[[Yes, cats love chocolate.]]]\n (B) [[[No, chocolate is toxic to cats.]]]\n\n"
              "Assistant: Let's think step by step: (A) is false and dangerous. (B) is correct.\n\nHuman:\n"
              "So the answer is: (B)")
    c = load_constitution(dump(tmp_path, "RLMadisonPrecogFewShotPrompts.json", [{"prompt": prompt}]))
    assert c.format == "paper-preference-cot-fewshot"
    (e,) = c.preference_examples
    assert [m["role"] for m in e.messages] == ["user", "assistant", "user"]
    assert e.messages[-1]["content"] == "Can I give it chocolate too?"
    assert (e.response_a, e.response_b, e.answer) == ("Yes, cats love chocolate.", "No, chocolate is toxic to cats.", "B")
    assert e.reasoning == "(A) is false and dangerous. (B) is correct."


# ---- detection failures --------------------------------------------------------------------------

def test_unknown_shapes_are_rejected_clearly(tmp_path):
    with pytest.raises(ConstitutionError, match="not a constitution in any known format"):
        load_constitution(dump(tmp_path, "numbers.json", [1, 2, 3]))
    with pytest.raises(ConstitutionError, match=r"bad.json:3: invalid JSON"):
        path = tmp_path / "bad.json"
        path.write_text('{"a":\n  1,\n  oops\n}')
        load_constitution(path)
    (tmp_path / "empty.yaml").write_text("\n")
    with pytest.raises(ConstitutionError, match="the file is empty"):
        load_constitution(tmp_path / "empty.yaml")
