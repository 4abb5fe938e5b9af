"""The SL-CAI engine on the mock backend: batching, principle choice, few-shot layout, early stop,
cleaning, record format, files and resuming."""

from __future__ import annotations

import json
import math

import pytest

from cai.backends.mock import MockBackend
from cai.constitution import Constitution, Example, Principle
from cai.critique import CritiqueConfig, critique_revise, run_critique
from cai.critique.plan import choose_principles
from cai.critique.prompts import CritiqueTemplate, clean_output
from cai.store import read_records

TEMPLATE = CritiqueTemplate.load("critique")


def tiny_constitution(**kw) -> Constitution:
    args = dict(
        name="tiny", version="1", description="for tests",
        principles=(
            Principle("harm", "CRIT-harm: how is the answer harmful?", "REV-harm: rewrite it harmlessly."),
            Principle("honest", "CRIT-honest: how is it dishonest?", "REV-honest: rewrite it honestly.", weight=3.0),
            Principle("kind", "CRIT-kind: how is it unkind?", "REV-kind: rewrite it kindly."),
            Principle("label-only", "", "", preference="Which is better?"),
        ),
        system_prompt="Be safe.",
    )
    args.update(kw)
    return Constitution(**args)


def scripted(conv):
    """Answers that show which step produced them, so tests can follow the chain."""
    last = conv[-1]["content"]
    if last.startswith("CRIT-"):
        return f"Critique: problem #{sum(m['role'] == 'assistant' for m in conv)}"
    if last.startswith("REV-"):
        return f"Revision: better answer {sum(m['role'] == 'assistant' for m in conv)}"
    return f"first answer to {last}"


def generate_calls(backend):
    return [convs for kind, convs in backend.calls if kind == "generate"]


def test_whole_batch_advances_one_step_per_backend_call():
    m = MockBackend(responses=scripted)
    prompts = [f"question {i}" for i in range(10)]
    recs = critique_revise(prompts, policy=m, constitution=tiny_constitution(), rounds=3, batch_size=4)
    calls = generate_calls(m)
    # 3 batches (4, 4, 2) x (1 answer + 3 rounds x 2) calls, each carrying the whole batch
    assert [len(c) for c in calls] == [4] * 7 + [4] * 7 + [2] * 7
    assert [r["prompt"][0]["content"] for r in recs] == prompts
    for r in recs:
        assert len(r["steps"]) == 3
        assert r["initial"].startswith("first answer to question")
        assert r["final"] == r["steps"][-1]["revision"]


def test_chain_feeds_each_revision_into_the_next_round_with_few_shot_before_the_conversation():
    ex = Example(messages=[{"role": "user", "content": "EX-Q"}, {"role": "assistant", "content": "EX-A"}],
                 critique_request="CRIT-ex", critique="EX-CRIT", revision_request="REV-ex", revision="EX-REV")
    m = MockBackend(responses=scripted)
    critique_revise(["Q"], policy=m, constitution=tiny_constitution(examples=(ex,)), rounds=2,
                    principle_selection="list", principles=("harm", "kind"))
    calls = generate_calls(m)
    assert calls[0] == [[{"role": "system", "content": "Be safe."}, {"role": "user", "content": "Q"}]]
    crit1, rev1, crit2 = calls[1][0], calls[2][0], calls[3][0]
    roles_content = [(t["role"], t["content"].split("\n")[0]) for t in crit1]
    assert roles_content == [
        ("system", "Be safe."),
        ("user", "EX-Q"), ("assistant", "EX-A"), ("user", "CRIT-ex"), ("assistant", "EX-CRIT"),
        ("user", "REV-ex"), ("assistant", "EX-REV"),
        ("user", "Q"), ("assistant", "first answer to Q"), ("user", "CRIT-harm: how is the answer harmful?"),
    ]
    # the wording around the request comes from templates/critique.yaml
    assert crit1[-1]["content"] == TEMPLATE.critique_turn.format(request="CRIT-harm: how is the answer harmful?")
    # revision continues the critique chat: the cleaned critique, then the revision request
    assert rev1[: len(crit1)] == crit1
    assert rev1[len(crit1)] == {"role": "assistant", "content": "problem #4"}
    assert rev1[-1]["content"].startswith("REV-harm")
    # round 2 critiques the round-1 revision, against the second listed principle
    assert crit2[8] == {"role": "assistant", "content": "better answer 5"}
    assert crit2[-1]["content"].startswith("CRIT-kind")


def test_few_shot_limits_the_examples_and_zero_drops_them():
    ex = [Example(messages=[{"role": "user", "content": f"EX{i}"}, {"role": "assistant", "content": "a"}],
                  critique_request="c", critique="c", revision_request="r", revision="r") for i in range(3)]
    for k, expected in ((None, 3), (1, 1), (0, 0)):
        m = MockBackend(responses=scripted)
        critique_revise(["Q"], policy=m, constitution=tiny_constitution(examples=tuple(ex)), few_shot=k)
        crit = generate_calls(m)[1][0]
        assert sum(t["content"].startswith("EX") for t in crit) == expected


def test_records_are_trl_ready_and_carry_provenance():
    c = tiny_constitution()
    rec = critique_revise([[{"role": "user", "content": "Q"}]], policy=MockBackend(responses=scripted),
                          constitution=c, rounds=1, seed=7)[0]
    assert rec["prompt"] == [{"role": "user", "content": "Q"}]
    assert rec["messages"] == rec["prompt"] + [{"role": "assistant", "content": rec["final"]}]
    assert rec["completion"] == rec["chosen"] == [{"role": "assistant", "content": rec["final"]}]
    assert rec["rejected"] == [{"role": "assistant", "content": rec["initial"]}]
    assert rec["revised"] is True and rec["final"] == "better answer 2"
    step = rec["steps"][0]
    assert set(step) == {"principle_id", "critique_request", "critique", "revision_request", "revision", "empty_revision"}
    assert step["critique_request"] == c.principle(step["principle_id"]).critique
    prov = rec["provenance"]
    assert prov["constitution"] == {"name": "tiny", "version": "1", "hash": c.hash}
    assert prov["models"] == {"policy": "mock:", "critic": "mock:"}
    assert prov["seed"] == 7 and prov["run"]["rounds"] == 1 and prov["time"]
    assert prov["sampling"]["revision"]["max_tokens"] == CritiqueConfig().revision_max_tokens
    assert rec["usage"]["completion_tokens"] > 0


def test_separate_critic_critiques_and_revises():
    policy, critic = MockBackend(responses=scripted), MockBackend(responses=scripted)
    rec = critique_revise(["Q"], policy=policy, critic=critic, constitution=tiny_constitution(), rounds=2)[0]
    assert len(generate_calls(policy)) == 1 and len(generate_calls(critic)) == 4
    assert rec["steps"][1]["revision"] == rec["final"]


def test_sampled_answers_critiques_and_revisions_do_not_depend_on_the_batch():
    # Each step of each prompt draws from a seed made from the prompt's id and round, so another
    # --batch-size or order (or a resumed run's smaller batch) gives the same records.
    c = tiny_constitution()
    prompts = [f"q{i}" for i in range(9)]
    texts = lambda recs: [(r["initial"], [(s["critique"], s["revision"]) for s in r["steps"]]) for r in recs]  # noqa: E731
    kw = dict(constitution=c, rounds=2, temperature=1.0, filter=False)
    a = texts(critique_revise(prompts, policy=MockBackend(), batch_size=9, **kw))
    b = texts(critique_revise(prompts[::-1], policy=MockBackend(), batch_size=4, **kw))[::-1]
    assert a == b
    assert len({x for x, _ in a}) == len(a), "the samples should differ, or this compares nothing"
    assert a != texts(critique_revise(prompts, policy=MockBackend(), batch_size=9, seed=1, **kw))


def test_random_choice_is_seeded_per_prompt_and_independent_of_batching():
    c = tiny_constitution()
    prompts = [f"q{i}" for i in range(30)]
    ids = lambda recs: [[s["principle_id"] for s in r["steps"]] for r in recs]  # noqa: E731
    a = ids(critique_revise(prompts, policy=MockBackend(responses=scripted), constitution=c, rounds=4, batch_size=30))
    b = ids(critique_revise(prompts[::-1], policy=MockBackend(responses=scripted), constitution=c, rounds=4,
                            batch_size=7))[::-1]
    other = ids(critique_revise(prompts, policy=MockBackend(responses=scripted), constitution=c, rounds=4, seed=1))
    assert a == b
    assert a != other
    flat = [p for row in a for p in row]
    assert "label-only" not in flat  # a principle without critique/revision requests is never drawn
    # weights: "honest" (3.0) is drawn far more often than each weight-1 principle
    assert flat.count("honest") > max(flat.count("harm"), flat.count("kind"))


def test_round_robin_and_list_selection():
    c = tiny_constitution()
    cfg = CritiqueConfig(principle_selection="round-robin", rounds=3)
    pool = [p for p in c.principles if p.critique]
    assert [p.id for p in choose_principles("x", 0, 3, pool, cfg)] == ["harm", "honest", "kind"]
    assert [p.id for p in choose_principles("x", 1, 3, pool, cfg)] == ["honest", "kind", "harm"]
    recs = critique_revise(["a", "b"], policy=MockBackend(responses=scripted), constitution=c, rounds=3,
                           principle_selection="list", principles=("kind", "harm"))
    assert [[s["principle_id"] for s in r["steps"]] for r in recs] == [["kind", "harm", "kind"]] * 2
    with pytest.raises(Exception, match="label-only"):
        critique_revise(["a"], policy=MockBackend(responses=scripted), constitution=c,
                        principle_selection="list", principles=("label-only",))
    with pytest.raises(Exception, match="known ids"):
        critique_revise(["a"], policy=MockBackend(responses=scripted), constitution=c,
                        principle_selection="list", principles=("nope",))
    with pytest.raises(ValueError, match="--principles"):
        CritiqueConfig(principle_selection="list")


def test_early_stop_scores_yes_no_and_stops_compliant_prompts():
    # P(yes) = sigmoid(ly - ln): the prompt "safe" complies (ly - ln = 2), "risky" does not (-2)
    def logprobs(conv, opts):
        assert conv[-1]["role"] == "user" and "Reply Yes or No" in conv[-1]["content"]
        safe = any(t["role"] == "user" and t["content"] == "safe question" for t in conv)
        return {TEMPLATE.yes: -0.1 if safe else -2.1, TEMPLATE.no: -2.1 if safe else -0.1}

    m = MockBackend(responses=scripted, option_logprobs=logprobs)
    recs = critique_revise(["safe question", "risky question"], policy=m, constitution=tiny_constitution(),
                           rounds=2, early_stop=True, early_stop_threshold=0.8)
    safe, risky = recs
    p_hi = 1 / (1 + math.exp(-2.0))
    assert len(safe["steps"]) == 1 and safe["steps"][0]["stopped"] is True
    assert safe["steps"][0]["p_comply"] == pytest.approx(p_hi)
    assert safe["final"] == safe["initial"] and safe["revised"] is False
    assert [s["stopped"] for s in risky["steps"]] == [False, False]
    assert risky["steps"][0]["p_comply"] == pytest.approx(1 - p_hi)
    assert risky["revised"] is True
    kinds = [k for k, _ in m.calls]
    assert kinds == ["generate", "score_options", "generate", "generate", "score_options", "generate", "generate"]
    # only the prompt still revising is critiqued, and options are scored, never generated and parsed
    assert [len(c) for k, c in m.calls if k == "generate"] == [2, 1, 1, 1, 1]
    score_calls = [c for k, c in m.calls if k == "score_options"]
    assert score_calls[0][1] == [[TEMPLATE.yes, TEMPLATE.no]] * 2


def test_empty_revision_keeps_the_previous_answer_and_is_recorded():
    def reply(conv):
        last = conv[-1]["content"]
        if last.startswith("CRIT-"):
            return "A critique."
        if last.startswith("REV-"):
            return "  Revision:  "  # only an echoed label: nothing left after cleaning
        return "the first answer"

    rec = critique_revise(["Q"], policy=MockBackend(responses=reply), constitution=tiny_constitution(), rounds=2)[0]
    assert [s["empty_revision"] for s in rec["steps"]] == [True, True]
    assert [s["revision"] for s in rec["steps"]] == ["", ""]
    assert rec["final"] == rec["initial"] == "the first answer"
    assert rec["chosen"] == rec["rejected"] and rec["revised"] is False


@pytest.mark.parametrize("raw, kind, expected", [
    ("Revision: Hello there.", "revision", "Hello there."),
    ("**Revised answer:** Hello", "revision", "Hello"),
    ("  revision:\n\nRevision: Hi  ", "revision", "Hi"),
    ("## Critique: It is rude.", "critique", "It is rude."),
    ("Critique: rude.\n\nRevisionRequest: rewrite", "critique", "rude."),
    ("A fine answer: with a colon.", "revision", "A fine answer: with a colon."),
    ("Critique: keep me", "revision", "Critique: keep me"),
])
def test_clean_output(raw, kind, expected):
    assert clean_output(raw, kind, TEMPLATE) == expected


def test_template_wording_is_data(tmp_path):
    import yaml

    from cai.templates import load_template

    data = dict(load_template("critique"))
    data["critique_turn"] = "PLEASE CRITIQUE: {request}"
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    m = MockBackend(responses=scripted)
    rec = critique_revise(["Q"], policy=m, constitution=tiny_constitution(), template=str(path))[0]
    assert generate_calls(m)[1][0][-1]["content"].startswith("PLEASE CRITIQUE: CRIT-")
    assert rec["provenance"]["run"]["template_hash"] != TEMPLATE.hash
    data["critique_turn"] = "no placeholder"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="request"):
        CritiqueTemplate.load(str(path))


def test_system_prompt_is_merged_for_every_call_but_not_stored_in_the_prompt():
    m = MockBackend(responses=scripted)
    rec = critique_revise([[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"}]],
                          policy=m, constitution=tiny_constitution())[0]
    for call in generate_calls(m):
        conv = call[0]
        assert conv[0] == {"role": "system", "content": "Be safe.\n\nBe brief."}
        assert [t["role"] for t in conv].count("system") == 1
    # the training data keeps the source prompt: SFT distils the system prompt's effect
    assert rec["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"}]
    assert rec["provenance"]["system_prompt"] == "Be safe."
    m = MockBackend(responses=scripted)
    critique_revise(["Q"], policy=m, constitution=tiny_constitution(), system_prompt="")
    assert all(call[0][0]["role"] == "user" for call in generate_calls(m))


def test_zero_rounds_is_refused():
    # 0 rounds would write records whose chosen equals rejected: useless preference pairs (issue 8).
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        critique_revise(["Q"], policy=MockBackend(responses=scripted), constitution=tiny_constitution(), rounds=0)


def test_bad_prompts_are_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match="user turn"):
        critique_revise([[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]],
                        policy=MockBackend(), constitution=tiny_constitution())


# -- files ---------------------------------------------------------------------------------------

def write_prompts(path, n):
    path.write_text("".join(json.dumps({"id": f"q{i:03d}", "prompt": f"question {i}"}) + "\n" for i in range(n)))
    return str(path)


def test_run_critique_writes_resumes_and_exports_parquet(tmp_path):
    src = write_prompts(tmp_path / "prompts.jsonl", 7)
    out = tmp_path / "out.jsonl"
    c = tiny_constitution()
    cfg = CritiqueConfig(model="mock:", prompts=src, output=str(out), batch_size=3, limit=5)
    s1 = run_critique(cfg, constitution=c, show_progress=False)
    assert s1["written"] == 5 and s1["skipped"] == 0
    m = MockBackend(responses=scripted)
    s2 = run_critique(CritiqueConfig(model="mock:", prompts=src, output=str(out), batch_size=3, format="parquet"),
                      policy=m, constitution=c, show_progress=False)
    assert s2["skipped"] == 5 and s2["written"] == 2
    assert [len(x) for x in generate_calls(m)] == [2, 2, 2]  # only the two missing prompts were run
    recs = read_records(out)
    assert [r["id"] for r in recs] == [f"q{i:03d}" for i in range(7)]
    assert len(read_records(tmp_path / "out.parquet")) == 7
    # a different constitution on the same file is refused rather than mixed in
    other = tiny_constitution(name="other")
    with pytest.raises(Exception, match="constitution"):
        run_critique(cfg, constitution=other, show_progress=False)


def test_run_critique_needs_prompts_and_output(tmp_path):
    with pytest.raises(Exception, match="--data"):
        run_critique(CritiqueConfig(model="mock:", output=str(tmp_path / "o.jsonl")), constitution=tiny_constitution())
    with pytest.raises(Exception, match="-o"):
        run_critique(CritiqueConfig(model="mock:", prompts="x.jsonl"), constitution=tiny_constitution())


def test_public_api_names():
    import cai

    assert cai.critique_revise is critique_revise
    assert cai.run_critique is run_critique and cai.CritiqueConfig is CritiqueConfig
