"""Reading the raw records of a prompt source: local files by extension, and Hugging Face datasets.

Each reader returns a list of records (dicts, or plain strings for TXT and string-only JSON) and
the column names, in file order. Heavy libraries (pyarrow, datasets) load only when needed.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from pathlib import Path
from typing import Any, Iterator

from cai.errors import CAIError

FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".txt", ".parquet")


def _suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _open_text(path: Path) -> io.TextIOBase:
    # utf-8-sig: spreadsheet exports often start with a byte-order mark that would corrupt the
    # first column name.
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


_JSON_KINDS = {list: "a list", str: "a string", bool: "true or false", type(None): "null"}


def iter_jsonl(path: Path, hint: str = "fix or remove that line", *,
               objects: bool = True) -> Iterator[tuple[int, Any]]:
    """(line number, record) for each non-blank line of a JSON Lines file (optionally gzipped).

    A line that is not JSON, not an object (when ``objects``) or not UTF-8 stops the read with a
    one-line CAIError naming file:line; ``hint`` ends it with what a line of this file should be.
    """
    try:
        with _open_text(path) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise CAIError(f"{path}:{n}: not valid JSON ({e.msg}); {hint}") from None
                if objects and not isinstance(rec, dict):
                    raise CAIError(f"{path}:{n}: expected a JSON object, got "
                                   f"{_JSON_KINDS.get(type(rec), 'a number')}; {hint}")
                yield n, rec
    except UnicodeDecodeError as e:
        # The decoder reads ahead of the line loop, so the bad byte's line is found in the raw bytes.
        raise CAIError(_not_utf8(path, e)) from None


def read_jsonl(path: Path) -> list[Any]:
    return [rec for _, rec in iter_jsonl(path, objects=False)]


def read_json(path: Path) -> list[Any]:
    with _open_text(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            if e.msg == "Extra data":  # JSON Lines saved with a .json name, as many datasets are
                return read_jsonl(path)
            raise CAIError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if isinstance(data, dict):
        # {"data": [...]} and similar wrappers: accept exactly one list of records.
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise CAIError(f"{path}: expected a JSON list of prompts (or an object holding exactly one list); "
                           f"found keys {', '.join(map(repr, data))}")
        data = lists[0]
    if not isinstance(data, list):
        raise CAIError(f"{path}: expected a JSON list of prompts, got {type(data).__name__}")
    return data


def read_csv(path: Path, delimiter: str) -> list[Any]:
    with _open_text(path) as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        if reader.fieldnames is None:
            return []
        return [dict(row) for row in reader]


def read_txt(path: Path) -> list[Any]:
    with _open_text(path) as f:
        return [line.strip() for line in f if line.strip()]


def read_parquet(path: Path) -> list[Any]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise CAIError(f"{path}: reading Parquet needs pyarrow; pip install 'cai[eval]' "
                       "or convert the file to JSONL") from None
    return pq.read_table(path).to_pylist()


def read_file(path: Path) -> list[Any]:
    """The records of a local prompt file, chosen by extension (optionally gzipped)."""
    try:
        return _read_file(path)
    except UnicodeDecodeError as e:
        raise CAIError(_not_utf8(path, e)) from None


def _not_utf8(path: Path, e: UnicodeDecodeError) -> str:
    line = ""
    try:
        raw = gzip.open(path, "rb").read() if path.suffix.lower() == ".gz" else path.read_bytes()
        first_bad = raw.find(e.object[e.start:e.end]) if isinstance(e.object, bytes) else -1
        if first_bad >= 0:
            line = ":" + str(raw.count(b"\n", 0, first_bad) + 1)
    except OSError:
        pass
    return (f"{path}{line}: not UTF-8 text (byte 0x{e.object[e.start]:02x}); re-save the file as UTF-8, "
            f"e.g. iconv -f latin1 -t utf-8 {path.name} > fixed{''.join(path.suffixes)}")


def _read_file(path: Path) -> list[Any]:
    kind = _suffix(path)
    if kind == ".jsonl":
        return read_jsonl(path)
    if kind == ".json":
        return read_json(path)
    if kind in (".csv", ".tsv"):
        return read_csv(path, "\t" if kind == ".tsv" else ",")
    if kind == ".txt":
        return read_txt(path)
    if kind == ".parquet":
        return read_parquet(path)
    raise CAIError(f"{path}: unknown prompt file type {kind or '(no extension)'!r}; "
                   f"use one of {', '.join(FILE_SUFFIXES)} (optionally .gz)")


def columns_of(records: list[Any]) -> list[str]:
    """Column names of the first dict record, in order ([] when records are plain strings)."""
    for r in records:
        if isinstance(r, dict):
            return list(r)
        break
    return []


def _hub_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


def read_hf(spec: str) -> list[Any]:
    """``DATASET[:SPLIT]`` or ``DATASET:CONFIG:SPLIT`` from the Hugging Face hub (or its local cache)."""
    parts = spec.split(":")
    if not parts[0] or len(parts) > 3 or not all(parts):
        raise CAIError(f"hf:{spec}: expected hf:DATASET, hf:DATASET:SPLIT or hf:DATASET:CONFIG:SPLIT")
    name = parts[0]
    config = parts[1] if len(parts) == 3 else None
    split = parts[-1] if len(parts) >= 2 else "train"
    try:
        import datasets
    except ImportError:
        raise CAIError(f"hf:{spec}: loading hub datasets needs the datasets library; pip install 'cai[eval]'") from None
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # noqa: BLE001 - datasets raises many types for "not reachable / not there"
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        if _hub_offline() or isinstance(e, (ConnectionError, TimeoutError)):
            raise CAIError(f"hf:{spec}: the Hugging Face hub is unreachable ({reason}) and the dataset is not "
                           "cached; download it elsewhere and pass a local .jsonl/.csv/.parquet file instead") from None
        raise CAIError(f"hf:{spec}: could not load the dataset ({reason}); check the name and split, or pass "
                       f"a local .jsonl/.csv/.parquet file instead") from None
    return ds.to_list()
