"""How cai replaces one method of a vLLM class (:mod:`cai.backends.vllm_sampler`,
:mod:`cai.backends.vllm_warmup`): only for an engine in this process, only on the vLLM version the
replacement was checked against, and not where the user asks for vLLM's own (``ENV=vllm``)."""

from __future__ import annotations

import os
from typing import Any

CHECKED_VERSION = "0.32."


def replace_method(cls: Any, name: str, replacement: Any, env: str) -> bool:
    """Put ``replacement`` in place of ``cls.name`` for engines created after this call in this process,
    keeping vLLM's method on the class as ``vllm_<name>`` (leading underscores dropped); with
    ``env`` set to ``vllm``, put vLLM's back. Returns whether the replacement is in place."""
    try:
        import vllm
    except ImportError:  # vLLM's submodules were imported, then vLLM made unimportable (a test does this)
        return False
    current = getattr(cls, name, None)
    saved = "vllm_" + name.lstrip("_")
    if os.environ.get(env, "").lower() == "vllm":
        if current is replacement:  # put vLLM's back for the engines to come
            setattr(cls, name, getattr(cls, saved))
        return False
    if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") != "0":
        return False  # the engine's own process would not see the change
    if current is replacement:
        return True
    if current is None or not str(getattr(vllm, "__version__", "")).startswith(CHECKED_VERSION):
        return False
    setattr(cls, saved, current)
    setattr(cls, name, replacement)
    return True
