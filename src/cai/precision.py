"""Which dtype a CPU should compute in: bfloat16 or float32, chosen by measuring (issue 16).

CPU flags alone mislead. A 2-core Intel Xeon VM with AVX512-BF16 (no AMX) ran torch's bf16 matmul
at about 149 GFLOP/s and fp32 at about 290, and SFT in bf16 there reached 0.73x the tokens/s of
the same setup in fp32 (bench/RESULTS.md, "Training throughput"); an AMD VM, also without AMX, ran
bf16 at 424-842 GFLOP/s, faster than its fp32. So the flags are only the first gate (without them
bf16 is emulated and always slow); past it, :func:`cpu_prefers_bf16` times a square matmul in both
dtypes and picks bf16 only when it is clearly faster. The measurement is cached as JSON in the cai
home, keyed by CPU model and bf16 instructions, torch version and torch thread count, so it runs once
per machine (well under a second).

Used by ``use_bf16(None)`` (SFT, DPO, reward, RLOO), ``cai ppo --lora``, and ``dtype="auto"`` on
a CPU in the hf and vllm backends and ``cai serve`` (:func:`cpu_compute_dtype`). CUDA is decided
elsewhere, by ``torch.cuda.is_bf16_supported()``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

# The file in the cai home (cai.home.cai_home) that holds the measurements.
CACHE_NAME = "cpu_matmul.json"

# bf16 must beat fp32 by this factor, not merely tie it: under autocast every bf16 matmul pays a cast
# of its fp32 inputs, and the rest of a step (softmax, norms, the loss, the optimiser, the PM's and
# the trainers' elementwise ops) gains nothing from bf16, so a matmul rate a few percent higher is
# lost in practice. On the Intel VM above, bf16 at 0.49x the fp32 matmul rate gave 0.73x the
# training tokens/s: the matmul ratio carries through only in part, in both directions.
BF16_MARGIN = 1.1


def _cpuinfo_lines(cpuinfo: str) -> list[str]:
    try:
        return Path(cpuinfo).read_text().splitlines()
    except OSError:
        return []


BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_bf16_flags(cpuinfo: str = "/proc/cpuinfo") -> list[str]:
    """The CPU's native bf16 matmul instructions among :data:`BF16_FLAGS`, read from /proc/cpuinfo."""
    for line in _cpuinfo_lines(cpuinfo):
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return [f for f in BF16_FLAGS if f in flags]
    return []


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU has native bf16 matmul instructions (AMX or AVX512-BF16), read from /proc/cpuinfo."""
    return bool(cpu_bf16_flags(cpuinfo))


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name ("Intel(R) Xeon(R) Processor"), or what the platform says where cpuinfo has none."""
    for line in _cpuinfo_lines(cpuinfo):
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine() or "unknown"


def matmul_rates(size: int = 1024, repeats: int = 3, budget_s: float = 0.25) -> dict[str, float]:
    """GFLOP/s of a ``size`` x ``size`` matmul in bf16 and in fp32 on torch's current thread count.

    One warm-up (the first call allocates and picks a kernel), then the best of ``repeats`` timed
    calls, fewer once a dtype has used ``budget_s``: a 1024 matmul is 2.1 GFLOP, about 15 ms at the
    Intel VM's bf16 rate, so the whole measurement stays well under a second on a slow CPU."""
    import torch

    gen = torch.Generator().manual_seed(0)
    a32 = torch.randn(size, size, generator=gen)
    b32 = torch.randn(size, size, generator=gen)
    rates = {}
    with torch.inference_mode():
        for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
            a, b = a32.to(dtype), b32.to(dtype)
            torch.mm(a, b)
            best = float("inf")
            start = time.perf_counter()
            for _ in range(max(1, repeats)):
                t0 = time.perf_counter()
                torch.mm(a, b)
                best = min(best, time.perf_counter() - t0)
                if time.perf_counter() - start > budget_s:
                    break
            rates[name] = 2 * size**3 / max(best, 1e-9) / 1e9
    return rates


def rates_key(cpuinfo: str = "/proc/cpuinfo") -> str:
    """What a measurement depends on: the CPU (its model name and bf16 instructions: cloud VMs of one name,
    "Intel(R) Xeon(R) Processor", come with AMX and without, at 2.7 TFLOP/s and 0.15 in bf16), torch's
    kernels (its version) and the threads it uses."""
    import torch

    flags = "+".join(cpu_bf16_flags(cpuinfo)) or "no bf16"
    return f"{cpu_model(cpuinfo)} [{flags}] | torch {torch.__version__} | {torch.get_num_threads()} threads"


def _valid(rates: object) -> bool:
    # JSON allows NaN and Infinity, and a hand-edited file anything: only two finite positive rates count.
    return (isinstance(rates, dict)
            and all(type(rates.get(k)) in (int, float) and math.isfinite(rates[k]) and rates[k] > 0
                    for k in ("bf16", "fp32")))


def _read_cache(cache: Path | None) -> dict:
    """The cache's entries; a missing, corrupt or foreign file reads as none (it is then rewritten)."""
    if cache is None:
        return {}
    try:
        data = json.loads(Path(cache).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    entries = data.get("matmul_gflops") if isinstance(data, dict) else None
    return {k: v for k, v in entries.items() if _valid(v)} if isinstance(entries, dict) else {}


def _write_cache(cache: Path | None, entries: dict) -> bool:
    """Write atomically (two processes measuring at once each leave a whole file); False where the home
    is not writable, which only means the next process measures again."""
    if cache is None:
        return False
    cache = Path(cache)
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"matmul_gflops": entries}, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, cache)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        return False
    return True


def measured_rates(cache: Path | None, *, measure: Callable[[], dict[str, float]] | None = None,
                   cpuinfo: str = "/proc/cpuinfo") -> dict[str, float]:
    """The bf16 and fp32 matmul GFLOP/s of this machine: from ``cache`` when it holds this machine's key,
    else measured (``measure``, default :func:`matmul_rates`) and written there. ``cache=None``: no cache."""
    key = rates_key(cpuinfo)
    entries = _read_cache(cache)
    if key in entries:
        return entries[key]
    rates = (measure or matmul_rates)()
    rates = {"bf16": float(rates["bf16"]), "fp32": float(rates["fp32"])}
    written = _write_cache(cache, {**entries, key: rates})
    # Once per machine: the precision now depends on it, so say what was measured and where it is kept.
    print(f"cai: CPU matmul bf16 {rates['bf16']:.0f} GFLOP/s, fp32 {rates['fp32']:.0f} GFLOP/s"
          + (f" (measured once, kept in {cache})" if written else " (not cached)"), file=sys.stderr)
    return rates


def home_cache() -> Path:
    """Where the measurements are kept: ``CACHE_NAME`` in the cai home (what ``use_bf16`` and the hf
    backend pass to :func:`cpu_prefers_bf16`)."""
    from cai.home import cai_home

    return cai_home() / CACHE_NAME


def cpu_prefers_bf16(cache: Path | None, *, measure: Callable[[], dict[str, float]] | None = None,
                     cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when this CPU should compute in bf16: it has bf16 instructions (:func:`cpu_has_bf16`; without
    them nothing is measured) and its measured bf16 matmul rate beats fp32 by :data:`BF16_MARGIN`."""
    if not cpu_has_bf16(cpuinfo):
        return False
    rates = measured_rates(cache, measure=measure, cpuinfo=cpuinfo)
    return rates["bf16"] > BF16_MARGIN * rates["fp32"]


def cpu_compute_dtype() -> str:
    """The dtype name a model computes in on this CPU: "bfloat16" where :func:`cpu_prefers_bf16` (with
    the measurement cached in :func:`home_cache`), else "float32". What the vllm backend and ``cai
    serve`` ask vLLM for when the dtype is "auto": vLLM's own "auto" keeps a bf16 model in bf16, which
    a CPU without bf16 instructions emulates, 4.9x slower than fp32 on an AVX2 EPYC (docs/performance.md)."""
    return "bfloat16" if cpu_prefers_bf16(home_cache()) else "float32"
