"""Which decode attention an engine runs, cai's or vLLM's, timed on the engine's own steps.

cai's shared-block kernel (:mod:`cai.backends.vllm_attention`) was measured faster than vLLM's on
a CPU that computes in float32 (the AVX2 VM, bench/RESULTS.md). On a CPU with bf16 instructions
vLLM's kernel runs on ``vdpbf16ps`` while cai's widens each block to float32, and no machine of
that kind has timed the two against each other. So there an engine times them itself, as cuDNN's
benchmark mode picks a convolution algorithm: on its first decode-only steps of each kind, one
layer's attention runs both ways on the same inputs (cai's output is kept; vLLM's forward writes
no cache, so running it again changes nothing), the order alternating from step to step so that
neither gets the other's warm caches every time. After ``pairs`` steps of a kind the faster, by the
median of the paired ratios, runs that kind's steps for the rest of the engine's life; on a tie
vLLM's stays. A step's kind is what changes which kernel wins: whether every row shares a long run
of blocks that goes through matrix products (the root), and whether rows share blocks at all.
"""
from __future__ import annotations

import logging
import statistics
import time
from typing import Any, Callable

_log = logging.getLogger(__name__)


def step_kind(segs: Any, root: Any, rows: int) -> tuple[bool, bool]:
    """``(root, shared)`` for a decode step :func:`cai.backends.vllm_attention.plan` laid out:
    whether it has a root, and whether its rows read each block at least twice on average."""
    root_blocks = 0 if root is None else int(root[0].numel())
    widths = segs[:, 3] - segs[:, 2]
    reads = int(((segs[:, 1] - segs[:, 0]) * widths).sum()) + rows * root_blocks
    distinct = int(widths.sum()) + root_blocks
    return root is not None, reads >= 2 * max(distinct, 1)


class KernelPick:
    """Paired timings of the two kernels per step kind, and the choice once ``pairs`` are in."""

    def __init__(self, pairs: int = 6) -> None:
        self.pairs = pairs
        self.ratios: dict[tuple[bool, bool], list[float]] = {}
        self.choice: dict[tuple[bool, bool], bool] = {}  # kind -> whether cai's kernel runs it

    def wants_cai(self, kind: tuple[bool, bool]) -> bool | None:
        """True or False once ``kind`` is decided; None while it is still being timed."""
        return self.choice.get(kind)

    def cai_first(self, kind: tuple[bool, bool]) -> bool:
        """Whether cai's kernel runs first in this kind's next timed pair (every other pair)."""
        return len(self.ratios.get(kind, ())) % 2 == 0

    def time_pair(self, kind: tuple[bool, bool], cai: Callable[[], None], vllm: Callable[[], None]) -> None:
        """Run both kernels on one layer's inputs, in this kind's turn of order, and record their times."""
        seconds = {}
        for name, run in (("cai", cai), ("vllm", vllm)) if self.cai_first(kind) else (("vllm", vllm), ("cai", cai)):
            start = time.perf_counter()
            run()
            seconds[name] = time.perf_counter() - start
        self.record(kind, seconds["cai"], seconds["vllm"])

    def record(self, kind: tuple[bool, bool], cai_seconds: float, vllm_seconds: float) -> None:
        """One pair's times; the kind is decided when it has ``pairs`` of them."""
        ratios = self.ratios.setdefault(kind, [])
        ratios.append(cai_seconds / max(vllm_seconds, 1e-9))
        if len(ratios) >= self.pairs and kind not in self.choice:
            ratio = statistics.median(ratios)
            self.choice[kind] = ratio < 1.0
            _log.debug("cai: decode attention on steps with%s a root, %s blocks: cai's kernel takes %.2fx "
                       "vLLM's time (median of %d); %s runs them", "" if kind[0] else "out",
                       "shared" if kind[1] else "unshared", ratio, len(ratios),
                       "cai's" if self.choice[kind] else "vLLM's")
