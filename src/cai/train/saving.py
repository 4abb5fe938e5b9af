"""A trainer whose save fails stops with one line, and keeps its last good checkpoint.

Saves fail in three shapes, depending on which library is writing: ``OSError`` (a JSON file, a
folder), safetensors' ``SafetensorError`` (the weights; its message carries the OS error) and a
``RuntimeError`` from torch's stream writer (the optimizer state; its message names no cause, so
the free space decides). :func:`saving` turns any of them, raised while a run trains or writes its
model, into a :class:`~cai.errors.CAIError` naming the folder, the cause and the checkpoint a rerun
resumes from; the half-written checkpoint or model files are removed first, so the disk is not
left full and a rerun never meets them. Every other error passes through unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import re
import shutil
from pathlib import Path
from typing import Any, Iterator

from cai.errors import CAIError

_CAUSES = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exhausted",
           errno.EFBIG: "the file is too large for this file system", errno.EIO: "an I/O error on the disk",
           errno.EROFS: "the folder is not writable (read-only file system)",
           errno.EACCES: "the folder is not writable (permission denied)",
           errno.EPERM: "the folder is not writable (permission denied)"}
# The OS error inside a safetensors or torch message: "os error 28", "No space left on device", ...
_IN_TEXT = [(re.compile(r"os error 28|StorageFull|No space left", re.I), errno.ENOSPC),
            (re.compile(r"os error 122|QuotaExceeded|quota", re.I), errno.EDQUOT),
            (re.compile(r"os error 30|ReadOnlyFilesystem|read-only file system", re.I), errno.EROFS),
            (re.compile(r"os error 13|PermissionDenied|Permission denied", re.I), errno.EACCES)]
_TORCH_WRITER = re.compile(r"PytorchStreamWriter|file write failed|unexpected pos \d+")
# Below this much free space a write that failed without saying why is put down to a full disk.
_NEARLY_FULL = 256 << 20


def save_failure(e: BaseException, folder: str | Path) -> str | None:
    """Why a save into ``folder`` failed, as words ("the disk is full"), or None when ``e`` is not
    a failed write (a bug, a dropped connection, an out-of-memory GPU)."""
    if isinstance(e, OSError) and not isinstance(e, ConnectionError):
        return _CAUSES.get(e.errno)
    text = str(e)
    if type(e).__name__ == "SafetensorError" or (isinstance(e, RuntimeError) and _TORCH_WRITER.search(text)):
        for pattern, code in _IN_TEXT:
            if pattern.search(text):
                return _CAUSES[code]
        if _free(folder) < _NEARLY_FULL:
            return _CAUSES[errno.ENOSPC]
        return f"writing failed ({' '.join(text.split())[:160]})"
    return None


def _free(folder: str | Path) -> int:
    p = Path(folder)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return 1 << 62


@contextlib.contextmanager
def saving(run: Any, *, checkpoint: Any = None, model_files: bool = False) -> Iterator[None]:
    """Training or saving into ``run`` (a :class:`~cai.train.rundir.RunDir`): a failed write
    becomes one line. ``checkpoint()`` returns the last complete checkpoint, clearing any partial
    one (default: ``run.last_checkpoint``); ``model_files``: the final model is being written, so
    the files it added to the folder are removed again."""
    before = set(p.name for p in run.path.iterdir()) if model_files and run.path.is_dir() else None
    try:
        yield
    except BaseException as e:
        cause = save_failure(e, run.path)
        if cause is None:
            raise
        if before is not None:
            for p in run.path.iterdir():
                if p.name not in before:
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        good = (checkpoint or run.last_checkpoint)()
        where = "the trained model" if model_files else "a checkpoint"
        keep = (f"the last good checkpoint {good} is kept, and the same command resumes from it" if good else
                "no checkpoint was complete yet, so the same command starts again")
        fix = "free some space" if "full" in cause or "quota" in cause or "large" in cause else "fix that"
        raise CAIError(f"cannot save {where} to {run.path}: {cause}; {keep} once you {fix}") from None
