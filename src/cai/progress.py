"""Batching and progress bars (with ETA) for long runs; bars go to stderr and hide when not a TTY
unless asked for."""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterator, Sequence, TypeVar

from cai.env_flags import env_switch

T = TypeVar("T")


def batched(items: Sequence[T], size: int) -> Iterator[list[T]]:
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


# ``cai run --progress/--no-progress`` reaches its step processes through this variable: the steps
# are other processes, whose stderr is the same terminal or log as the runner's.
PROGRESS_ENV = "CAI_PROGRESS"


def bars_wanted(enabled: bool | None = None) -> bool:
    """Whether to draw bars: ``enabled`` when given; else ``CAI_PROGRESS`` (1 or 0) when set; else
    only on an interactive terminal, since in a log file every redraw is a line."""
    if enabled is not None:
        return enabled
    switch = env_switch(PROGRESS_ENV)
    return sys.stderr.isatty() if switch is None else switch


def progress(total: int, desc: str, unit: str = "it", initial: int = 0, enabled: bool | None = None):
    """A tqdm bar with rate and ETA. ``enabled=None``: see :func:`bars_wanted`."""
    from tqdm.auto import tqdm

    disable = not bars_wanted(enabled)
    return tqdm(total=total, desc=desc, unit=unit, initial=initial, disable=disable, dynamic_ncols=True,
                file=sys.stderr)


@contextlib.contextmanager
def library_bars(enabled: bool | None) -> Iterator[None]:
    """Hugging Face's own bars (loading weights, ``datasets`` maps, writing shards) follow cai's
    ``--progress/--no-progress`` (``None``: :func:`bars_wanted`); restored afterwards."""
    if bars_wanted(enabled):
        yield
        return
    import datasets
    import huggingface_hub.utils as hub
    import transformers.utils.logging as hf

    was = (hf.is_progress_bar_enabled(), datasets.is_progress_bar_enabled(), hub.are_progress_bars_disabled())
    hf.disable_progress_bar()
    datasets.disable_progress_bars()
    hub.disable_progress_bars()
    try:
        yield
    finally:
        if was[0]:
            hf.enable_progress_bar()
        if was[1]:
            datasets.enable_progress_bars()
        if not was[2]:
            hub.enable_progress_bars()


def quiet_trainer(trainer: Any) -> None:
    """A ``transformers.Trainer`` that prints no log dicts: without a bar it ``print``s each one to
    stdout (``PrinterCallback``), with one it writes them under the bar. The numbers are in the run's
    metrics.jsonl and curves already; stdout stays free for a command's output."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class BarOnly(ProgressCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            pass

    trainer.remove_callback(PrinterCallback)
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(BarOnly())
