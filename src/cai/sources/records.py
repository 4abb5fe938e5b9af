"""Turning one record of a prompt file into a chat conversation.

Field detection happens once per source (on its first record), so every record of a file is read
the same way; a record that lacks the chosen field is an error naming its row, never a silent skip.

A prompt always ends with a user turn. Records that already hold a whole exchange (SFT data, TRL
preference pairs) have their trailing assistant turn(s) removed; the last removed answer is kept in
``meta["reference_answer"]`` so nothing in the input is lost.
"""

from __future__ import annotations

from typing import Any, Sequence

from cai.errors import CAIError
from cai.transcripts import parse_transcript
from cai.types import Conversation, check_conversation

# Tried in this order (case-insensitively) when no field is given. Whole conversations first, then
# the column names used by common prompt sets (TRL, AdvBench "goal", HarmBench "Behavior", Alpaca
# "instruction", MT-Bench "turns"), and HH-RLHF style transcripts last.
PROMPT_FIELDS = (
    "messages", "conversation", "conversations", "prompt", "question", "goal", "behavior",
    "instruction", "query", "request", "input", "text", "content", "turns", "chosen", "transcript",
)
TRANSCRIPT_FIELDS = ("chosen", "rejected", "transcript")
_ID_FIELD = "id"
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "bot": "assistant", "model": "assistant", "system": "system"}


def detect_field(columns: Sequence[str], where: str) -> str:
    """The prompt column among ``columns``, or a one-line error listing what is there."""
    lowered = {c.lower(): c for c in columns}
    for name in PROMPT_FIELDS:
        if name in lowered:
            return lowered[name]
    shown = ", ".join(repr(c) for c in columns) or "none"
    raise CAIError(f"{where}: no prompt column found (columns: {shown}); pass --field NAME to choose one")


def resolve_field(field: str, columns: Sequence[str], where: str) -> str:
    """``field`` as spelled in the data (exact match first, then case-insensitive)."""
    if field in columns:
        return field
    lowered = {c.lower(): c for c in columns}
    if field.lower() in lowered:
        return lowered[field.lower()]
    shown = ", ".join(repr(c) for c in columns) or "none"
    raise CAIError(f"{where}: no column {field!r} (columns: {shown}); pass one of them as --field")


def first_human_turn(text: str, where: str) -> Conversation:
    """The opening user message of a "\\n\\nHuman: ... \\n\\nAssistant: ..." transcript."""
    try:
        turns = parse_transcript(text)
    except ValueError as e:
        raise CAIError(f"{where}: {e}; expected an HH-RLHF style Human:/Assistant: transcript") from None
    for m in turns:
        if m["role"] == "user" and m["content"]:
            return [{"role": "user", "content": m["content"]}]
    raise CAIError(f"{where}: the transcript has no human turn")


def _looks_like_transcript(text: str) -> bool:
    head = text.lstrip()[:20]
    return head.startswith("Human:") and "\n\nAssistant:" in text


def _message(m: Any, where: str) -> dict[str, str]:
    if isinstance(m, dict) and "role" in m and "content" in m:
        content = m["content"].strip() if isinstance(m["content"], str) else m["content"]
        return {"role": str(m["role"]), "content": content}
    if isinstance(m, dict) and "from" in m and "value" in m:  # ShareGPT
        role = _SHAREGPT_ROLES.get(str(m["from"]).lower())
        if role is None:
            raise CAIError(f"{where}: unknown ShareGPT speaker {m['from']!r}")
        return {"role": role, "content": str(m["value"]).strip()}
    raise CAIError(f"{where}: a message needs 'role' and 'content', got {m!r:.80}")


def to_conversation(value: Any, where: str, *, transcripts: bool = False) -> tuple[Conversation, dict[str, Any]]:
    """A field value -> (conversation ending with a user turn, extra meta).

    With ``transcripts`` (an HH-RLHF style column), Human:/Assistant: text gives its first human
    turn; elsewhere such text is taken literally, since a prompt may legitimately quote a dialogue.
    """
    extra: dict[str, Any] = {}
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise CAIError(f"{where}: the prompt is empty; fill it in or remove the row")
        if transcripts and _looks_like_transcript(value):
            return first_human_turn(value, where), extra
        return [{"role": "user", "content": text}], extra
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        # MT-Bench style "turns": later turns depend on the answer to the first, so only the first
        # is a self-contained prompt; the rest are kept for whoever wants a second turn.
        conv, extra = to_conversation(value[0], where)
        if len(value) > 1:
            extra["later_turns"] = list(value[1:])
        return conv, extra
    if isinstance(value, (list, tuple)) and value:
        conv = [_message(m, f"{where}: message {i}") for i, m in enumerate(value)]
        try:
            check_conversation(conv, where)
        except ValueError as e:
            raise CAIError(str(e)) from None
        while conv and conv[-1]["role"] == "assistant":
            answer = conv.pop()
            extra.setdefault("reference_answer", answer["content"])
        if not conv or conv[-1]["role"] != "user":
            raise CAIError(f"{where}: the conversation has no user turn to answer; "
                           "a prompt must end with a user message")
        return conv, extra
    raise CAIError(f"{where}: expected text or a list of messages, got {type(value).__name__} {value!r:.60}")


def record_to_prompt(record: Any, field: str | None, where: str) -> tuple[Conversation, dict[str, Any], str | None]:
    """One record -> (messages, meta, the record's own id or None)."""
    if not isinstance(record, dict):
        if field is not None:
            raise CAIError(f"{where}: expected a record with a {field!r} field like the first one, got {record!r:.60}")
        conv, extra = to_conversation(record, where)
        return conv, extra, None
    if field is None:
        raise CAIError(f"{where}: a record among plain-text prompts; make every line a string or every line a record")
    if field not in record:
        raise CAIError(f"{where}: record has no {field!r} field; every record must carry the same prompt field")
    value = record[field]
    if value is None:
        raise CAIError(f"{where}: {field!r} is empty; fill it in or remove the row")
    low = field.lower()
    conv, extra = to_conversation(value, where, transcripts=low in TRANSCRIPT_FIELDS)
    used = {field}
    # Alpaca keeps the material to work on in a separate "input" column.
    if low == "instruction" and isinstance(record.get("input"), str) and record["input"].strip():
        conv[-1] = {"role": "user", "content": conv[-1]["content"] + "\n\n" + record["input"].strip()}
        used.add("input")
    # HarmBench "contextual" behaviors only make sense after their context, joined as HarmBench does.
    if low == "behavior" and isinstance(record.get("ContextString"), str) and record["ContextString"].strip():
        conv[-1] = {"role": "user", "content": record["ContextString"].strip() + "\n\n---\n\n" + conv[-1]["content"]}
        used.add("ContextString")
    own_id = record.get(_ID_FIELD)
    own_id = str(own_id) if isinstance(own_id, (str, int)) and not isinstance(own_id, bool) and str(own_id) else None
    meta = {k: v for k, v in record.items() if k not in used and k != _ID_FIELD and not _is_index_column(k)}
    meta.update(extra)
    return conv, meta, own_id


def _is_index_column(name: str) -> bool:
    """The unnamed row-number column that pandas writes into CSV files ("" or "Unnamed: 0")."""
    return name == "" or name.startswith("Unnamed: ")
