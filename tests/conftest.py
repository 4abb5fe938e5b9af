"""Shared fixtures: a tiny random Llama built here (fast unit tests) and the real embedded model
(integration tests). Everything runs offline."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Python imports a sitecustomize module from its path at start-up, so every process a test starts
# with this file's folder on PYTHONPATH (a `cai run`'s step processes too) gets the slower mock.
SLOW_MOCK = '''import os, time
from cai.backends import mock
_generate = mock.MockBackend.generate
def generate(self, *args, **kwargs):
    time.sleep(float(os.environ.get("CAI_TEST_SLOW_MOCK", "0")))
    return _generate(self, *args, **kwargs)
mock.MockBackend.generate = generate
'''


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def slow_mock_env(tmp_path):
    """``env(seconds)``: an environment for subprocesses whose mock backend sleeps that long in each
    generate call, so that a test can kill a run between its batches."""
    folder = tmp_path / "slow_mock"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(SLOW_MOCK)
    path = os.pathsep.join([str(folder), str(Path(__file__).resolve().parents[1] / "src")])

    def env(seconds: float) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": path, "CAI_TEST_SLOW_MOCK": str(seconds)}
    return env


@pytest.fixture
def dose_study():
    """examples/dose_response.py as a module, loaded afresh for each test (tests replace its `cai`)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "dose_response", Path(__file__).resolve().parents[1] / "examples" / "dose_response.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    """The converted embedded model (converted on first use)."""
    from cai.models import resolve

    return resolve("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, smollm2_path) -> str:
    """A 2-layer random Llama with SmolLM2's tokenizer and chat template, saved as an HF folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,  # a tied random model just repeats one token greedily
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture
def vllm_start_args(monkeypatch):
    """A function ``(folder, on_cpu, **backend options) -> dict``: the keyword arguments
    :class:`cai.backends.vllm.VLLMBackend` gives ``vllm.LLM`` for that model folder, from a stand-in
    ``vllm`` module whose ``LLM`` records them and stops the start (vLLM itself is too slow to start
    for a test of its arguments)."""
    import sys
    import types

    import cai.backends.vllm as vb

    class Started(Exception):
        pass

    def start_args(folder, on_cpu: bool, **options):
        seen: dict = {}

        def fake_llm(path, **kwargs):
            seen.update(kwargs)
            raise Started

        monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=fake_llm))
        monkeypatch.setattr(vb, "_on_cpu", lambda: on_cpu)
        with pytest.raises(Started):
            vb.VLLMBackend(str(folder), **options)
        return seen

    return start_args


@pytest.fixture
def no_engine(monkeypatch):
    """``state``: once ``state["forbid"]`` is set, building any backend fails the test, for a refusal
    that must be decided before a model starts (tests/test_resume_matches_inputs.py and
    tests/test_eval_resume_matches_data.py)."""
    import cai.backends as backends

    real = backends._factory
    state = {"forbid": False}

    def factory(kind: str):
        cls = real(kind)

        def build(*args, **kwargs):
            assert not state["forbid"], f"a {kind} backend was built"
            return cls(*args, **kwargs)
        return build

    monkeypatch.setattr(backends, "_factory", factory)
    return state
