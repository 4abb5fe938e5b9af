"""How much KV cache vLLM gets on a CPU, in bytes, from what the model needs and what memory is free.

vLLM's CPU worker sizes its memory as ``gpu_memory_utilization`` times the *total* memory of its
NUMA node. A node's total can be far below the machine's: virtual machines that hot-plug memory
report a fraction of it right after boot (9.5 of 24 GiB was seen), growing as it is used, and a
container's memory limit is not the node's at all. A share of a total that is wrong left a
negative KV budget and vLLM refused to start. So cai asks for an explicit ``kv_cache_memory_bytes``
instead: enough for the job (a batch of sequences of the model's length), never more than half
of what the node really has free after the weights, and at least one full-length sequence.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

GiB = 1 << 30
# KV cache for one command's job, per CPU core the engine runs on: 64k tokens on 2 cores. vLLM
# touches every page of its cache as it starts, about 2.6 s per 100k tokens of SmolLM2's cache on a
# 2-core VM (start 27.0 s at 256k tokens, 20.3 s at 64k; bench/engine_start.py), and a CPU's
# decode gains little from more sequences in flight than its cores can feed. The quickstart's
# critique step (64 conversations of up to about 1,200 tokens) gave the same records in 63 s with
# a 45k-token cache as in 72 s with 256k (docs/performance.md). More requests than fit wait their
# turn in vLLM's queue.
TOKENS_PER_CPU = 32 * 1024
# A long-lived server (`cai serve`) starts once and takes whatever batch its clients send.
SERVER_TOKENS = 256 * 1024
# A quick start (one prompt) needs far less.
QUICK_JOB_TOKENS = 16 * 1024
# Kept free for activations, the tokenizer, Python and whatever else runs beside the engine.
RESERVE_BYTES = 1 * GiB
# Never take more than this share of what is free after the weights and the reserve: the node's
# free memory moves as other processes (and a hot-plugging hypervisor) come and go.
FREE_SHARE = 0.5


def _config(path: str | Path) -> dict[str, Any]:
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    if isinstance(config.get("text_config"), dict):  # multimodal wrappers keep the LM's fields inside
        config = {**config, **config["text_config"]}
    return config


def kv_bytes_per_token(path: str | Path, dtype_bytes: int = 2) -> int | None:
    """Bytes of K and V for one token across all layers, from the model's config.json; None when
    the config does not say (then the caller falls back to a fixed budget)."""
    c = _config(path)
    layers, heads, hidden = c.get("num_hidden_layers"), c.get("num_attention_heads"), c.get("hidden_size")
    kv_heads = c.get("num_key_value_heads") or heads
    head_dim = c.get("head_dim") or (hidden // heads if isinstance(hidden, int) and isinstance(heads, int) and heads else None)
    if not all(isinstance(v, int) and v > 0 for v in (layers, kv_heads, head_dim)):
        return None
    return 2 * layers * kv_heads * head_dim * dtype_bytes


_VALUE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2}


def bytes_per_value(dtype: str, path: str | Path | None = None) -> int:
    """Bytes of one weight or KV value computed in ``dtype``; "auto" is the dtype ``path``'s config.json
    stores (2 where it does not say)."""
    if dtype == "auto":
        c = _config(path) if path is not None else {}
        dtype = str(c.get("torch_dtype") or c.get("dtype") or "bfloat16")
    return _VALUE_BYTES.get(dtype.removeprefix("torch."), 2)


def weights_bytes(path: str | Path) -> int:
    """Size of the weight files: the engine loads them before it allocates the KV cache."""
    p = Path(path)
    files = (list(p.glob("*.safetensors")) or list(p.glob("*.bin"))) if p.is_dir() else []
    return sum(f.stat().st_size for f in files)


def _cgroup_free() -> int | None:
    """Memory a cgroup-v2 limit still allows this container, or None without a limit."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
    except (OSError, ValueError):
        return None


def node_free_bytes() -> int:
    """Free memory on the NUMA node vLLM will allocate from, read exactly as vLLM reads it, and
    capped by a container limit."""
    try:
        from vllm.utils.cpu_resource_utils import get_allowed_cpu_list, get_memory_node_info

        cpus = get_allowed_cpu_list()
        free = int(get_memory_node_info(cpus[0].numa_node if cpus else 0).available_memory)
    except (ImportError, AttributeError, OSError, IndexError, KeyError):
        import psutil

        free = int(psutil.virtual_memory().available)
    cgroup = _cgroup_free()
    return min(free, cgroup) if cgroup is not None else free


def job_tokens(cpus: int | None = None) -> int:
    """Tokens of KV cache for one command's job on a CPU with ``cpus`` cores (default: those this
    process may run on), counting at least two."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return max(2, cpus) * TOKENS_PER_CPU


def cpu_kv_cache_bytes(path: str | Path, max_model_len: int, *, quick_start: bool = False, tokens: int | None = None,
                       free_bytes: int | None = None, dtype_bytes: int = 2) -> int:
    """The KV cache to ask vLLM for, in bytes: ``tokens`` of it (default: :func:`job_tokens`; a
    quick start's far fewer), at least one sequence of ``max_model_len``, with weights and cache at
    ``dtype_bytes`` a value (:func:`bytes_per_value` of the dtype the engine computes in). Raises
    ``MemoryError`` with a one-line reason when even that one sequence does not fit."""
    free = node_free_bytes() if free_bytes is None else free_bytes
    # Weights stored in bf16 take twice their files' size once loaded in fp32.
    weights = weights_bytes(path) * dtype_bytes // bytes_per_value("auto", path)
    budget = int((free - weights - RESERVE_BYTES) * FREE_SHARE)
    per_token = kv_bytes_per_token(path, dtype_bytes)
    if per_token is None:  # an unusual config: a fixed 2 GiB, within the budget
        want, need = 2 * GiB, 256 * 1024 * 1024
    else:
        if tokens is None:
            tokens = QUICK_JOB_TOKENS if quick_start else job_tokens()
        want = per_token * max(tokens, max_model_len)
        need = per_token * max_model_len
    if budget < need:
        raise MemoryError(f"only {free / GiB:.1f} GiB of memory is free on this machine's memory node; the model "
                          f"needs {weights / GiB:.1f} GiB of weights, {RESERVE_BYTES / GiB:.0f} GiB of room "
                          f"and {need / GiB:.2f} GiB of KV cache for one {max_model_len}-token sequence")
    return min(want, budget)
