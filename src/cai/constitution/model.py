"""The constitution as values: principles, worked few-shot chains, labelled preference examples.

Everything here is immutable once built, so a constitution loaded at the start of a run is the
one whose hash lands in every record's provenance. The hash covers the content (after the
readers normalise it), not the file bytes: reformatting or re-commenting a YAML file, or
converting a foreign file to our YAML, keeps the hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal

from cai.errors import CAIError


class ConstitutionError(CAIError):
    """A constitution file that cannot be used, located as precisely as the reader could."""

    def __init__(self, file: str, problem: str, fix: str, *, field: str | None = None, line: int | None = None):
        self.file, self.field, self.line, self.problem, self.fix = file, field, line, problem, fix
        where = f"{file}:{line}" if line is not None else file
        if field:
            where += f": {field}"
        super().__init__(f"{where}: {problem}; {fix}")


class FrozenConversation(list):
    """A chat (TRL ``messages``) that refuses in-place changes.

    It is still a ``list`` so ``example.messages + [turn]``, ``json.dumps`` and chat templates
    work unchanged; the refusal only stops a caller from silently editing a loaded constitution.
    """

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("constitution messages are read-only; copy them first: list(example.messages)")

    append = extend = insert = pop = remove = clear = sort = reverse = _refuse  # type: ignore[assignment]
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse  # type: ignore[assignment]

    def __reduce__(self) -> tuple:
        return (FrozenConversation, ([dict(m) for m in self],))


def _freeze_messages(messages: Iterable[dict[str, str]]) -> FrozenConversation:
    return FrozenConversation({"role": m["role"], "content": m["content"]} for m in messages)


@dataclass(frozen=True)
class Principle:
    """One rule. ``critique`` asks for a critique, ``revision`` asks for a rewrite; both are empty
    for a labelling-only principle (one that carries just a ``preference`` question)."""

    id: str
    critique: str
    revision: str
    preference: str | None = None
    tags: tuple[str, ...] = ()
    weight: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", tuple(self.tags))
        object.__setattr__(self, "weight", float(self.weight))

    @property
    def can_critique(self) -> bool:
        return bool(self.critique and self.revision)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id}
        if self.critique or self.revision:
            d["critique"], d["revision"] = self.critique, self.revision
        if self.preference is not None:
            d["preference"] = self.preference
        d["tags"], d["weight"] = list(self.tags), self.weight
        return d


@dataclass(frozen=True)
class Example:
    """A worked critique chain: ``messages`` ends with the assistant's first answer."""

    messages: list[dict[str, str]]
    critique_request: str
    critique: str
    revision_request: str
    revision: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "messages", _freeze_messages(self.messages))

    def as_chat(self) -> list[dict[str, str]]:
        """The chain as plain chat turns (the llm-swarm layout): the conversation, then the
        critique request and revision request as user turns answered by the critique and revision."""
        return [dict(m) for m in self.messages] + [
            {"role": "user", "content": self.critique_request}, {"role": "assistant", "content": self.critique},
            {"role": "user", "content": self.revision_request}, {"role": "assistant", "content": self.revision}]

    def to_dict(self) -> dict[str, Any]:
        return {"messages": [dict(m) for m in self.messages], "critique_request": self.critique_request,
                "critique": self.critique, "revision_request": self.revision_request, "revision": self.revision}


@dataclass(frozen=True)
class PreferenceExample:
    """A labelled comparison for few-shot labelling; ``messages`` is the prompt (ends with a user
    turn). ``reasoning`` is an optional worked chain of thought for CoT labelling."""

    messages: list[dict[str, str]]
    response_a: str
    response_b: str
    question: str
    answer: Literal["A", "B"]
    reasoning: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "messages", _freeze_messages(self.messages))
        if self.answer not in ("A", "B"):
            raise ValueError(f"a preference example's answer must be 'A' or 'B', got {self.answer!r}")

    def to_dict(self) -> dict[str, Any]:
        d = {"messages": [dict(m) for m in self.messages], "response_a": self.response_a,
             "response_b": self.response_b, "question": self.question, "answer": self.answer}
        if self.reasoning is not None:
            d["reasoning"] = self.reasoning
        return d


@dataclass(frozen=True)
class Constitution:
    name: str
    version: str
    description: str
    principles: tuple[Principle, ...]
    system_prompt: str | None = None
    examples: tuple[Example, ...] = ()
    preference_examples: tuple[PreferenceExample, ...] = ()
    # Where it came from ("builtin:default", a file path) and which reader read it: not content,
    # so neither is part of the hash.
    source: str = field(default="", compare=False)
    format: str = field(default="yaml", compare=False)
    hash: str = field(default="", init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "principles", tuple(self.principles))
        object.__setattr__(self, "examples", tuple(self.examples))
        object.__setattr__(self, "preference_examples", tuple(self.preference_examples))
        seen: set[str] = set()
        for p in self.principles:
            if p.id in seen:
                raise ValueError(f"constitution {self.name!r}: principle id {p.id!r} is used twice")
            seen.add(p.id)
        object.__setattr__(self, "hash", content_hash(self.to_dict()))

    def principle(self, id: str) -> Principle:
        for p in self.principles:
            if p.id == id:
                return p
        known = ", ".join(p.id for p in self.principles) or "(none)"
        raise CAIError(f"constitution {self.name!r} has no principle {id!r}; known ids: {known}")

    def preference_principles(self) -> tuple[Principle, ...]:
        """Principles that carry a preference question (used for RL-CAI labelling)."""
        return tuple(p for p in self.principles if p.preference)

    def critique_principles(self) -> tuple[Principle, ...]:
        """Principles that carry a critique and a revision request (used for SL-CAI)."""
        return tuple(p for p in self.principles if p.can_critique)

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(sorted({t for p in self.principles for t in p.tags}))

    def to_dict(self) -> dict[str, Any]:
        """The content in our YAML schema (``yaml.safe_dump`` of it loads back with the same hash)."""
        d: dict[str, Any] = {"name": self.name, "version": self.version, "description": self.description}
        if self.system_prompt is not None:
            d["system_prompt"] = self.system_prompt
        d["principles"] = [p.to_dict() for p in self.principles]
        d["examples"] = [e.to_dict() for e in self.examples]
        d["preference_examples"] = [e.to_dict() for e in self.preference_examples]
        return d


def content_hash(content: dict[str, Any]) -> str:
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def merge(parts: list[Constitution]) -> Constitution:
    """Join constitutions into one, e.g. the paper's critique file + preference file + few-shot file.

    Principle ids must stay unique, and at most one distinct system prompt may be set.
    """
    if len(parts) == 1:
        return parts[0]
    prompts = {p.system_prompt for p in parts if p.system_prompt is not None}
    if len(prompts) > 1:
        raise CAIError("cannot join constitutions with different system prompts; remove all but one "
                       f"system_prompt ({', '.join(p.source for p in parts if p.system_prompt)})")
    owner: dict[str, str] = {}
    for part in parts:
        for pr in part.principles:
            if pr.id in owner:
                raise CAIError(f"principle id {pr.id!r} is in both {owner[pr.id]} and {part.source}; "
                               "rename one of them before joining the files with '+'")
            owner[pr.id] = part.source
    return Constitution(
        name="+".join(p.name for p in parts),
        version="+".join(p.version for p in parts),
        description=" + ".join(p.description for p in parts if p.description),
        system_prompt=next(iter(prompts), None),
        principles=tuple(pr for p in parts for pr in p.principles),
        examples=tuple(e for p in parts for e in p.examples),
        preference_examples=tuple(e for p in parts for e in p.preference_examples),
        source="+".join(p.source for p in parts),
        format="+".join(p.format for p in parts),
    )
