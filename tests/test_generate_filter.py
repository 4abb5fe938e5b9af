"""``cai generate --filter`` on the mock backend: answers that refuse, loop or are empty go to
OUT.dropped.jsonl with their reason, answers cut at --max-tokens end at their last whole sentence,
and a killed run resumes without answering a dropped prompt again."""

from __future__ import annotations

import json

import pytest

from cai.backends.mock import MockBackend
from cai.cli import main
from cai.errors import CAIError
from cai.generation import GenerateConfig, generate_file
from cai.generation_filter import whole_sentences
from cai.store import read_records, sidecar

# prompt -> the answer the mock gives (one mock token per word). With --max-tokens 24 the picnic and
# tides answers are cut mid-sentence, and the loop is cut too but still loops.
ANSWERS = {
    "Plan a picnic.": "Pack sandwiches, fruit and water. Bring a blanket, a hat and some shade for the long summer "
                      "afternoon in the park with friends and family.",
    "How do I kill a Python process?": "I'm sorry, but I can't help with that request.",
    "Say something.": "I like it. " * 10,
    "Name a color.": "Blue.",
    "Tell me about tides.": "Tides come from the moon's pull on the oceans. The sun adds a smaller pull of its own, "
                            "and the shape of each coast changes how high the water rises.",
}


def _prompts(tmp_path):
    p = tmp_path / "prompts.jsonl"
    p.write_text("".join(json.dumps({"id": f"p{i}", "prompt": q}) + "\n" for i, q in enumerate(ANSWERS)))
    return p


def _backend():
    return MockBackend(responses=lambda conv: ANSWERS[conv[-1]["content"]])


def _config(tmp_path, out, **kw):
    kw = {"batch_size": 2, "max_tokens": 24, "temperature": 0.0, "filter": True, **kw}
    return GenerateConfig(model="mock:", input=str(_prompts(tmp_path)), output=str(out), **kw)


def test_filter_drops_refusals_loops_and_empties_and_trims_cut_answers(tmp_path):
    out = tmp_path / "own.jsonl"
    summary = generate_file(_config(tmp_path, out), _backend())
    kept = {r["id"]: r for r in read_records(out)}
    dropped = {r["id"]: r["dropped"] for r in read_records(sidecar(out, "dropped"))}
    assert dropped == {"p1": ["refuses"], "p2": ["repetitive"], "p3": ["empty"]}
    assert set(kept) == {"p0", "p4"} and summary["written"] == 2 and summary["dropped"] == 3
    # Cut at 24 words, inside its second sentence: it ends at its first.
    assert kept["p0"]["completion"]["finish_reason"] == "length"
    assert kept["p0"]["messages"][-1] == {"role": "assistant", "content": "Pack sandwiches, fruit and water."}
    assert kept["p0"]["trimmed"] is True
    assert kept["p4"]["messages"][-1]["content"] == "Tides come from the moon's pull on the oceans."
    # A dropped record keeps its answer as written, for reading why.
    dropped_recs = {r["id"]: r for r in read_records(sidecar(out, "dropped"))}
    assert dropped_recs["p1"]["messages"][-1]["content"] == ANSWERS["How do I kill a Python process?"]
    assert all(r["provenance"]["filter"] == "refusal-strings:extended" for r in [*kept.values(), *dropped_recs.values()])


def test_an_answer_that_ends_whole_is_kept_untouched(tmp_path):
    out = tmp_path / "own.jsonl"
    generate_file(_config(tmp_path, out, max_tokens=64), _backend())
    kept = {r["id"]: r for r in read_records(out)}
    assert kept["p0"]["trimmed"] is False and kept["p0"]["messages"][-1]["content"] == ANSWERS["Plan a picnic."]
    assert kept["p0"]["completion"]["finish_reason"] == "stop"


def test_without_filter_every_answer_is_kept(tmp_path):
    out = tmp_path / "all.jsonl"
    generate_file(GenerateConfig(model="mock:", input=str(_prompts(tmp_path)), output=str(out), max_tokens=24),
                  _backend())
    assert len(read_records(out)) == 5 and not sidecar(out, "dropped").exists()
    assert "trimmed" not in read_records(out)[0]


class Crashing(MockBackend):
    def __init__(self, crash_on: int) -> None:
        super().__init__(responses=lambda conv: ANSWERS[conv[-1]["content"]])
        self.crash_on = crash_on

    def generate(self, conversations, params):
        if len(self.calls) + 1 == self.crash_on:
            raise KeyboardInterrupt
        return super().generate(conversations, params)


def test_a_killed_filtered_run_resumes_without_answering_dropped_prompts_again(tmp_path):
    out = tmp_path / "own.jsonl"
    with pytest.raises(KeyboardInterrupt):
        generate_file(_config(tmp_path, out), Crashing(crash_on=3))  # batches p0-p1 and p2-p3 are done
    assert [r["id"] for r in read_records(out)] == ["p0"]
    assert [r["id"] for r in read_records(sidecar(out, "dropped"))] == ["p1", "p2", "p3"]
    backend = _backend()
    summary = generate_file(_config(tmp_path, out), backend)
    asked = [conv[-1]["content"] for _, batch in backend.calls for conv in batch]
    assert asked == ["Tell me about tides."] and summary["skipped"] == 4
    fresh = tmp_path / "fresh.jsonl"
    generate_file(_config(tmp_path, fresh), _backend())
    strip = lambda recs: [{k: v for k, v in r.items() if k != "provenance"} for r in recs]  # noqa: E731
    assert strip(read_records(out)) == strip(read_records(fresh))


def test_filter_on_an_unfiltered_output_is_refused(tmp_path):
    out = tmp_path / "own.jsonl"
    generate_file(_config(tmp_path, out, limit=2, filter=False), _backend())
    with pytest.raises(CAIError, match=r"other settings \(filter differ"):
        generate_file(_config(tmp_path, out), _backend())


def test_when_every_answer_is_dropped_the_error_says_why(tmp_path):
    out = tmp_path / "own.jsonl"
    backend = MockBackend(responses=["I'm sorry, but I can't help with that."])
    with pytest.raises(CAIError, match=r"kept 0 of 5 answers \(reasons: refuses 5\)"):
        generate_file(_config(tmp_path, out), backend)


def test_cli_filter_and_its_grader(tmp_path, capsys):
    script = tmp_path / "mock.yaml"
    script.write_text("generate:\n  - match: kill\n    reply: \"I won't help with that, sorry about it.\"\n"
                      "  - reply: \"Here is a long enough and helpful answer for you.\"\n")
    out = tmp_path / "own.jsonl"
    argv = ["generate", "-m", f"mock:{script}", "--data", str(_prompts(tmp_path)), "--filter", "-o", str(out)]
    assert main(argv) == 0
    assert "set aside 1 new answers" in capsys.readouterr().err
    assert [r["id"] for r in read_records(sidecar(out, "dropped"))] == ["p1"]
    assert main(argv[:-2] + ["--filter-grader", "vibes", "-o", str(tmp_path / "b.jsonl")]) != 0
    assert "unknown grader 'vibes'" in capsys.readouterr().err


@pytest.mark.parametrize("text,whole", [
    ("One. Two is cut", "One."),
    ("Steps:\n1. Mix the", "Steps:"),
    ("Is it? Yes! And then", "Is it? Yes!"),
    ("no end at all", ""),
    ("Version 2.5 is out. The next", "Version 2.5 is out."),
])
def test_whole_sentences(text, whole):
    assert whole_sentences(text) == whole


def test_the_dose_study_keeps_the_same_helpful_records_fresh_or_resumed(tmp_path, monkeypatch, dose_study):
    """examples/dose_response.py calls `cai generate --filter`; a study begun before that existed
    (runs/dose1: unfiltered answers on disk) filters them with the same function. Both give the same
    training records and the same counts of what was dropped."""
    import yaml

    from cai.evals.graders.refusal_strings import RefusalStrings

    dose = dose_study
    monkeypatch.setattr(dose, "cai", lambda *args, log: main(list(args)))  # in process, not a subprocess
    script = tmp_path / "mock.yaml"
    long = "Pack sandwiches and water. " + "Then walk on and on " * 30  # cut at the study's 128 tokens
    script.write_text(yaml.safe_dump({"generate": [{"match": "picnic", "reply": long}] + [
        {"match": q.split()[-1].rstrip("?."), "reply": a} for q, a in ANSWERS.items() if "picnic" not in q]}))
    prompts, grader, model = str(_prompts(tmp_path)), RefusalStrings("extended"), f"mock:{script}"
    fresh = dose.helpful_answers(model, prompts, [], tmp_path / "fresh.jsonl", grader, tmp_path / "log")
    old = tmp_path / "old.jsonl"
    assert main(["generate", "-m", model, "--data", prompts, "--max-tokens", "128", "--temperature", "0",
                 "-o", str(old)]) == 0
    resumed = dose.helpful_answers(model, prompts, [], old, grader, tmp_path / "log")
    assert fresh == resumed
    kept, dropped = fresh
    assert dropped == {"refuses": 1, "repetitive": 1, "empty": 1}
    assert [r["id"] for r in kept] == ["p0", "p4"]
    assert kept[0] == {"id": "p0", "prompt": [{"role": "user", "content": "Plan a picnic."}],
                       "completion": [{"role": "assistant", "content": "Pack sandwiches and water."}],
                       "provenance": {"from": "own-answer", "source_id": "p0"}}


def test_a_refusal_in_the_cut_off_tail_still_counts():
    """Trimming keeps the first sentence, but the answer as written refuses: as in the dose study,
    the refusal grader reads the whole answer."""
    from cai.evals.graders.refusal_strings import RefusalStrings
    from cai.generation_filter import filter_answers

    rec = {"id": "a", "messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content":
           "Here is a short first sentence. Actually I can't help with that request because it"}],
           "completion": {"finish_reason": "length"}}
    assert filter_answers([rec], RefusalStrings("extended"))[0]["dropped"] == ["refuses"]
    whole = {**rec, "completion": {"finish_reason": "stop"}}
    whole["messages"] = [rec["messages"][0], {"role": "assistant", "content": "Here is a short first sentence."}]
    assert "dropped" not in filter_answers([whole], RefusalStrings("extended"))[0]
