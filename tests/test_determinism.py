"""Same seed, same backend, same input: byte-identical datasets apart from the provenance time
(issue 8), on the mock backend for every stage and on hf (a tiny random Llama) for generate, the
path every hf stage samples through."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from faults import PROMPTS

TIME = re.compile(r'"time": "[^"]*"')


def _twice(tmp_path: Path, run) -> tuple[bytes, bytes]:
    out = tmp_path / "out.jsonl"
    got = []
    for _ in range(2):
        if out.exists():
            out.unlink()
        for side in tmp_path.glob(".out.jsonl.commit"):
            side.unlink()
        run(str(out))
        got.append(TIME.sub('"time": "T"', out.read_text(encoding="utf-8")).encode())
    return got[0], got[1]


@pytest.fixture
def prompts_file(tmp_path) -> str:
    p = tmp_path / "prompts.jsonl"
    p.write_text("".join(json.dumps(x) + "\n" for x in PROMPTS[:4]))
    return str(p)


def test_mock_generate_critique_label_are_byte_identical(tmp_path, prompts_file):
    from cai.critique import CritiqueConfig, run_critique
    from cai.generation import GenerateConfig, generate_file
    from cai.label import LabelConfig, run_label

    runs = {
        "generate": lambda out: generate_file(GenerateConfig(model="mock:", input=prompts_file, output=out,
                                                             batch_size=2, temperature=0.9, seed=3)),
        "critique": lambda out: run_critique(CritiqueConfig(model="mock:", prompts=prompts_file, output=out,
                                                            batch_size=2, rounds=2, seed=3)),
        "label": lambda out: run_label(LabelConfig(policy="mock:", prompts=prompts_file, output=out, batch_size=2,
                                                   samples_per_prompt=3, seed=3)),
    }
    for name, run in runs.items():
        d = tmp_path / name
        d.mkdir()
        a, b = _twice(d, run)
        assert a and a == b, f"{name}: two runs with the same seed differ"


def test_hf_generate_is_byte_identical(tmp_path, prompts_file, tiny_llama_dir):
    from cai.backends import load_backend
    from cai.generation import GenerateConfig, generate_file

    backend = load_backend(f"hf:{tiny_llama_dir}")
    g = GenerateConfig(model=f"hf:{tiny_llama_dir}", input=prompts_file, batch_size=2, temperature=0.9,
                       max_tokens=8, seed=5)
    (tmp_path / "g").mkdir()
    a, b = _twice(tmp_path / "g", lambda out: generate_file(GenerateConfig(**{**g.__dict__, "output": out}),
                                                            backend=backend))
    assert a == b, "hf generate: two runs with the same seed differ"
    # and a different seed does change the samples, so the comparison above has teeth
    (tmp_path / "g2").mkdir()
    other, _ = _twice(tmp_path / "g2", lambda out: generate_file(
        GenerateConfig(**{**g.__dict__, "output": out, "seed": 6}), backend=backend))
    strip = lambda s: [json.loads(x)["messages"][-1]["content"] for x in s.decode().splitlines()]  # noqa: E731
    assert strip(other) != strip(a)
