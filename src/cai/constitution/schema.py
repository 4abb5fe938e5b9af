"""Our constitution schema: checking a parsed YAML (or JSON) file and building the Constitution.

Every check fails with one line naming the file, the field path, the line and the fix. Unknown
keys are errors, so a typo such as ``revison:`` cannot silently drop a revision request.
"""

from __future__ import annotations

import re
from typing import Any

from cai.constitution.located import Located, Path_
from cai.constitution.model import Constitution, Example, PreferenceExample, Principle

TOP_KEYS = {"name", "version", "description", "system_prompt", "principles", "examples", "preference_examples"}
PRINCIPLE_KEYS = {"id", "critique", "revision", "preference", "tags", "weight"}
EXAMPLE_KEYS = {"messages", "critique_request", "critique", "revision_request", "revision"}
PREFERENCE_EXAMPLE_KEYS = {"messages", "response_a", "response_b", "question", "answer", "reasoning"}
ROLES = ("system", "user", "assistant")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")

_HINTS = {
    "name": "a short name, e.g. name: my-constitution",
    "version": "a version, e.g. version: \"1.0\"",
    "description": "one sentence saying what the constitution is for",
    "system_prompt": "the system prompt text, or remove the key",
    "principles": "a list of principles, each with id, critique, revision",
    "id": "a short unique id without spaces, e.g. id: harmful",
    "critique": "a request that asks for a critique of the assistant's last answer",
    "revision": "a request that asks to rewrite the assistant's answer",
    "preference": "a question for choosing between two answers, or remove the key",
    "tags": "a list of words, e.g. tags: [harmless]",
    "weight": "a number >= 0, e.g. weight: 1.0",
    "messages": "a list of {role, content} chat messages",
    "critique_request": "the critique request used in this example",
    "revision_request": "the revision request used in this example",
    "response_a": "the first candidate answer",
    "response_b": "the second candidate answer",
    "question": "the preference question asked",
    "answer": "A or B",
    "reasoning": "a worked step-by-step comparison, or remove the key",
}


def _hint(key: str) -> str:
    return _HINTS.get(key, "see src/cai/constitution/builtin/default.yaml for the format")


def _mapping(doc: Located, value: Any, path: Path_, allowed: set[str], required: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        raise doc.error(path, f"expected a mapping of key: value, got {_kind(value)}",
                        f"write it as keys {', '.join(sorted(required or allowed))}")
    for key in value:
        if key not in allowed:
            close = _closest(key, allowed)
            fix = f"did you mean {close!r}?" if close else f"allowed keys are {', '.join(sorted(allowed))}"
            raise doc.error(path + (key,), f"unknown key {key!r}", fix)
    for key in required:
        if key not in value:
            raise doc.error(path + (key,), "missing", f"add {key}: {_hint(key)}")
    return value


def _text(doc: Located, m: dict, key: str, path: Path_, *, optional: bool = False) -> str | None:
    value = m.get(key)
    if value is None and optional:
        return None
    if key not in m:
        raise doc.error(path + (key,), "missing", f"add {key}: {_hint(key)}")
    if not isinstance(value, str):
        raise doc.error(path + (key,), f"must be text, got {_kind(value)}", f"write {key}: {_hint(key)}")
    value = value.strip()
    if not value:
        raise doc.error(path + (key,), "is empty", f"write {_hint(key)}")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    names = {dict: "a mapping", list: "a list", str: "text", bool: "true/false", int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


def _closest(key: Any, allowed: set[str]) -> str | None:
    import difflib

    hits = difflib.get_close_matches(str(key), sorted(allowed), n=1, cutoff=0.6)
    return hits[0] if hits else None


def _messages(doc: Located, value: Any, path: Path_, *, last_role: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise doc.error(path, f"must be a non-empty list of messages, got {_kind(value)}", f"write {_hint('messages')}")
    out = []
    for i, m in enumerate(value):
        m = _mapping(doc, m, path + (i,), {"role", "content"}, ("role", "content"))
        role = m["role"]
        if role not in ROLES:
            raise doc.error(path + (i, "role"), f"unknown role {role!r}", f"use one of {', '.join(ROLES)}")
        content = m["content"]
        if not isinstance(content, str):
            raise doc.error(path + (i, "content"), f"must be text, got {_kind(content)}", "quote the message text")
        out.append({"role": role, "content": content.strip()})
    if out[-1]["role"] != last_role:
        what = "the assistant's first answer" if last_role == "assistant" else "the user's request"
        raise doc.error(path + (len(out) - 1,), f"the last message must be the {last_role}'s",
                        f"end the conversation with {what}")
    return out


def _principle(doc: Located, value: Any, path: Path_) -> Principle:
    m = _mapping(doc, value, path, PRINCIPLE_KEYS, ("id",))
    pid = _text(doc, m, "id", path)
    if not _ID.match(pid):
        raise doc.error(path + ("id",), f"id {pid!r} has spaces or symbols",
                        "use letters, digits, '-', '_', '.' or ':' only, e.g. id: harmful-advice")
    preference = _text(doc, m, "preference", path, optional=True)
    critique = _text(doc, m, "critique", path, optional=preference is not None) or ""
    revision = _text(doc, m, "revision", path, optional=preference is not None and not critique) or ""
    if revision and not critique:
        raise doc.error(path + ("critique",), "missing (a revision request needs a critique request)",
                        f"add critique: {_hint('critique')}")
    tags = m.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags):
        raise doc.error(path + ("tags",), f"must be a list of words, got {_kind(tags)}", f"write {_hint('tags')}")
    weight = m.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
        raise doc.error(path + ("weight",), f"must be a number >= 0, got {weight!r}", f"write {_hint('weight')}")
    return Principle(id=pid, critique=critique, revision=revision, preference=preference,
                     tags=tuple(t.strip() for t in tags), weight=float(weight))


def _example(doc: Located, value: Any, path: Path_) -> Example:
    m = _mapping(doc, value, path, EXAMPLE_KEYS, tuple(sorted(EXAMPLE_KEYS)))
    return Example(messages=_messages(doc, m["messages"], path + ("messages",), last_role="assistant"),
                   **{k: _text(doc, m, k, path) for k in ("critique_request", "critique", "revision_request", "revision")})


def _preference_example(doc: Located, value: Any, path: Path_) -> PreferenceExample:
    required = tuple(sorted(PREFERENCE_EXAMPLE_KEYS - {"reasoning"}))
    m = _mapping(doc, value, path, PREFERENCE_EXAMPLE_KEYS, required)
    answer = m["answer"]
    if answer not in ("A", "B"):
        raise doc.error(path + ("answer",), f"must be A or B, got {answer!r}", "write answer: A or answer: B")
    return PreferenceExample(messages=_messages(doc, m["messages"], path + ("messages",), last_role="user"),
                             response_a=_text(doc, m, "response_a", path), response_b=_text(doc, m, "response_b", path),
                             question=_text(doc, m, "question", path), answer=answer,
                             reasoning=_text(doc, m, "reasoning", path, optional=True))


def _list(doc: Located, top: dict, key: str) -> list:
    value = top.get(key, [])
    if value is None:
        value = []
    if not isinstance(value, list):
        raise doc.error((key,), f"must be a list, got {_kind(value)}", f"write each entry of {key} on a line starting with '- '")
    return value


def build(doc: Located, *, source: str, format: str = "yaml") -> Constitution:
    """Validate ``doc`` against our schema and build the Constitution."""
    top = _mapping(doc, doc.data, (), TOP_KEYS, ("name", "version", "description", "principles"))
    version: Any = top["version"]
    if isinstance(version, (int, float)) and not isinstance(version, bool):
        version = doc.raw.get(("version",), str(version))  # keep "1.10" as written, not 1.1
    if not isinstance(version, str) or not version.strip():
        raise doc.error(("version",), f"must be text, got {_kind(version)}", f"write {_hint('version')}")
    principles_raw = _list(doc, top, "principles")
    principles = [_principle(doc, p, ("principles", i)) for i, p in enumerate(principles_raw)]
    seen: dict[str, int] = {}
    for i, p in enumerate(principles):
        if p.id in seen:
            raise doc.error(("principles", i, "id"), f"duplicate principle id {p.id!r} (also principles[{seen[p.id]}])",
                            "give each principle its own id")
        seen[p.id] = i
    examples = [_example(doc, e, ("examples", i)) for i, e in enumerate(_list(doc, top, "examples"))]
    prefs = [_preference_example(doc, e, ("preference_examples", i))
             for i, e in enumerate(_list(doc, top, "preference_examples"))]
    if not principles and not examples and not prefs:
        raise doc.error(("principles",), "is empty", "add at least one principle with id, critique and revision")
    if principles and not any(p.weight > 0 for p in principles):
        raise doc.error(("principles",), "every weight is 0, so no principle could be chosen", "give one a weight > 0")
    return Constitution(
        name=_text(doc, top, "name", ()), version=version.strip(), description=_text(doc, top, "description", ()),
        system_prompt=_text(doc, top, "system_prompt", (), optional=True), principles=tuple(principles),
        examples=tuple(examples), preference_examples=tuple(prefs), source=source, format=format,
    )
