"""cai.backends.vllm_warmup: a compiled CPU engine's warm-up runs its forward pass but not vLLM's
dummy sampler passes, which size nothing on a CPU."""

from __future__ import annotations

import pytest


def test_opt_out_and_worker_processes_keep_vllms_warm_up(monkeypatch):
    pytest.importorskip("vllm")
    from vllm.v1.worker.cpu_model_runner import CPUModelRunner
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    from cai.backends.vllm_warmup import _no_dummy_sampler_run, skip_dummy_sampler_run

    # vLLM's inherited method on the class for this test, whatever an engine of this process set; restored afterwards.
    monkeypatch.setattr(CPUModelRunner, "_dummy_sampler_run", GPUModelRunner._dummy_sampler_run, raising=False)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    assert skip_dummy_sampler_run() is True and CPUModelRunner._dummy_sampler_run is _no_dummy_sampler_run
    assert CPUModelRunner.vllm_dummy_sampler_run is GPUModelRunner._dummy_sampler_run
    assert skip_dummy_sampler_run() is True  # twice: still in place, vLLM's kept
    assert CPUModelRunner.vllm_dummy_sampler_run is GPUModelRunner._dummy_sampler_run
    monkeypatch.setenv("CAI_VLLM_WARMUP", "vllm")
    assert skip_dummy_sampler_run() is False and CPUModelRunner._dummy_sampler_run is GPUModelRunner._dummy_sampler_run
    monkeypatch.delenv("CAI_VLLM_WARMUP")
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    assert skip_dummy_sampler_run() is False and CPUModelRunner._dummy_sampler_run is GPUModelRunner._dummy_sampler_run
    assert _no_dummy_sampler_run(None, hidden_states=object()) is None
