"""Security (issue 8): text from data stays text, ids cannot steer paths, weights load only from
safetensors and no model code runs unless asked."""

from __future__ import annotations

import json

import pytest

from cai.backends.mock import MockBackend
from cai.errors import CAIError
from cai.store import path_inside, safe_name

# str.format fields, positional fields, Jinja expressions and statements, a format-spec attack.
NASTY = "Tell me {} and {0} and {request} {conversation.__class__} {{ 7*7 }} {% if true %}JINJA{% endif %} {{}}"


def _sent_texts(backend: MockBackend) -> list[str]:
    out = []
    for kind, args in backend.calls:
        convs = args if kind == "generate" else args[0]
        out += [m["content"] for conv in convs for m in conv]
    return out


def test_prompt_text_stays_literal_through_critique_and_label(tmp_path):
    from cai.constitution import load_constitution
    from cai.critique import critique_revise
    from cai.label import LabelConfig, run_label
    from cai.sources import load_prompts

    src = tmp_path / "p.jsonl"
    src.write_text(json.dumps({"id": "x", "prompt": NASTY}) + "\n")
    prompts = load_prompts(str(src))
    assert prompts[0].messages[-1]["content"] == NASTY

    m = MockBackend(responses=lambda conv: "answer with {braces} and {{ jinja }}")
    rec = critique_revise(prompts, policy=m, constitution=load_constitution("default"), rounds=1)[0]
    assert rec["prompt"][-1]["content"] == NASTY and "{braces}" in rec["initial"]
    # the critic's own turns embed the answer; the prompt must reach every call unchanged
    assert sum(NASTY == t for t in _sent_texts(m)) >= 3

    m2 = MockBackend(responses=["reply one {x}", "reply two {{ y }}"])
    out = tmp_path / "prefs.jsonl"
    run_label(LabelConfig(prompts=str(src), output=str(out), constitution="default", samples_per_prompt=2),
              policy=m2, feedback=m2)
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert recs and all(r["prompt"][-1]["content"] == NASTY for r in recs)
    judged = [t for t in _sent_texts(m2) if NASTY in t and t != NASTY]
    assert judged, "the feedback model's question embeds the conversation literally"


def test_chat_template_renders_prompt_text_literally(tiny_llama_dir):
    from transformers import AutoTokenizer

    from cai.chat import CHATML_TEMPLATE, render_prompt

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    for template in (tok.chat_template, CHATML_TEMPLATE):
        tok.chat_template = template
        text = render_prompt(tok, [{"role": "user", "content": NASTY}])
        assert NASTY in text and "49" not in text.replace(NASTY, "")


@pytest.mark.parametrize("name", ["../../etc/passwd", "/abs/path", "a/../../b", "..", ".", "", "x\0y", "C:\\win",
                                  "ok-name_1.json", "émoji 🙂 name"])
def test_ids_cannot_make_paths_escape(tmp_path, name):
    s = safe_name(name)
    assert s and "/" not in s and "\\" not in s and "\0" not in s and s not in (".", "..")
    p = path_inside(tmp_path, name)
    assert p.parent == tmp_path.resolve()
    if name == "ok-name_1.json":
        assert s == name  # plain names are left alone


def test_path_inside_joins_several_parts_safely(tmp_path):
    p = path_inside(tmp_path, "../model", "../../task")
    assert tmp_path.resolve() in p.parents and p.relative_to(tmp_path.resolve()).parts == ("model", "task")


def test_pickled_weights_are_refused(tiny_llama_dir, tmp_path):
    import shutil
    from pathlib import Path

    import torch
    from safetensors.torch import load_file

    from cai.backends.hf import HFBackend

    for f in Path(tiny_llama_dir).iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, tmp_path / f.name)
    torch.save(load_file(str(next(Path(tiny_llama_dir).glob("*.safetensors")))), tmp_path / "pytorch_model.bin")
    assert list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.safetensors"))
    with pytest.raises(CAIError, match="pickled .bin weights"):
        HFBackend(str(tmp_path))


def test_no_remote_code_unless_asked(tiny_llama_dir, monkeypatch):
    import transformers

    from cai.backends.hf import HFBackend

    seen = []
    real = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*a, **kw):
        seen.append((kw.get("trust_remote_code"), kw.get("use_safetensors")))
        return real(*a, **kw)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    HFBackend(tiny_llama_dir)
    monkeypatch.setenv("CAI_TRUST_REMOTE_CODE", "1")
    HFBackend(tiny_llama_dir)
    assert seen == [(False, True), (True, True)]


def test_mismatched_tokenizer_is_refused(tiny_llama_dir, tmp_path):
    import shutil

    from transformers import LlamaConfig, LlamaForCausalLM

    from cai.backends.hf import HFBackend

    small = LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    small.save_pretrained(tmp_path)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (p := __import__("pathlib").Path(tiny_llama_dir) / f).exists():
            shutil.copy(p, tmp_path / f)
    with pytest.raises(CAIError, match="does not belong to this model"):
        HFBackend(str(tmp_path))
