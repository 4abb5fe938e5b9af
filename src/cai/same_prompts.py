"""A stored record is reused only for the prompt it answered.

A resumed or rerun output matches its records to the prompts by id. An id is the prompt file's
own ``id`` field where it has one, so a prompt edited in place keeps its id, and the answer to
the old text would be kept as the answer to the new one: silently on a finished output (the
rerun starts no model and reports nothing new), or beside fresh answers on an unfinished one.
Ids made from the text change with it, so for them this never fires. The text is compared as
the id hash reads it (roles and words; spacing is noise), and system messages are left out: the
system prompt is a setting, which each stage's own resume check names.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from cai.errors import CAIError


def words(messages: Any) -> list[list[str]] | None:
    """The non-system turns of a conversation as (role, words); None for no conversation."""
    from cai.sources import turn_words

    if not isinstance(messages, list):
        return None
    return turn_words([{"role": m.get("role"), "content": m.get("content", "")} for m in messages
                       if isinstance(m, dict) and m.get("role") != "system"])


def _clip(turns: list[list[str]]) -> str:
    text = " / ".join(t for _, t in turns)
    return text if len(text) <= 60 else text[:57] + "..."


def check_same_prompts(stores: Iterable[Any], now: Mapping[str, Any], *, source: str,
                       prompt_of: Callable[[dict[str, Any]], Any],
                       id_of: Callable[[dict[str, Any]], str] = lambda rec: rec["id"]) -> None:
    """Refuse when a record in ``stores`` (``cai.store.RecordStore``s) answered other text than the
    prompt of its id in ``now`` (prompt id -> conversation) reads today. ``prompt_of`` gives a
    record's prompt conversation (None where it keeps none, e.g. a skip note); ``id_of`` the id of
    the prompt it answered."""
    want = {str(k): words(v) for k, v in now.items()}
    for store in stores:
        for n, rec in enumerate(store, 1):
            pid = str(id_of(rec))
            old = words(prompt_of(rec)) if pid in want else None
            if old is None or old == want[pid]:
                continue
            raise CAIError(f"{store.path}:{n}: prompt {pid!r} was answered as {_clip(old)!r}, but {source} now "
                           f"reads {_clip(want[pid] or [])!r}; records are reused by id, so give the edited prompt "
                           "a new id (or restore its text), or write to a new -o file (--overwrite starts this one "
                           "afresh)")
