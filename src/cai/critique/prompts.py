"""The chat turns the SL-CAI engine sends to the critic, and the cleaning of what comes back.

The wording comes from ``templates/critique.yaml`` (or a YAML file of the same shape); this module
only arranges turns. Worked examples from the constitution are laid out before the real
conversation as ordinary chat turns, so a chat model sees complete critique-revision exchanges
before it is asked for its own.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from cai.templates import fill, load_template
from cai.types import Conversation, Message


@dataclass(frozen=True)
class CritiqueTemplate:
    critique_turn: str
    revision_turn: str
    compliance_question: str
    compliance_prefix: str
    yes: str
    no: str
    critique_echoes: tuple[str, ...]
    revision_echoes: tuple[str, ...]
    stop: tuple[str, ...]
    hash: str
    source: str
    distill_system: str = ""

    @classmethod
    def load(cls, name_or_path: str = "critique") -> "CritiqueTemplate":
        """A built-in template name (``critique``) or the path of a YAML file of the same shape."""
        p = Path(name_or_path)
        if p.suffix in (".yaml", ".yml") or p.is_file():
            import yaml

            if not p.is_file():
                raise FileNotFoundError(f"critique template {p} not found; pass a YAML file like cai/templates/critique.yaml")
            data, source = yaml.safe_load(p.read_text(encoding="utf-8")), str(p)
        else:
            data, source = load_template(name_or_path), f"cai/templates/{name_or_path}.yaml"
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> "CritiqueTemplate":
        if not isinstance(data, dict):
            raise ValueError(f"{source}: a critique template is a mapping")

        def need(mapping: dict, key: str, where: str) -> str:
            value = mapping.get(key)
            if not isinstance(value, str):
                raise ValueError(f"{source}: '{where}' must be a string")
            return value

        comp = data.get("compliance") or {}
        echoes = data.get("echo_prefixes") or {}
        t = cls(
            critique_turn=need(data, "critique_turn", "critique_turn"),
            revision_turn=need(data, "revision_turn", "revision_turn"),
            compliance_question=need(comp, "question", "compliance.question"),
            compliance_prefix=str(comp.get("answer_prefix") or ""),
            yes=need(comp, "yes_option", "compliance.yes_option"),
            no=need(comp, "no_option", "compliance.no_option"),
            critique_echoes=tuple(echoes.get("critique") or ()),
            revision_echoes=tuple(echoes.get("revision") or ()),
            stop=tuple(data.get("stop") or ()),
            distill_system=str(data.get("distill_system") or ""),
            hash=hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest(),
            source=source,
        )
        for name, text in (("critique_turn", t.critique_turn), ("revision_turn", t.revision_turn),
                           ("compliance.question", t.compliance_question)):
            if "{request}" not in text:
                raise ValueError(f"{source}: '{name}' must contain the placeholder {{request}}")
        if t.yes == t.no or not t.yes or not t.no:
            raise ValueError(f"{source}: compliance 'yes_option' and 'no_option' must be two different non-empty options")
        return t


def split_system(messages: Sequence[Message]) -> tuple[str | None, Conversation]:
    """Leading system message(s) joined into one text, and the rest of the conversation."""
    system = [m["content"] for m in messages if m["role"] == "system"]
    rest = [dict(m) for m in messages if m["role"] != "system"]
    return ("\n\n".join(system) if system else None), rest


def _join(*parts: str | None) -> str | None:
    kept = [p for p in parts if p]
    return "\n\n".join(kept) if kept else None


def with_system(messages: Sequence[Message], system: str | None) -> Conversation:
    """The conversation with ``system`` merged into (or placed as) its leading system message."""
    prompt_system, rest = split_system(messages)
    top = _join(system, prompt_system)
    return ([{"role": "system", "content": top}] if top else []) + rest


def few_shot_turns(examples: Sequence[Any], template: CritiqueTemplate) -> Conversation:
    """Each worked example as a complete exchange: conversation, critique request, critique,
    revision request, revision."""
    turns: Conversation = []
    for ex in examples:
        _, conv = split_system(ex.messages)  # one system message only, at the top
        turns += conv
        turns.append({"role": "user", "content": fill(template.critique_turn, request=ex.critique_request)})
        turns.append({"role": "assistant", "content": ex.critique})
        turns.append({"role": "user", "content": fill(template.revision_turn, request=ex.revision_request)})
        turns.append({"role": "assistant", "content": ex.revision})
    return turns


def critic_context(prompt: Sequence[Message], answer: str, *, system: str | None,
                   shots: Conversation) -> Conversation:
    """The critic's view before any question: system, worked examples, then the real conversation
    ending with the current answer. A system message of the prompt itself is merged into the top one,
    since many chat templates reject a system message after other turns."""
    conv = with_system(prompt, system)
    head, rest = (conv[:1], conv[1:]) if conv[0]["role"] == "system" else ([], conv)
    return head + list(shots) + rest + [{"role": "assistant", "content": answer}]


def critique_conversation(context: Conversation, request: str, template: CritiqueTemplate) -> Conversation:
    return context + [{"role": "user", "content": fill(template.critique_turn, request=request)}]


def revision_conversation(critique_conv: Conversation, critique: str, request: str,
                          template: CritiqueTemplate) -> Conversation:
    return critique_conv + [
        {"role": "assistant", "content": critique},
        {"role": "user", "content": fill(template.revision_turn, request=request)},
    ]


def distill_conversation(prompt: Sequence[Message], critique: str, request: str, template: CritiqueTemplate, *,
                         system: str | None) -> Conversation:
    """--revision-mode distill: the user's conversation under a system message carrying the
    principle and the critique, answered afresh (no critic chat, no worked examples)."""
    return with_system(prompt, _join(system, fill(template.distill_system, request=request, critique=critique)))


def compliance_conversation(context: Conversation, request: str, template: CritiqueTemplate) -> Conversation:
    conv = context + [{"role": "user", "content": fill(template.compliance_question, request=request)}]
    if template.compliance_prefix:
        conv.append({"role": "assistant", "content": template.compliance_prefix})
    return conv


def p_yes(scores: dict[str, float], template: CritiqueTemplate) -> float:
    """P(yes) normalised over the two options, from their raw log-probabilities."""
    a, b = scores[template.yes], scores[template.no]
    m = max(a, b)
    return math.exp(a - m) / (math.exp(a - m) + math.exp(b - m))


def _echo_pattern(labels: Sequence[str]) -> re.Pattern[str] | None:
    if not labels:
        return None
    alts = "|".join(re.escape(x) for x in sorted(labels, key=len, reverse=True))
    # Markdown emphasis or headings around the label are common: "**Revision:**", "## Critique:".
    return re.compile(rf"^\s*[#*_ ]*(?:{alts})[*_ ]*:[*_ ]*\s*", re.IGNORECASE)


def clean_output(text: str, kind: str, template: CritiqueTemplate) -> str:
    """Cut at a stop marker, strip, and drop echoed labels ("Revision:") from the start."""
    for marker in template.stop:
        if marker and marker in text:
            text = text[: text.index(marker)]
    pattern = _echo_pattern(template.critique_echoes if kind == "critique" else template.revision_echoes)
    text = text.strip()
    while pattern is not None:
        stripped = pattern.sub("", text, count=1).strip()
        if stripped == text:
            break
        text = stripped
    return text
