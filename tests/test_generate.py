"""``cai generate`` and cai.generation on the mock backend: records, resume after a crash, settings
checks, and the CLI (one prompt, a file, a YAML run file)."""

from __future__ import annotations

import json

import pytest

from cai.backends.mock import MockBackend
from cai.cli import main
from cai.errors import CAIError
from cai.generation import GenerateConfig, generate_file, generate_one
from cai.sources import load_prompts
from cai.store import read_records

QUESTIONS = ["What is CAI?", "Name three colors.", "How do plants grow?", "Tell me a joke.", "Why is the sea salty?"]


@pytest.fixture()
def prompts_file(tmp_path):
    p = tmp_path / "prompts.jsonl"
    p.write_text("".join(json.dumps({"prompt": q, "topic": f"t{i}"}) + "\n" for i, q in enumerate(QUESTIONS)))
    return p


def _config(prompts_file, out, **kw) -> GenerateConfig:
    return GenerateConfig(model="mock:", input=str(prompts_file), output=str(out), batch_size=2, **kw)


class Crashing(MockBackend):
    """A mock that dies on its ``crash_on``-th generate call, like a killed process."""

    def __init__(self, crash_on: int) -> None:
        super().__init__()
        self.crash_on = crash_on

    def generate(self, conversations, params):
        if len(self.calls) + 1 == self.crash_on:
            raise KeyboardInterrupt
        return super().generate(conversations, params)


def _answers(path):
    return {r["id"]: r["messages"][-1]["content"] for r in read_records(path)}


def test_records_hold_prompt_answer_stats_and_provenance(prompts_file, tmp_path):
    out = tmp_path / "out.jsonl"
    backend = MockBackend()
    summary = generate_file(_config(prompts_file, out, system="Be brief.", max_tokens=64), backend)
    records = read_records(out)
    assert summary["written"] == 5 and summary["total"] == 5 and summary["skipped"] == 0
    assert [r["id"] for r in records] == [p.id for p in load_prompts(str(prompts_file))]
    assert len(backend.calls) == 3  # 5 prompts in batches of 2
    for r, q in zip(records, QUESTIONS):
        assert r["messages"][0] == {"role": "system", "content": "Be brief."}
        assert r["messages"][1] == {"role": "user", "content": q}
        assert r["messages"][2]["role"] == "assistant" and r["messages"][2]["content"]
        assert r["completion"]["finish_reason"] in ("stop", "length")
        assert r["completion"]["completion_tokens"] == len(r["messages"][2]["content"].split())
        assert r["provenance"]["models"] == {"policy": "mock:"}
        assert r["provenance"]["sampling"]["max_tokens"] == 64 and r["provenance"]["seed"] == 0
    assert records[0]["meta"]["topic"] == "t0"
    # The answers are the backend's, for the conversation that was actually sent.
    sent = [conv for _, batch in backend.calls for conv in batch]
    assert [r["messages"][:2] for r in records] == sent


def test_killed_run_resumes_to_the_same_file(prompts_file, tmp_path):
    full = tmp_path / "full.jsonl"
    generate_file(_config(prompts_file, full), MockBackend())

    out = tmp_path / "out.jsonl"
    with pytest.raises(KeyboardInterrupt):
        generate_file(_config(prompts_file, out), Crashing(crash_on=2))
    assert len(read_records(out)) == 2, "the finished batch must be on disk, the one in flight lost"
    # A crash in the middle of a write leaves a torn line; the next run cuts it off.
    with open(out, "a") as f:
        f.write('{"id": "torn", "messa')
    backend = MockBackend()
    summary = generate_file(_config(prompts_file, out), backend)
    assert summary["skipped"] == 2 and summary["written"] == 3 and summary["total"] == 5
    asked = [conv[-1]["content"] for _, batch in backend.calls for conv in batch]
    assert asked == QUESTIONS[2:], "only the missing prompts are generated again"
    assert _answers(out) == _answers(full), "a resumed sampled run equals an uninterrupted one"
    again = generate_file(_config(prompts_file, out), MockBackend())
    assert again["written"] == 0 and again["skipped"] == 5


def test_a_prompts_samples_do_not_depend_on_its_batch(prompts_file, tmp_path):
    # Each prompt draws from a seed made from its id: another --batch-size, or a --limit raised into
    # a batch (its missing prompts sent in a smaller batch), gives the same file.
    def answers(name, batch_size=2, **kw):
        generate_file(GenerateConfig(model="mock:", input=str(prompts_file), output=str(tmp_path / name),
                                     batch_size=batch_size, temperature=1.0, n=2, **kw), MockBackend())
        return _answers(tmp_path / name)

    by_two = answers("a.jsonl")
    assert answers("b.jsonl", batch_size=5) == by_two
    answers("c.jsonl", limit=3)
    assert answers("c.jsonl") == by_two
    assert len(set(by_two.values())) == len(by_two), "the samples should differ, or this compares nothing"
    other = GenerateConfig(model="mock:", input=str(prompts_file), output=str(tmp_path / "d.jsonl"), temperature=1.0,
                           n=2, seed=1)
    generate_file(other, MockBackend())
    assert _answers(tmp_path / "d.jsonl") != by_two, "the run's seed still drives the draws"


def test_resume_refuses_other_settings(prompts_file, tmp_path):
    out = tmp_path / "out.jsonl"
    generate_file(_config(prompts_file, out, limit=2), MockBackend())
    with pytest.raises(CAIError, match="other settings.*sampling"):
        generate_file(_config(prompts_file, out, temperature=0.1), MockBackend())
    assert len(read_records(out)) == 2


def test_n_samples_get_their_own_ids(prompts_file, tmp_path):
    out = tmp_path / "out.jsonl"
    generate_file(_config(prompts_file, out, n=2, limit=2, temperature=1.0), MockBackend())
    records = read_records(out)
    pid = load_prompts(str(prompts_file))[0].id
    assert [r["id"] for r in records[:2]] == [f"{pid}-s0", f"{pid}-s1"]
    assert [r["sample"] for r in records] == [0, 1, 0, 1] and records[1]["prompt_id"] == pid
    assert records[0]["messages"][-1] != records[1]["messages"][-1]


def test_sampling_seed_changes_answers_greedy_does_not(prompts_file, tmp_path):
    runs = {}
    for name, kw in {"a": dict(seed=1), "b": dict(seed=2), "g1": dict(seed=1, temperature=0), "g2": dict(seed=2, temperature=0)}.items():
        generate_file(_config(prompts_file, tmp_path / f"{name}.jsonl", **kw), MockBackend())
        runs[name] = _answers(tmp_path / f"{name}.jsonl")
    assert runs["a"] != runs["b"] and runs["g1"] == runs["g2"]


def test_bad_config_is_an_error_before_loading():
    with pytest.raises(ValueError, match="temperature"):
        GenerateConfig(temperature=-1)
    with pytest.raises(ValueError, match="batch_size"):
        GenerateConfig(batch_size=0)
    with pytest.raises(CAIError, match="--output"):
        generate_file(GenerateConfig(model="mock:", input="helpful"))


def test_cli_one_prompt(capsys):
    assert main(["generate", "-m", "mock:", "--temperature", "0", "Name three colors."]) == 0
    out = capsys.readouterr().out.strip()
    expected = MockBackend().generate([[{"role": "user", "content": "Name three colors."}]],
                                      GenerateConfig(temperature=0).sampling())[0].text
    assert out == expected


def test_cli_file_and_yaml_run_file(prompts_file, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    run = tmp_path / "run.yaml"
    run.write_text(f"model: 'mock:'\ninput: {prompts_file}\noutput: {out}\nlimit: 4\nmax_tokens: 5\n")
    assert main(["generate", "--config", str(run), "--limit", "3"]) == 0  # the flag overrides the file
    records = read_records(out)
    assert len(records) == 3 and all(r["completion"]["completion_tokens"] <= 5 for r in records)
    assert "wrote 3 new records" in capsys.readouterr().err


def test_cli_errors_are_one_line(capsys, prompts_file, tmp_path):
    assert main(["generate", "-m", "mock:"]) == 2
    assert "nothing to answer" in capsys.readouterr().err
    assert main(["generate", "-m", "mock:", "--input", str(prompts_file), "hi"]) == 2
    assert "not both" in capsys.readouterr().err


def test_one_prompt_on_vllm_asks_for_a_quick_start(monkeypatch):
    """A single answer does not repay vLLM's compile warm-up; batch runs keep it."""
    import cai.backends

    seen = {}

    def fake_load(spec, **options):
        seen[spec] = options
        return MockBackend()

    monkeypatch.setattr(cai.backends, "load_backend", fake_load)
    generate_one(GenerateConfig(model="vllm:smollm2-135m"), "Hi")
    assert seen["vllm:smollm2-135m"] == {"quick_start": True}
    seen.clear()
    generate_one(GenerateConfig(model="mock:"), "Hi")
    assert seen["mock:"] == {}
