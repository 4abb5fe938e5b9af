"""--overlong: a prompt longer than the model's context stops the run (error, naming it), is cut
on the left with a warning (truncate), or is listed in OUT.skipped.jsonl while the rest go on
(skip), and a resumed run counts it as done."""

from __future__ import annotations

import json

import pytest

from cai.errors import CAIError
from cai.generation import GenerateConfig, generate_file


@pytest.fixture(scope="module")
def _loaded(tiny_llama_dir):
    from cai.backends import load_backend

    return load_backend(f"hf:{tiny_llama_dir}")


@pytest.fixture
def backend(_loaded):
    _loaded.truncate = "error"  # --overlong truncate switches the shared backend; start each test clean
    return _loaded


@pytest.fixture
def prompts(tmp_path):
    p = tmp_path / "p.jsonl"
    rows = [{"id": "short1", "prompt": "Hi there"}, {"id": "huge", "prompt": "word " * 2100},
            {"id": "short2", "prompt": "Hello"}]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(p)


def _cfg(prompts, out, overlong, tiny_llama_dir):
    return GenerateConfig(model=f"hf:{tiny_llama_dir}", input=prompts, output=str(out), max_tokens=2,
                          temperature=0, overlong=overlong, batch_size=4)


def test_error_names_the_prompt(prompts, tmp_path, backend, tiny_llama_dir):
    with pytest.raises(CAIError, match="exceeds .* context"):
        generate_file(_cfg(prompts, tmp_path / "o.jsonl", "error", tiny_llama_dir), backend=backend)


def test_skip_lists_it_and_answers_the_rest(prompts, tmp_path, backend, tiny_llama_dir, capsys):
    out = tmp_path / "o.jsonl"
    s = generate_file(_cfg(prompts, out, "skip", tiny_llama_dir), backend=backend)
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["short1", "short2"]
    (skip,) = [json.loads(x) for x in (tmp_path / "o.skipped.jsonl").read_text().splitlines()]
    assert skip["id"] == "huge" and skip["prompt_tokens"] > skip["context"] == 2048
    assert "skipped 1 prompt" in capsys.readouterr().err and s["written"] == 2
    again = generate_file(_cfg(prompts, out, "skip", tiny_llama_dir), backend=backend)
    assert again["written"] == 0  # the skipped prompt counts as done


def test_truncate_keeps_the_end_and_warns(prompts, tmp_path, backend, tiny_llama_dir, capsys):
    out = tmp_path / "o.jsonl"
    generate_file(_cfg(prompts, out, "truncate", tiny_llama_dir), backend=backend)
    recs = {json.loads(x)["id"]: json.loads(x) for x in out.read_text().splitlines()}
    assert set(recs) == {"short1", "huge", "short2"}
    assert recs["huge"]["completion"]["prompt_tokens"] <= 2048
    assert "keep only their last tokens: huge" in capsys.readouterr().err


def test_truncate_needs_hf(prompts, tmp_path):
    with pytest.raises(CAIError, match="needs the hf backend"):
        generate_file(GenerateConfig(model="mock:", input=prompts, output=str(tmp_path / "o.jsonl"),
                                     overlong="truncate"))
    with pytest.raises(ValueError, match="overlong must be one of"):
        GenerateConfig(overlong="drop")


def test_critique_and_label_truncate_too(tmp_path, tiny_llama_dir, prompts, backend):
    from cai.critique import CritiqueConfig, run_critique
    from cai.label import LabelConfig, run_label

    run_critique(CritiqueConfig(model=f"hf:{tiny_llama_dir}", prompts=prompts, output=str(tmp_path / "c.jsonl"),
                                answer_max_tokens=2, critique_max_tokens=2, revision_max_tokens=2, few_shot=0,
                                overlong="truncate"), policy=backend)
    assert len((tmp_path / "c.jsonl").read_text().splitlines()) == 3
    run_label(LabelConfig(policy=f"hf:{tiny_llama_dir}", prompts=prompts, output=str(tmp_path / "l.jsonl"),
                          max_tokens=2, overlong="truncate"), policy=backend)
    written = [p.read_text() for p in (tmp_path / "l.jsonl", tmp_path / "l.skipped.jsonl") if p.exists()]
    assert '"prompt_id": "huge"' in "".join(written)
    with pytest.raises(CAIError, match="needs the hf backend"):
        run_label(LabelConfig(policy="mock:", prompts=prompts, output=str(tmp_path / "m.jsonl"), overlong="truncate"))
