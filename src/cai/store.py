"""Append-only JSONL record files that survive ``kill -9`` and resume where they stopped.

Each record has a stable ``id``. A batch is written with one ``write`` and ``fsync``; if a process
dies mid-write, the torn last line is cut off the next time the file is opened, so the file always
holds whole records, each id at most once. Running the same command again skips the ids present.

Opening a store never damages a file that is not a record file of the same stage: a text, binary
or prompt file, a directory, or another command's records are refused with a one-line error
before anything is cut or written (:func:`check_output`, which every command calls before it loads
a model). Only a last line that is torn JSON (starts with ``{``, does not parse, no newline) is cut;
a complete last record that merely lacks its newline is kept.

Fault injection (tests only): ``CAI_FAULT=WHEN:N`` makes the N-th :meth:`RecordStore.append` of
the process kill it with SIGKILL, ``before_write`` (the batch's model work is lost), ``mid_write``
(half the batch's bytes reach the file, then the kill: a torn line) or ``after_write`` (the batch
is durable). ``after_checkpoint:N`` kills a trainer once its step-N checkpoint is complete
(:func:`checkpoint_fault`). With ``CAI_FAULT_GROUP=1`` the kill takes the whole process group (a
``cai run`` and its step process, as a kill -9 of the session would). ``tests/faults.py`` drives
it; nothing else reads it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
from pathlib import Path
from typing import Any, Iterable, Iterator

from cai.errors import CAIError
from cai.outputs import OutputError, check_target  # OutputError: public here too, where it began

FAULT_ENV = "CAI_FAULT"
FAULT_POINTS = ("before_write", "mid_write", "after_write", "after_checkpoint")
# Non-empty appends so far in this process, counted only for CAI_FAULT (test-only fault injection).
_WRITES = [0]
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: Any, *, max_len: int = 120) -> str:
    """A file-name component made from ``name`` (a record id, a model or task name from data):
    path separators, ``..``, NUL and other unsafe characters become ``-``, so the result always
    names an entry inside its parent folder."""
    text = _SAFE.sub("-", str(name)).strip(".-")
    return (text or "unnamed")[:max_len]


def path_inside(root: str | Path, *parts: Any) -> Path:
    """``root/part/...`` with every part passed through :func:`safe_name`; raises if the result
    would still leave ``root`` (it cannot, but the check keeps it so if safe_name ever changes)."""
    base = Path(root).resolve()
    p = base.joinpath(*(safe_name(x) for x in parts)).resolve()
    if p != base and base not in p.parents:
        raise OutputError(f"{p} is outside {base}")
    return p


def sidecar(path: str | Path, tag: str) -> Path:
    """``out.jsonl`` -> ``out.TAG.jsonl``: a companion record file (skipped items, examples)."""
    p = Path(path)
    stem = p.name[: -len(".jsonl")] if p.name.endswith(".jsonl") else p.name
    return p.with_name(f"{stem}.{tag}.jsonl")


def _stage_of(rec: dict[str, Any]) -> str | None:
    prov = rec.get("provenance")
    return prov.get("stage") if isinstance(prov, dict) else None


def _fault(point: str, count: int) -> bool:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return False
    when, _, n = spec.partition(":")
    if when not in FAULT_POINTS:
        raise CAIError(f"{FAULT_ENV}={spec!r}: use one of {', '.join(FAULT_POINTS)} followed by :N")
    return when == point and count == int(n or 1)


def _die() -> None:
    if os.environ.get("CAI_FAULT_GROUP") == "1":
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def checkpoint_fault(step: int) -> None:
    """Test-only fault point of the trainers, called once the checkpoint of ``step`` is complete."""
    if _fault("after_checkpoint", step):
        _die()


def check_output(path: str | Path, *, stage: str | None = None, key: str = "id", records: bool = True,
                 inputs: Iterable[str] = (), overwrite: bool = False, flag: str = "-o/--output") -> Path:
    """Fail now, before any model work, if ``path`` cannot take this command's output.

    The path must not be a directory, a device or one of ``inputs``; its folder must take a new file
    (tried for real: :func:`cai.outputs.check_target`); and an existing file must be (when
    ``records`` and not ``overwrite``) a JSONL file of records with ``key`` whose provenance stage is
    ``stage``. Nothing is modified. Returns the path.
    """
    p = check_target(path, flag=flag, example="out.jsonl", inputs=inputs)
    if p.exists() and records and not overwrite:
        _scan(p, stage=stage, key=key)
    return p


def _scan(path: Path, *, stage: str | None, key: str) -> tuple[int, bool]:
    """Validate an existing record file without touching it. Returns (bytes to keep, whether the
    kept part lacks a final newline)."""
    data = path.read_bytes()
    if not data.strip():
        return len(data), False
    if b"\0" in data[:8192]:
        raise OutputError(f"{path} is a binary file, not a cai record file; pass a new -o/--output, or add "
                          "--overwrite to replace it")
    lines = data.splitlines(keepends=True)
    keep, missing_newline, seen = len(data), False, 0
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        last = i == len(lines) - 1
        try:
            rec = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            if last and not raw.endswith(b"\n") and raw.lstrip().startswith(b"{"):
                keep -= len(raw)  # a write torn by a crash: the only line a crash can damage
                break
            if seen == 0:
                raise OutputError(f"{path} is not a cai record file (line {i + 1} is not JSON); pass a new "
                                  "-o/--output, or add --overwrite to replace it") from None
            raise OutputError(f"{path}:{i + 1}: not a JSON record; fix or remove that line") from None
        if not isinstance(rec, dict) or key not in rec:
            raise OutputError(f"{path}:{i + 1}: not a cai record (no {key!r} field); pass a new -o/--output, "
                              "or add --overwrite to replace the file")
        if stage is not None and seen == 0:
            found = _stage_of(rec)
            if found is None:  # a prompt file, a dataset from elsewhere: data cai must not append to
                raise OutputError(f"{path} is not a `cai {stage}` output (its records carry no cai provenance; "
                                  "a prompt file?); pass a new -o/--output, or add --overwrite to replace it")
            if found != stage:
                raise OutputError(f"{path} holds `cai {found}` records, not `cai {stage}` ones; pass a new "
                                  "-o/--output (appending would mix two kinds of record in one dataset), or add "
                                  "--overwrite to replace it")
        seen += 1
        missing_newline = last and not raw.endswith(b"\n")
    return keep, missing_newline


class RecordStore:
    def __init__(self, path: str | Path, *, key: str = "id", stage: str | None = None, overwrite: bool = False,
                 inputs: Iterable[str] = ()) -> None:
        """``overwrite``: whatever is at ``path`` is neither read nor checked, and is replaced by the
        first append (until then it stays as it was). ``inputs``: the command's inputs, which the
        path must not be."""
        self.path = Path(path)
        self.key = key
        self.stage = stage
        self.ids: set[str] = set()
        self._needs_newline = False
        check_output(self.path, stage=stage, key=key, records=False, inputs=inputs)
        self._replace = overwrite and self.path.exists()
        if self.path.exists() and not overwrite:
            self._repair()
            for rec in self:
                self.ids.add(str(rec[key]))
        self._opened = False  # the commit is written at the first append, so opening writes nothing

    @property
    def commit_path(self) -> Path:
        """A small sidecar holding the file's length after the last whole batch."""
        return self.path.with_name(f".{self.path.name}.commit")

    def _committed(self) -> int | None:
        try:
            return int(json.loads(self.commit_path.read_text())["bytes"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _commit(self, size: int) -> None:
        tmp = self.commit_path.with_name(self.commit_path.name + ".tmp")
        tmp.write_text(json.dumps({"bytes": size, "file": self.path.name}) + "\n")
        os.replace(tmp, self.commit_path)

    def _repair(self) -> None:
        """Cut a batch torn by a crash; everything else was checked by :func:`_scan`.

        A torn last line means the last append died part-way, possibly after some of its records
        were whole: the file is cut back to the length committed before that append, so a batch is
        kept whole or not at all (a prompt's pairs, say, are never half there). Without a commit
        (a file from elsewhere) only the torn line goes. Whole lines past the commit (the process
        died between writing and committing) are kept: they are complete."""
        size = self.path.stat().st_size
        keep, self._needs_newline = _scan(self.path, stage=self.stage, key=self.key)
        committed = self._committed()
        if keep != size and committed is not None and committed <= keep:
            keep, self._needs_newline = committed, False
        if keep != size:
            with open(self.path, "r+b") as f:
                f.truncate(keep)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._replace or not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    rec = json.loads(line)
                    if self.key not in rec:
                        raise ValueError(f"{self.path}:{n}: record has no {self.key!r} field")
                    yield rec

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, record_id: object) -> bool:
        return str(record_id) in self.ids

    def todo(self, items: Iterable[Any], key=lambda item: item["id"]) -> list[Any]:
        """The items whose id is not yet stored, in their original order."""
        return [it for it in items if str(key(it)) not in self.ids]

    def append(self, records: Iterable[dict[str, Any]]) -> int:
        """Write whole records durably; ids already present are skipped. Returns how many were written."""
        fresh, seen = [], set()
        for rec in records:
            rid = str(rec[self.key])
            if rid in self.ids or rid in seen:
                continue
            seen.add(rid)
            fresh.append(rec)
        if not fresh:
            return 0
        lines = []
        for r in fresh:
            try:
                lines.append(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n")
            except ValueError:
                raise CAIError(f"record {r[self.key]!r} holds NaN or infinity, which JSON cannot store; "
                               "check the sampling settings and the model's scores") from None
        payload = ("\n" if self._needs_newline else "") + "".join(lines)
        data = payload.encode("utf-8")
        _WRITES[0] += 1
        if _fault("before_write", _WRITES[0]):
            _die()
        try:
            if self._replace:  # --overwrite: the old file goes at the first write, not before
                self.path.unlink()
                self.commit_path.unlink(missing_ok=True)
                self._replace = False
        except OSError as e:
            raise OutputError(f"cannot replace {self.path}: {e.strerror or e}; nothing was written") from None
        size = self.path.stat().st_size if self.path.exists() else 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self._opened:
                self._commit(size)
                self._opened = True
            with open(self.path, "ab") as f:
                if _fault("mid_write", _WRITES[0]):
                    f.write(data[: max(1, len(data) // 2)])
                    f.flush()
                    os.fsync(f.fileno())
                    _die()
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            self._undo(size)
            raise OutputError(_write_error(self.path, e, len(self.ids))) from None
        self._needs_newline = False
        try:
            self._commit(size + len(data))
        except OSError:
            pass  # the records are whole; without the commit a later torn line alone is cut
        if _fault("after_write", _WRITES[0]):
            _die()
        self.ids.update(seen)
        return len(fresh)

    def _undo(self, size: int) -> None:
        """Cut a partly written batch (a full disk can take half of it) back to whole records."""
        try:
            if self.path.exists() and self.path.stat().st_size > size:
                with open(self.path, "r+b") as f:
                    f.truncate(size)
        except OSError:
            pass  # the next open cuts the torn line instead


def _write_error(path: Path, e: OSError, kept: int) -> str:
    why = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exhausted",
           errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
           errno.EPERM: "permission denied", errno.EFBIG: "the file is too large for this file system"}.get(
        e.errno, e.strerror or str(e))
    return (f"cannot write to {path}: {why}; the {kept} records already there are intact. Fix that and run the "
            "same command again to resume")


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """All records of a JSONL file (or a Parquet file, by suffix)."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{p}: is a folder, not a file; pass the path of a file")
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found")
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(p).to_pylist()
    from cai.textfiles import is_binary, not_text

    out = []
    with open(p, "rb") as f:
        if is_binary(f.read(8192)):
            raise not_text(p, b"")
        f.seek(0)
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise not_text(p, raw, e, line=n) from None
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{p}:{n}: not valid JSON ({e.msg})") from None
    return out


def export_parquet(jsonl_path: str | Path, parquet_path: str | Path) -> Path:
    """Write a Parquet copy of a JSONL record file (nested fields become Arrow structs/lists)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = read_records(jsonl_path)
    if not records:
        raise ValueError(f"{jsonl_path} holds no records to export")
    from cai.outputs import marker

    out = Path(parquet_path)
    table = pa.Table.from_pylist(records)
    # Marks the file as cai's, so a rerun may replace it and a stranger's Parquet is refused.
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"cai": marker().encode()})
    pq.write_table(table, out)
    return out
