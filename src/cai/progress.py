"""Batching and progress bars (with ETA) for long runs; bars go to stderr and hide when not a TTY
unless asked for."""

from __future__ import annotations

import sys
from typing import Iterator, Sequence, TypeVar

T = TypeVar("T")


def batched(items: Sequence[T], size: int) -> Iterator[list[T]]:
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def progress(total: int, desc: str, unit: str = "it", initial: int = 0, enabled: bool | None = None):
    """A tqdm bar with rate and ETA. ``enabled=None`` shows it only on an interactive terminal."""
    from tqdm.auto import tqdm

    disable = (not sys.stderr.isatty()) if enabled is None else (not enabled)
    return tqdm(total=total, desc=desc, unit=unit, initial=initial, disable=disable, dynamic_ncols=True,
                file=sys.stderr)
