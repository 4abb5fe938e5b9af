"""Append-only JSONL record files that survive ``kill -9`` and resume where they stopped.

Each record has a stable ``id``. A batch is written with one ``write`` and ``fsync``; if a process
dies mid-write, the torn last line is cut off the next time the file is opened, so the file always
holds whole records, each id at most once. Running the same command again skips the ids present.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator


class RecordStore:
    def __init__(self, path: str | Path, *, key: str = "id") -> None:
        self.path = Path(path)
        self.key = key
        self.ids: set[str] = set()
        if self.path.exists():
            self._repair()
            for rec in self:
                self.ids.add(str(rec[key]))

    def _repair(self) -> None:
        """Drop a torn final line (no trailing newline or not valid JSON) left by a crash."""
        data = self.path.read_bytes()
        if not data:
            return
        keep = len(data) if data.endswith(b"\n") else data.rfind(b"\n") + 1
        lines = data[:keep].splitlines(keepends=True)
        # A crash can only tear the last line; anything unreadable before it is real corruption.
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                json.loads(line)
            except json.JSONDecodeError:
                if i == len(lines) - 1:
                    keep -= len(line)
                else:
                    raise ValueError(f"{self.path}:{i + 1}: not a JSON record; fix or remove that line") from None
        if keep != len(data):
            with open(self.path, "r+b") as f:
                f.truncate(keep)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
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
        payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in fresh).encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        self.ids.update(seen)
        return len(fresh)


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """All records of a JSONL file (or a Parquet file, by suffix)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found")
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(p).to_pylist()
    out = []
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
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
    out = Path(parquet_path)
    pq.write_table(pa.Table.from_pylist(records), out)
    return out
