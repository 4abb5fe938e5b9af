"""The KV cache vLLM gets on a CPU is sized in bytes from the model and the job, within what the
memory node has free; a bare model name falls back to hf when vLLM cannot start.

The reliability issue's failure: right after boot a VM's NUMA node reported 9.46 of its 24 GiB,
vLLM sized its memory as a share of that total, and the default command died. Here the node is
shrunk by monkeypatching the function vLLM itself reads, and the default path still answers.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from cai.backends import is_explicit, load_backend, split_spec
from cai.backends.vllm_memory import (GiB, QUICK_JOB_TOKENS, SERVER_TOKENS, cpu_kv_cache_bytes, job_tokens,
                                      kv_bytes_per_token)
from cai.errors import BackendUnavailable, CAIError
from cai.types import SamplingParams

SMOLLM2 = {"num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "hidden_size": 576,
           "max_position_embeddings": 8192}


def _model(tmp_path, config=SMOLLM2, weights=269_060_552):
    (tmp_path / "config.json").write_text(json.dumps(config))
    with open(tmp_path / "model.safetensors", "wb") as f:
        f.truncate(weights)  # a sparse file: only its size matters here
    return tmp_path


def test_kv_bytes_per_token_from_the_config(tmp_path):
    # 2 (K and V) x 30 layers x 3 KV heads x 64 dims x 2 bytes (bf16)
    assert kv_bytes_per_token(_model(tmp_path)) == 2 * 30 * 3 * 64 * 2 == 23040
    assert kv_bytes_per_token(_model(tmp_path, {**SMOLLM2, "head_dim": 128})) == 2 * 30 * 3 * 128 * 2
    assert kv_bytes_per_token(_model(tmp_path, {"hidden_size": 8})) is None


def test_sized_for_the_job_when_memory_is_plentiful(tmp_path, monkeypatch):
    path = _model(tmp_path)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert job_tokens() == 64 * 1024  # 2 cores
    assert cpu_kv_cache_bytes(path, 4096, free_bytes=20 * GiB) == 23040 * 64 * 1024
    assert cpu_kv_cache_bytes(path, 4096, free_bytes=20 * GiB, quick_start=True) == 23040 * QUICK_JOB_TOKENS
    assert cpu_kv_cache_bytes(path, 4096, free_bytes=20 * GiB, tokens=SERVER_TOKENS) == 23040 * 256 * 1024
    # Never less than one sequence of the model's length.
    assert cpu_kv_cache_bytes(path, 128 * 1024, free_bytes=20 * GiB) == 23040 * 128 * 1024


def test_a_job_cache_grows_with_the_cores():
    assert job_tokens(1) == job_tokens(2) == 64 * 1024
    assert job_tokens(16) == 512 * 1024


def test_the_small_node_after_boot_still_gets_a_cache(tmp_path):
    # 8.31 GiB free on a node reporting 9.46: a 10% share of the total minus the process's RSS was
    # negative; in bytes it is half of what is free after weights and a reserve, capped by the job.
    path = _model(tmp_path)
    kv = cpu_kv_cache_bytes(path, 4096, free_bytes=int(8.31 * GiB), tokens=SERVER_TOKENS)
    assert 23040 * 4096 <= kv <= (8.31 * GiB - 269_060_552 - GiB) / 2
    assert kv == min(23040 * SERVER_TOKENS, int((int(8.31 * GiB) - 269_060_552 - GiB) * 0.5))


def test_too_little_memory_is_one_clear_reason(tmp_path):
    with pytest.raises(MemoryError, match=r"only 1\.1 GiB of memory is free.*4096-token sequence"):
        cpu_kv_cache_bytes(_model(tmp_path), 4096, free_bytes=int(1.1 * GiB))


def test_a_mistyped_backend_is_not_sent_to_vllm():
    with pytest.raises(ValueError, match="unknown backend 'foo'.*hf:, vllm:"):
        split_spec("foo:bar:baz")
    assert is_explicit("vllm:x") and not is_explicit("smollm2-135m") and not is_explicit("foo:bar")


def test_a_bare_adapter_folder_goes_to_hf(tmp_path, monkeypatch):
    """vLLM loads a LoRA adapter only beside its base model; a bare --keep-adapter folder tried it first and
    failed with a KV-cache message before falling back."""
    import cai.backends as backends

    monkeypatch.setattr(backends, "vllm_available", lambda: True)
    (tmp_path / "adapter_config.json").write_text("{}")
    assert split_spec(str(tmp_path)) == ("hf", str(tmp_path))
    (tmp_path / "config.json").write_text("{}")  # a merged model folder: vLLM's
    assert split_spec(str(tmp_path)) == ("vllm", str(tmp_path))


def test_bare_name_falls_back_to_hf_when_vllm_cannot_start(monkeypatch, capsys, tiny_llama_dir):
    import cai.backends.vllm as vllm_mod

    def broken(*args, **kwargs):
        raise BackendUnavailable("vLLM cannot start 'x': only 0.2 GiB of memory is free")

    monkeypatch.setattr("cai.backends.vllm_available", lambda: True)
    monkeypatch.setattr(vllm_mod, "VLLMBackend", broken)
    backend = load_backend(tiny_llama_dir)
    assert backend.name == f"hf:{tiny_llama_dir}"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "used the hf backend instead" in err and "0.2 GiB" in err
    # An explicit vllm: is a request for vLLM: it fails with the reason instead.
    with pytest.raises(CAIError, match="0.2 GiB"):
        load_backend(f"vllm:{tiny_llama_dir}")


@pytest.mark.vllm
def test_default_path_answers_on_a_small_numa_node(monkeypatch, tmp_path_factory, smollm2_path):
    pytest.importorskip("vllm")
    import vllm.utils.cpu_resource_utils as res
    import vllm.v1.worker.cpu_worker as worker
    from test_backend_vllm import _build_tiny_llama

    small = SimpleNamespace(total_memory=int(9.46 * GiB), available_memory=int(8.31 * GiB))
    for module in (res, worker):
        monkeypatch.setattr(module, "get_memory_node_info", lambda node=0: small)
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    tiny = _build_tiny_llama(smollm2_path, str(tmp_path_factory.mktemp("vllm-small-node")))
    backend = load_backend(tiny, quick_start=True)  # what `cai generate "..."` loads
    try:
        assert backend.name.startswith("vllm:"), "the default path should still be vLLM"
        (out,) = backend.generate([[{"role": "user", "content": "Hi"}]], SamplingParams(max_tokens=4, temperature=0))
        assert out.completion_tokens >= 1
        kv = backend.llm.llm_engine.vllm_config.cache_config.kv_cache_memory_bytes
        assert 0 < kv <= (8.31 * GiB - GiB) / 2
    finally:
        backend.close()


def test_a_model_computed_in_fp32_takes_twice_the_bytes(tmp_path):
    from cai.backends.vllm_memory import bytes_per_value

    path = _model(tmp_path, {**SMOLLM2, "torch_dtype": "bfloat16"})
    assert [bytes_per_value(d, path) for d in ("auto", "bfloat16", "float32", "float16")] == [2, 2, 4, 2]
    assert bytes_per_value("auto", _model(tmp_path, {**SMOLLM2, "torch_dtype": "float32"})) == 4
    path = _model(tmp_path, {**SMOLLM2, "torch_dtype": "bfloat16"})
    # The job's cache holds as many tokens at twice the bytes a token...
    assert cpu_kv_cache_bytes(path, 4096, free_bytes=20 * GiB, dtype_bytes=4) == 2 * 23040 * 64 * 1024
    # ...and the weights, stored in bf16, count twice their files' size against what is free.
    free = int(8.31 * GiB)
    assert cpu_kv_cache_bytes(path, 4096, free_bytes=free, tokens=SERVER_TOKENS, dtype_bytes=4) == \
        int((free - 2 * 269_060_552 - GiB) * 0.5)
