"""A rerun on a finished output starts no engine (issue 16): every stage that resumes reads its
stored records and prompts first, and when nothing is left to do it runs on unstarted stand-ins
named as the records say (cai.backends.unstarted). An output with work left still loads its models.

The backends are counted where every one is built (``cai.backends._factory``); once ``forbid`` is
set, building one fails the test."""

from __future__ import annotations

import json

import pytest
import yaml

from cai.cli import main


class Engines:
    def __init__(self) -> None:
        self.built: list[str] = []
        self.forbid = False


@pytest.fixture
def engines(monkeypatch) -> Engines:
    import cai.backends as backends

    real, seen = backends._factory, Engines()

    def factory(kind: str):
        cls = real(kind)

        def build(*args, **kwargs):
            if seen.forbid:
                raise AssertionError(f"a {kind} backend was built for a finished output")
            seen.built.append(kind)
            return cls(*args, **kwargs)
        return build

    monkeypatch.setattr(backends, "_factory", factory)
    return seen


def _drop_last_record(path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))


def _script(tmp_path) -> str:
    """A second mock model (another name) for the tasks that compare models or use a judge."""
    p = tmp_path / "other.yaml"
    p.write_text(yaml.safe_dump({"generate": [{"reply": "I can't help with that."}]}))
    return f"mock:{p}"


def _labelled(tmp_path) -> str:
    p = tmp_path / "labelled.jsonl"
    p.write_text("".join(json.dumps({"id": f"a{i}", "prompt": f"request {i}", "answer": a, "refused": r}) + "\n"
                         for i, (a, r) in enumerate([("I can't help with that.", True), ("Sure: step one.", False),
                                                     ("No.", True)])))
    return str(p)


# (argv after "eval", the records file beside the result)
EVALS = {
    "harmlessness": lambda t: ["harmlessness", "-m", "mock:", "--limit", "3"],
    "harmlessness-judge": lambda t: ["harmlessness", "-m", "mock:", "--grader", "judge", "--limit", "2"],
    "harmlessness-other-judge": lambda t: ["harmlessness", "-m", "mock:", "--grader", "judge", "--judge", _script(t),
                                           "--limit", "2"],
    "over-refusal": lambda t: ["over-refusal", "-m", "mock:", "--limit", "3"],
    "hhh": lambda t: ["hhh", "-m", "mock:", "--limit", "3"],
    "truthfulqa": lambda t: ["truthfulqa", "-m", "mock:", "--limit", "3"],
    "ifeval": lambda t: ["ifeval", "-m", "mock:", "--limit", "3", "--max-tokens", "8"],
    "helpfulness": lambda t: ["helpfulness", "-m", "mock:", "--baseline", _script(t), "--judge", "mock:",
                              "--limit", "2", "--max-tokens", "8"],
    "pairwise": lambda t: ["pairwise", "-m", "mock:", "-m", _script(t), "--judge", "mock:", "--limit", "2",
                           "--max-tokens", "8"],
    "labeler": lambda t: ["labeler", "-m", "mock:", "--data", "hhh", "--limit", "4"],
    "grader": lambda t: ["grader", "--grader", "judge", "--judge", "mock:", "--data", _labelled(t)],
}


@pytest.mark.parametrize("name", sorted(EVALS))
def test_eval_rerun_on_a_finished_output_starts_no_engine(name, tmp_path, engines, capsys):
    out = tmp_path / "r.json"
    argv = ["eval", *EVALS[name](tmp_path), "--bootstrap", "50", "-o", str(out), "--no-progress"]
    assert main(argv) == 0
    assert engines.built, "the first run loads its models"
    first = json.loads(out.read_text())
    capsys.readouterr()

    engines.built.clear()
    engines.forbid = True
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert engines.built == [] and f"wrote {out}" in err
    again = json.loads(out.read_text())
    for key in ("metrics", "model", "grader", "task", "overall", "method"):  # labeler's result has its own shape
        assert again.get(key) == first.get(key), key

    # One record short: the models load again and the missing item is done.
    records = out.with_name("r.examples.jsonl")
    n = len(records.read_text().splitlines())
    _drop_last_record(records)
    engines.forbid = False
    assert main(argv) == 0
    assert engines.built and len(records.read_text().splitlines()) == n


def test_eval_rerun_with_another_model_still_refuses(tmp_path, engines, capsys):
    argv = ["eval", "hhh", "--limit", "3", "--bootstrap", "50", "-o", str(tmp_path / "r.json"), "--no-progress"]
    assert main([*argv, "-m", "mock:"]) == 0
    engines.built.clear()
    assert main([*argv, "-m", _script(tmp_path)]) == 2
    assert "different model" in capsys.readouterr().err
    assert engines.built == ["mock"]  # another model: only a loaded run could tell, as before


def test_eval_step_of_cai_run_on_a_finished_output_starts_no_engine(tmp_path, engines):
    from cai.run.stages import run_step

    config = {"task": "hhh", "model": "mock:", "limit": 3, "bootstrap": 50, "output": str(tmp_path / "r.json")}
    first = run_step("eval", config, where="test")
    engines.forbid = True
    assert run_step("eval", config, where="test") == first


def test_critique_rerun_on_a_finished_output_starts_no_engine(tmp_path, engines, capsys):
    out = tmp_path / "sl.jsonl"
    argv = ["critique", "-m", "mock:", "--data", "borderline", "--limit", "3", "-o", str(out), "--no-progress"]
    assert main(argv) == 0
    before = out.read_text()
    capsys.readouterr()
    engines.built.clear()
    engines.forbid = True
    assert main(argv) == 0
    assert engines.built == [] and out.read_text() == before
    assert "wrote 0 new records" in capsys.readouterr().err
    engines.forbid = False
    assert main([*argv, "--critic", _script(tmp_path)]) == 2  # another critic: refused, by a loaded run as before
    assert "different models" in capsys.readouterr().err and len(engines.built) == 2
    engines.built.clear()
    _drop_last_record(out)
    assert main(argv) == 0 and engines.built == ["mock"]
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == [json.loads(x)["id"] for x in
                                                                         before.splitlines()]


def test_label_rerun_on_a_finished_output_starts_no_engine(tmp_path, engines, capsys):
    src = tmp_path / "prompts.jsonl"
    src.write_text("".join(json.dumps({"prompt": f"How do I do thing {i}?"}) + "\n" for i in range(3)))
    out = tmp_path / "prefs.jsonl"
    argv = ["label", "--policy", "mock:", "--feedback", _script(tmp_path), "-c", "hhh", "--prompts", str(src),
            "-o", str(out), "-k", "2", "--no-progress"]
    assert main(argv) == 0 and sorted(engines.built) == ["mock", "mock"]
    before = out.read_text()
    engines.built.clear()
    engines.forbid = True
    assert main(argv) == 0
    assert engines.built == [] and out.read_text() == before
    assert "labelled 0 new pairs" in capsys.readouterr().err
    _drop_last_record(out)
    engines.forbid = False
    assert main(argv) == 0 and sorted(engines.built) == ["mock", "mock"]


def test_contrastive_label_rerun_on_a_finished_output_starts_no_engine(tmp_path, engines):
    from cai.label import LabelConfig, run_label

    config = LabelConfig(prompts="redteam", limit=2, output=str(tmp_path / "c.jsonl"), pairs="contrastive",
                         policy="mock:")
    run_label(config)
    assert engines.built == ["mock"]
    engines.built.clear()
    engines.forbid = True
    assert run_label(config)["already_done"] == 2 and engines.built == []


def test_generate_rerun_checks_the_settings_without_an_engine(tmp_path, engines, capsys):
    out = tmp_path / "a.jsonl"
    argv = ["generate", "-m", "mock:", "--data", "borderline", "--limit", "3", "-o", str(out), "--no-progress"]
    assert main(argv) == 0
    engines.forbid = True
    assert main(argv) == 0 and "wrote 0 new records" in capsys.readouterr().err
    assert main([*argv, "--temperature", "0.7"]) == 2  # a finished output is still not another run's
    assert "other settings (sampling differ" in capsys.readouterr().err
    assert main([*argv, "-m", _script(tmp_path)]) == 2
    assert "other settings (models differ" in capsys.readouterr().err


def test_stand_ins_bear_the_names_a_spec_could_load(monkeypatch):
    import cai.backends
    import cai.backends.unstarted as u

    monkeypatch.setattr(cai.backends, "vllm_available", lambda: True)
    assert u.names_of("smollm2-135m") == ("vllm:smollm2-135m", "hf:smollm2-135m")  # vLLM, or hf when it cannot start
    assert u.names_of("vllm:smollm2-135m") == ("vllm:smollm2-135m",)
    assert u.names_of("openai:http://h:8000#m") == ("openai:http://h:8000/v1#m",)
    assert u.names_of("openai:http://h:8000") == ()  # the server names its model: only a load tells
    monkeypatch.setattr(cai.backends, "vllm_available", lambda: False)
    assert u.names_of("smollm2-135m") == ("hf:smollm2-135m",)
    assert u.stand_in("hf:x", "hf:x").name == "hf:x" and u.stand_in("hf:x", "hf:y") is None
    assert u.stand_ins(["mock:", "hf:x"], ["mock:", "vllm:x"]) is None
    with pytest.raises(RuntimeError, match="bug in cai"):
        u.Unstarted("mock:", "mock:").generate([], None)
