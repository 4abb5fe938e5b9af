"""Prompt sources: where the prompts for critique, labelling and evaluation come from.

``load_prompts(src)`` accepts

- a local file: ``.jsonl``, ``.json`` (a list), ``.csv``, ``.tsv``, ``.txt`` (one prompt per line)
  or ``.parquet``, optionally gzipped; ``field`` picks the column, otherwise a ``messages`` list or a
  ``prompt``/``question``/``goal``/``Behavior``/``instruction``/``text``... column is detected;
- a built-in set shipped in ``cai/prompts/`` (``list_builtin_prompt_sets``): ``redteam``,
  ``helpful``, ``borderline``, ``everyday`` and ``benign`` written for this project, ``self-instruct`` (with
  human reference answers) and ``harmful-train`` (built by ``scripts/build_prompt_sets.py`` from
  HH-RLHF's train pool, the in-the-wild forbidden questions and ``redteam``; see
  :mod:`cai.sources.split`); a built-in name wins over a file of the same name, so write
  ``./redteam`` for the file;
- a union of built-in sets joined by ``+`` (``borderline+benign``): their prompts in that order,
  each keeping its own id and source, so a prompt has the same id alone or in a union (a file
  whose name holds ``+`` still loads as that file);
- ``hh-rlhf:PATH``: HH-RLHF transcripts (``chosen``/``rejected``), taking the first human turn,
  which is the red-team request the crowdworker opened with;
- ``hf:DATASET[:SPLIT]`` or ``hf:DATASET:CONFIG:SPLIT`` through ``datasets.load_dataset``.

Every prompt ends with a user turn. A record holding a finished exchange (SFT ``messages``, a TRL
preference pair) loses its trailing assistant turn(s), the last of which is kept in
``meta["reference_answer"]``; a conversation with no user turn left is an error naming its row.
All other columns of a record travel in ``meta`` (a built-in prompt's ``category``, for instance).

Ids are stable: a record's own ``id`` if it has one, else ``<source-name>-<sha1 of the normalised
messages, 12 hex>``. Repeats within a source get ``-2``, ``-3``... in file order. Ids are assigned
before shuffling and limiting, so a resumed run sees the same id for the same prompt whatever
``limit``, ``shuffle`` or ``seed`` it uses. The source name is the file's stem, not its full path,
so moving the file keeps the ids.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field as dc_field
from importlib import resources
from pathlib import Path
from typing import Any

from cai.errors import CAIError
from cai.sources.readers import columns_of, read_file, read_hf, read_jsonl
from cai.sources.records import detect_field, first_human_turn, record_to_prompt, resolve_field
from cai.types import Conversation

__all__ = ["Prompt", "load_prompts", "list_builtin_prompt_sets"]

_BUILTIN_DIR = "prompts"
_TRANSCRIPT_FIELDS = ("chosen", "rejected", "transcript", "text")


@dataclass(frozen=True)
class Prompt:
    """One prompt: ``messages`` always ends with a user turn; ``meta`` holds the record's other
    columns (a built-in prompt's ``category``, for instance)."""

    id: str
    messages: Conversation
    source: str
    meta: dict[str, Any] = dc_field(default_factory=dict, compare=False)


def same_source(a: Any, b: Any) -> bool:
    """Whether two recorded --data values name the same source: equal, or one file spelled two ways
    (``./h.jsonl`` and ``h.jsonl``). A resume checks it: another file would add its prompts beside these."""
    if a == b:
        return True
    if not (isinstance(a, str) and isinstance(b, str)):
        return False
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    try:
        return pa.is_file() and pb.is_file() and pa.samefile(pb)
    except OSError:
        return False


def list_builtin_prompt_sets() -> list[str]:
    """Names of the prompt sets shipped with cai, e.g. ``["benign", "borderline", "harmful-train", ...]``."""
    folder = resources.files("cai") / _BUILTIN_DIR
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".jsonl")] for p in folder.iterdir() if p.name.endswith(".jsonl"))


def load_prompts(src: str | Path, *, field: str | None = None, limit: int | None = None,
                 shuffle: bool = False, seed: int = 0) -> list[Prompt]:
    """Load prompts from ``src`` (see the module docstring), then shuffle with ``random.Random(seed)``
    if asked, then keep the first ``limit``."""
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise CAIError(f"limit must be a positive number of prompts, got {limit!r}; leave it out to take all")
    spec = str(src)
    if not spec.strip():
        raise CAIError("no prompt source given; pass a file, a built-in set "
                       f"({', '.join(list_builtin_prompt_sets())}), hh-rlhf:PATH or hf:DATASET")
    # Without shuffling only the first ``limit`` records are needed, and their ids do not depend on
    # later records (a repeat's suffix counts earlier occurrences only), so stop there.
    prompts = _load(spec, field, stop=None if shuffle else limit)
    if not prompts:
        raise CAIError(f"{spec}: no prompts found; the source is empty")
    if shuffle:
        random.Random(seed).shuffle(prompts)
    return prompts[:limit] if limit is not None else prompts


def _load(spec: str, field: str | None, stop: int | None) -> list[Prompt]:
    if "+" in spec and not Path(spec).expanduser().exists():
        return _union(spec, field, stop)
    if spec in list_builtin_prompt_sets():
        with resources.as_file(resources.files("cai") / _BUILTIN_DIR / f"{spec}.jsonl") as path:
            records = read_jsonl(path)
        return _from_records(records, field, stop, source=spec, name=spec)
    if spec.startswith("hh-rlhf:"):
        path = _existing(spec[len("hh-rlhf:"):], spec)
        return _from_transcripts(read_file(path), field, stop, source=spec, name="hh-rlhf-" + _stem(path))
    if spec.startswith("hf:"):
        rest = spec[len("hf:"):]
        return _from_records(read_hf(rest), field, stop, source=spec, name="hf-" + rest)
    path = _existing(spec, spec)
    return _from_records(read_file(path), field, stop, source=spec, name=_stem(path))


def _union(spec: str, field: str | None, stop: int | None) -> list[Prompt]:
    """The prompts of built-in sets ``A+B+...`` in order, ids and sources as loaded alone."""
    builtins = list_builtin_prompt_sets()
    parts = spec.split("+")
    unknown = [p for p in parts if p not in builtins]
    if unknown:
        raise CAIError(f"{spec}: no such file, and {unknown[0]!r} is not a built-in prompt set; a union joins "
                       f"built-in sets with '+' (e.g. borderline+benign), from {', '.join(builtins)}")
    out: list[Prompt] = []
    where: dict[str, str] = {}
    for part in parts:
        if stop is not None and len(out) >= stop:
            break
        for p in _load(part, field, None if stop is None else stop - len(out)):
            if p.id in where:  # records are keyed by id: two prompts with one id would be one record
                raise CAIError(f"{spec}: prompt id {p.id!r} is in both {where[p.id]} and {part}; a union needs "
                               "sets with distinct ids (name each set once)")
            where[p.id] = part
            out.append(p)
    return out


def _existing(path_str: str, spec: str) -> Path:
    path = Path(path_str).expanduser()
    if not path_str:
        raise CAIError(f"{spec}: missing path; write {spec}PATH")
    if path.is_dir():
        raise CAIError(f"{spec}: is a folder, not a prompt file; pass a .jsonl/.json/.csv/.txt/.parquet file "
                       "inside it")
    if not path.is_file():
        builtins = ", ".join(list_builtin_prompt_sets())
        raise CAIError(f"{spec}: no such file or built-in prompt set; give a .jsonl/.json/.csv/.txt/.parquet "
                       f"file, one of {builtins}, hh-rlhf:PATH or hf:DATASET[:SPLIT]")
    return path


def _stem(path: Path) -> str:
    name = path.name
    for _ in range(2):  # test.jsonl.gz -> test
        name = name.rsplit(".", 1)[0] if "." in name else name
    return name


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "-", name.lower()).strip("-") or "prompts"


def turn_words(messages: Conversation) -> list[list[str]]:
    """Each turn as [role, its words joined by single spaces]: what a prompt's identity reads, for the
    ids made from the text and for a resumed output's check that a stored prompt is today's
    (:mod:`cai.same_prompts`). Whitespace is noise for identity; the words are not."""
    return [[str(m["role"]), " ".join(str(m["content"]).split())] for m in messages]


def _content_hash(messages: Conversation) -> str:
    norm = turn_words(messages)
    return hashlib.sha1(json.dumps(norm, ensure_ascii=False).encode("utf-8")).hexdigest()[:12]


def _finish(items: list[tuple[Conversation, dict[str, Any], str | None]], source: str, name: str) -> list[Prompt]:
    prefix = _slug(name)
    seen: set[str] = set()
    counts: dict[str, int] = {}
    prompts = []
    for messages, meta, own_id in items:
        base = own_id or f"{prefix}-{_content_hash(messages)}"
        pid = base
        while pid in seen:  # a repeat; the loop also steps over a real id that looks like "x-2"
            counts[base] = counts.get(base, 1) + 1
            pid = f"{base}-{counts[base]}"
        seen.add(pid)
        prompts.append(Prompt(id=pid, messages=messages, source=source, meta=meta))
    multi = sum(1 for p in prompts if p.meta.get("later_turns"))
    if multi:
        import sys

        # Not an error (MT-Bench stores its questions as turns), but never silent.
        print(f"cai: note: {source}: {multi} prompt(s) are lists of turns; only the first turn of each is "
              "answered, the later ones are kept in the record's meta.later_turns", file=sys.stderr)
    return prompts


def _from_records(records: list[Any], field: str | None, stop: int | None, *,
                  source: str, name: str) -> list[Prompt]:
    columns = columns_of(records)
    if columns:
        field = resolve_field(field, columns, source) if field else detect_field(columns, source)
    elif field and records:
        raise CAIError(f"{source}: --field {field!r} given but the prompts are plain text lines, "
                       "not records with columns")
    items = [record_to_prompt(rec, field, f"{source}: row {i + 1}") for i, rec in enumerate(records[:stop])]
    return _finish(items, source, name)


def _from_transcripts(records: list[Any], field: str | None, stop: int | None, *,
                      source: str, name: str) -> list[Prompt]:
    columns = columns_of(records)
    if columns:
        if field:
            field = resolve_field(field, columns, source)
        else:
            found = [c for c in columns if c.lower() in _TRANSCRIPT_FIELDS]
            if not found:
                shown = ", ".join(repr(c) for c in columns)
                raise CAIError(f"{source}: no transcript column (columns: {shown}); HH-RLHF files have "
                               f"'chosen' and 'rejected'; pass --field NAME")
            field = found[0]
    items = []
    for i, rec in enumerate(records[:stop]):
        where = f"{source}: row {i + 1}"
        text = rec.get(field) if isinstance(rec, dict) else rec
        if not isinstance(text, str):
            raise CAIError(f"{where}: expected a Human:/Assistant: transcript string in {field!r}")
        items.append((first_human_turn(text, where), {}, None))
    return _finish(items, source, name)
