"""What a command may write where, checked before any model loads.

The rule, for every output of every command: an existing path is replaced only when it is cai's
own output of the same kind (a resume or a rerun), or when the user passes ``--overwrite``. A
command's input is never its output, ``--overwrite`` or not. The folder must take a new file, and
that is tried for real (a file is created there and removed at once): permission bits do not tell
for root, ``/proc``, ``/sys`` or a read-only mount. A device, pipe or socket (``/dev/null``) is
never an output.

How cai knows its own files: JSONL records by their provenance ``stage`` (:mod:`cai.store`);
eval results by ``"kind": "cai-eval-result"`` and their ``task``; HTML reports by
``<meta name="generator" content="cai ...">``; PNG images by a ``Software: cai ...`` text chunk
(matplotlib's ``metadata``, or :func:`mark_png` for a browser screenshot); SVG images by their
``dc:creator``; Parquet exports by a ``cai`` key in the schema metadata.
"""

from __future__ import annotations

import errno
import json
import os
import re
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any, Iterable, Sequence

from cai.config import option
from cai.errors import CAIError

OVERWRITE_HELP = ("start the output afresh, replacing what is there even if cai did not write it; without it an "
                  "existing output is resumed or rewritten only when it is this command's own, and anything else "
                  "is refused")
# Fields of a stage config that name what it writes, not what it reads.
OUTPUT_FIELDS = ("output", "plot", "screenshot")


class OutputError(CAIError):
    """An output path that cannot or must not be written."""


def overwrite_option() -> Any:
    """The ``--overwrite`` field of a stage config. Not recorded in provenance or a run's identity:
    it says what to do with the old output, not how the new one is made."""
    return option(False, help=OVERWRITE_HELP, recorded=False)


def add_overwrite_argument(parser: Any) -> None:
    """``--overwrite`` for a command whose flags are not a config dataclass (compare, run)."""
    import argparse

    parser.add_argument("--overwrite", action=argparse.BooleanOptionalAction, default=False, help=OVERWRITE_HELP)


def marker() -> str:
    from cai.provenance import cai_version

    return f"cai {cai_version()}"


# -- the command's inputs ------------------------------------------------------------------------

def inputs_of(config: Any, *extra: Any) -> list[str]:
    """Every text value of ``config`` (and ``extra``) that may name a file or folder it reads:
    all fields but its outputs, lists included. Which of them exist is sorted out by
    :func:`input_named`."""
    import dataclasses

    values: list[Any] = list(extra)
    if dataclasses.is_dataclass(config):
        values += [getattr(config, f.name) for f in dataclasses.fields(config)
                   if f.name not in OUTPUT_FIELDS and f.name != "overwrite"]
    out: list[str] = []
    for v in values:
        for item in (v if isinstance(v, (list, tuple)) else [v]):
            if isinstance(item, (str, Path)) and str(item).strip():
                out.append(str(item))
    return out


def _candidates(spec: str) -> list[Path]:
    """``spec`` as a path, and without a backend or source prefix (``hf:DIR``, ``hh-rlhf:FILE``)
    or a weight suffix (``FILE:0.5``)."""
    found = [spec]
    if ":" in spec:
        found += [spec.split(":", 1)[1], spec.rsplit(":", 1)[0]]
    return [Path(s).expanduser() for s in found if s]


def same_path(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def input_named(path: Path, inputs: Iterable[str]) -> str | None:
    """The input among ``inputs`` that is ``path`` itself, if any."""
    for spec in inputs:
        for c in _candidates(spec):
            if c.exists() and path.exists() and same_path(c, path):
                return spec
    return None


# -- the path itself -------------------------------------------------------------------------------

def _why(e: OSError) -> str:
    return {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exhausted",
            errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
            errno.EPERM: "permission denied", errno.ENOENT: "files cannot be created there",
            errno.EFBIG: "the file is too large for this file system"}.get(e.errno, (e.strerror or str(e)).lower())


def probe_folder(path: Path, flag: str) -> None:
    """Create a file in the folder that will hold ``path`` (or its nearest existing ancestor, which
    the command will create the rest under) and remove it; an error names why that failed."""
    folder = path if path.is_dir() else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"{flag} {path}: {folder} is not a directory; pass an output path in a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=".cai-write-check-", dir=folder)
    except OSError as e:
        raise OutputError(f"{flag} {path} is not writable: cannot create a file in {folder} ({_why(e)}); pass "
                          f"{flag} somewhere you can write") from None
    os.close(fd)
    os.unlink(name)


def check_target(path: str | Path, *, flag: str = "-o/--output", folder: bool = False, example: str = "out.jsonl",
                 inputs: Iterable[str] = ()) -> Path:
    """What every output path must be, whatever it holds: named, a regular file (or, with
    ``folder``, a folder) or nothing yet, not one of ``inputs``, and in a folder that takes a new
    file. Nothing is left behind. Returns the path."""
    if not str(path).strip():
        raise OutputError(f"empty output path; pass {flag} {'DIR' if folder else 'FILE'}")
    p = Path(path)
    if p.exists() and not p.is_dir() and not p.is_file():
        raise OutputError(f"{flag} {p} is not a regular file (a device, pipe or socket); pass {flag} "
                          f"{'a folder' if folder else 'a file'} to write to")
    if folder and p.exists() and not p.is_dir():
        raise OutputError(f"{flag} {p} is a file; pass a folder")
    if not folder and p.is_dir():
        raise OutputError(f"{flag} {p} is a directory; pass a file path, e.g. {p / example}")
    used = input_named(p, inputs)
    if used is not None:
        raise OutputError(f"{flag} {p} is also an input of this command ({used}); an output never replaces an "
                          f"input, so pass another {flag}")
    probe_folder(p, flag)
    if p.is_file() and not os.access(p, os.W_OK):
        raise OutputError(f"{flag} {p} is not writable (permission denied); pass {flag} somewhere you can write")
    return p


def check_file(path: str | Path, kind: str, *, flag: str = "-o/--output", inputs: Iterable[str] = (),
               overwrite: bool = False, example: str = "out.json") -> Path:
    """:func:`check_target`, and an existing non-empty file must be cai's own output of ``kind``
    (see :func:`foreign`) unless ``overwrite``. Nothing is modified. Returns the path."""
    p = check_target(path, flag=flag, example=example, inputs=inputs)
    if not overwrite and p.is_file() and p.stat().st_size:
        what = foreign(p, kind)
        if what is not None:
            raise OutputError(f"{flag} {p} {what}; pass another {flag}, or add --overwrite to replace it")
    return p


# -- is it cai's own? -----------------------------------------------------------------------------

def foreign(path: Path, kind: str) -> str | None:
    """None when ``path`` is cai's own output of ``kind``; else what it is instead, as the end of
    the sentence "PATH ...". Kinds: ``result:TASK``, ``html``, ``png``, ``svg``, ``parquet`` and
    ``records:STAGE`` (a JSONL record file of that stage)."""
    name, _, arg = kind.partition(":")
    if name == "result":
        return _result(path, arg)
    if name == "records":
        from cai.store import _scan

        try:
            _scan(path, stage=arg or None, key="id")
        except OutputError:
            return f"is not a `cai {arg}` record file" if arg else "is not a cai record file"
        return None
    head = _head(path)
    if name == "html":
        return None if re.search(rb'<meta name="generator" content="cai[ "]', head) else "is not a report cai wrote"
    if name == "png":
        return None if png_marked(path) else "is not an image cai drew"
    if name == "svg":
        return None if re.search(rb"<cc:Agent>\s*<dc:title>cai[ <]", head) else "is not an image cai drew"
    if name == "parquet":
        return None if _parquet_marked(path) else "is not a Parquet file cai exported"
    raise ValueError(f"unknown output kind {kind!r}")


def _head(path: Path, n: int = 8192) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def command_of(task: str) -> str:
    return "redteam" if task == "redteam" else f"eval {task}"


def result_task(data: Any) -> str | None:
    """The task of a cai result (``cai eval``, ``cai redteam``; ``cai eval labeler``'s own shape too)."""
    if not isinstance(data, dict):
        return None
    if data.get("kind") == "cai-eval-result" and isinstance(data.get("task"), str):
        return data["task"]
    prov = data.get("provenance")
    if data.get("eval") == "labeler" and isinstance(prov, dict) and prov.get("stage") == "eval-labeler":
        return "labeler"
    return None


def _result(path: Path, task: str) -> str | None:
    try:
        found = result_task(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, UnicodeDecodeError):
        return "is not a cai result (it is not JSON)"
    if found is None:
        return "is not a cai result (it holds other JSON)"
    if task and found != task:
        return f"holds a `cai {command_of(found)}` result, not a `cai {command_of(task)}` one"
    return None


def png_marked(path: Path) -> bool:
    data = _head(path, 1 << 16)
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return False
    pos = 8
    while pos + 8 <= len(data):
        (length,), ctype = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        if ctype == b"IDAT":
            return False
        if ctype == b"tEXt":
            key, _, value = data[pos + 8:pos + 8 + length].partition(b"\0")
            if key == b"Software" and value.startswith(b"cai"):
                return True
        pos += 12 + length
    return False


def mark_png(data: bytes) -> bytes:
    """``data`` (a PNG) with a ``Software: cai VERSION`` text chunk after its header."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    body = b"Software\0" + marker().encode()
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    end = 8 + 12 + struct.unpack(">I", data[8:12])[0]  # after IHDR
    return data[:end] + chunk + data[end:]


def figure_metadata(path: str | Path) -> dict[str, str]:
    """matplotlib ``savefig(metadata=...)`` that marks a PNG or SVG as cai's."""
    return {"Creator": marker()} if str(path).endswith(".svg") else {"Software": marker()}


def _parquet_marked(path: Path) -> bool:
    try:
        import pyarrow.parquet as pq

        return b"cai" in (pq.read_schema(path).metadata or {})
    except Exception:  # not Parquet at all, or pyarrow missing: not something cai exported
        return False


# -- folders -----------------------------------------------------------------------------------

def check_folder(path: str | Path, own: dict[str, str], *, flag: str = "-o/--output", inputs: Iterable[str] = (),
                 overwrite: bool = False, command: str = "") -> Path:
    """An output folder: :func:`check_target` as a folder, and (unless ``overwrite``) every entry
    already in it must be one of ``own`` (name -> kind, as for :func:`foreign`), cai's own of that
    kind, or the hidden commit file or temporary of one. Returns the path."""
    p = check_target(path, flag=flag, folder=True, inputs=inputs)
    for name in own:
        used = input_named(p / name, inputs)
        if used is not None:
            raise OutputError(f"{flag} {p}: {p / name} is also an input of this command ({used}); an output never "
                              f"replaces an input, so pass another {flag}")
    if overwrite or not p.is_dir():
        return p
    allowed = set(own) | {f".{n}.commit" for n in own} | {f"{n}.tmp" for n in own}
    strangers = sorted(e.name for e in p.iterdir() if e.name not in allowed)
    if strangers:
        shown = ", ".join(strangers[:3]) + (", ..." if len(strangers) > 3 else "")
        raise OutputError(f"{flag} {p} holds files {command or 'this command'} did not write ({shown}); pass a new "
                          f"{flag} folder, or add --overwrite to write into this one")
    for name, kind in own.items():
        f = p / name
        if f.is_file() and f.stat().st_size:
            what = foreign(f, kind)
            if what is not None:
                raise OutputError(f"{flag} {p}: {f} {what}; pass a new {flag} folder, or add --overwrite to "
                                  "replace it")
    return p


def plot_suffix(path: str | Path, flag: str, allowed: Sequence[str] = (".png",)) -> None:
    """A plot's file name must end in a format it is drawn in; checked before the work."""
    if Path(path).suffix.lower() not in allowed:
        raise OutputError(f"{flag} {path}: name a {' or '.join(allowed)} file, e.g. {flag} "
                          f"{Path(path).with_suffix(allowed[0])}")
