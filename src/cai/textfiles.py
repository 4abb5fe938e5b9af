"""Checks on a file the user named before it is read as text: a folder, a missing path, a binary
file or bytes that are not UTF-8 each get a one-line error that names the file (and the flag, when
the caller says which), instead of "not found" for a folder or an unnamed codec error."""

from __future__ import annotations

from pathlib import Path

from cai.errors import CAIError


def check_file(path: str | Path, flag: str = "") -> Path:
    """``path`` as a Path if it is an existing file; else why not, naming ``flag`` (e.g. ``--data``)."""
    p = Path(path).expanduser()
    name = f"{flag} {path}" if flag else str(path)
    if p.is_dir():
        raise CAIError(f"{name}: is a folder, not a file; pass the path of the file")
    if not p.is_file():
        raise CAIError(f"{name}: file not found; check the path")
    return p


def is_binary(head: bytes) -> bool:
    """Whether the first bytes of a file hold a NUL, which no text format cai reads has."""
    return b"\x00" in head


def not_text(path: str | Path, data: bytes, e: UnicodeDecodeError | None = None, line: int | None = None
             ) -> CAIError:
    """The error for ``data`` read from ``path`` (at ``line``, where known): binary (NUL bytes, or no
    decode error given), else not UTF-8 where ``e`` says."""
    if e is None or is_binary(data[:8192]):
        return CAIError(f"{path}: is a binary file, not text; pass the text file (YAML, JSON Lines, CSV) instead")
    p = Path(path)
    where = f"{path}:{line}" if line else str(path)
    return CAIError(f"{where}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); re-save it as UTF-8, "
                    f"e.g. iconv -f latin1 -t utf-8 {p.name} > {p.stem}.utf8{p.suffix}")


def read_text(path: str | Path, flag: str = "") -> str:
    """The text of a file the user named, or a one-line error saying what is wrong with it."""
    p = check_file(path, flag)
    data = p.read_bytes()
    if is_binary(data[:8192]):
        raise not_text(path, data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise not_text(path, data, e) from None
