"""Attacks: each turns one harmful behavior into the conversation the target model sees.

Three kinds:

* **transforms** we wrote ourselves, whose wording is data in ``templates/redteam.yaml`` (role-play,
  prefix injection, refusal suppression, hypothetical framing, payload splitting, multi-turn
  escalation, and ``none``, the plain behavior, as baseline);
* **jailbreak**: in-the-wild templates (:mod:`cai.redteam.jailbreaks`); behavior i gets template
  i mod N of the N sampled, so every template is tried on an equal share of the behaviors;
* **attacker**: a model writes a new request in the behavior's category (:mod:`cai.redteam.attacker`);
  its conversation is made at run time, so :func:`build_items` leaves it empty.

An item is one (behavior, attack) pair with a stable id ``<behavior id>::<attack>``, so a resumed
run, or one given more attacks, skips what is already done.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from cai.errors import CAIError
from cai.redteam.behaviors import Behavior
from cai.redteam.jailbreaks import JailbreakTemplate
from cai.types import Conversation, check_conversation

JAILBREAK = "jailbreak"
ATTACKER = "attacker"
BASELINE = "none"


@dataclass(frozen=True)
class Item:
    id: str
    behavior: Behavior
    attack: str
    messages: Conversation = field(default_factory=list)  # empty for the attacker until it writes one
    template_id: str | None = None


def transforms() -> dict[str, dict[str, Any]]:
    """The transforms of ``templates/redteam.yaml``: name -> {"help", "messages"}."""
    from cai.templates import load_template

    return dict(load_template("redteam")["transforms"])


def attack_names(*, jailbreaks: bool = False, attacker: bool = False) -> list[str]:
    """Every attack available: the transforms, then jailbreak and attacker when their inputs are given."""
    return list(transforms()) + ([JAILBREAK] if jailbreaks else []) + ([ATTACKER] if attacker else [])


def check_attacks(names: Sequence[str], *, jailbreaks: bool, attacker: bool) -> list[str]:
    """``names`` validated, in order, without repeats; a one-line error for an unknown one or one
    whose input (--jailbreaks, --attacker) is missing."""
    known = transforms()
    out: list[str] = []
    for name in names:
        if name in out:
            continue
        if name == JAILBREAK and not jailbreaks:
            raise CAIError("attack 'jailbreak' needs templates: pass --jailbreaks PATH (a CSV with columns 'prompt' "
                           "and 'jailbreak', such as ../shared/data/jailbreak_llms)")
        if name == ATTACKER and not attacker:
            raise CAIError("attack 'attacker' needs a model to write the prompts: pass --attacker MODEL")
        if name not in known and name not in (JAILBREAK, ATTACKER):
            raise CAIError(f"unknown attack {name!r}; attacks: {', '.join(list(known) + [JAILBREAK, ATTACKER])}")
        out.append(name)
    if not out:
        raise CAIError("no attacks given; pass --attacks NAME [NAME ...] or leave it out for all of them")
    return out


def split_words(text: str, parts: int = 3) -> list[str]:
    """``text`` cut into ``parts`` runs of whole words, as even as possible (empty runs when the
    text has fewer words than parts)."""
    words = text.split()
    base, extra = divmod(len(words), parts)
    out, i = [], 0
    for k in range(parts):
        n = base + (1 if k < extra else 0)
        out.append(" ".join(words[i : i + n]))
        i += n
    return out


def _lower_first(text: str) -> str:
    # "Write a tutorial" -> "write a tutorial", but an acronym ("DNA ...") keeps its capitals.
    if len(text) > 1 and text[0].isupper() and not text[1].isupper():
        return text[0].lower() + text[1:]
    return text


def values(behavior: Behavior) -> dict[str, str]:
    """The placeholders a transform may use (see ``templates/redteam.yaml``)."""
    text = behavior.text.rstrip()
    lc = _lower_first(text).rstrip(".?! ")
    target = behavior.target or f"Sure, here is how to {lc}"
    parts = split_words(text)
    return {"behavior": text, "behavior_lc": lc, "target": target,
            "part_1": parts[0], "part_2": parts[1], "part_3": parts[2]}


def apply_transform(name: str, behavior: Behavior) -> Conversation:
    """The conversation transform ``name`` makes of ``behavior``."""
    spec = transforms().get(name)
    if spec is None:
        raise CAIError(f"unknown transform {name!r}; transforms: {', '.join(transforms())}")
    vals = values(behavior)

    def sub(mt: re.Match[str]) -> str:
        if mt.group(1) not in vals:
            raise CAIError(f"templates/redteam.yaml: transform {name} uses unknown placeholder {{{mt.group(1)}}}; "
                           f"placeholders: {', '.join(vals)}")
        return vals[mt.group(1)]

    # One pass over the placeholders: a behavior containing "{x}" must stay literal text.
    conv = [{"role": m["role"], "content": re.sub(r"\{(\w+)\}", sub, m["content"])} for m in spec["messages"]]
    check_conversation(conv, f"templates/redteam.yaml: transform {name}")
    if conv[-1]["role"] != "user":
        raise CAIError(f"templates/redteam.yaml: transform {name} must end with a user turn")
    return conv


def build_items(behaviors: Sequence[Behavior], attacks: Sequence[str],
                templates: Sequence[JailbreakTemplate] = ()) -> list[Item]:
    """Every (behavior, attack) item, attack-major so that a partial run covers whole attacks first."""
    items = []
    for attack in attacks:
        for i, b in enumerate(behaviors):
            iid = f"{b.id}::{attack}"
            if attack == ATTACKER:
                items.append(Item(iid, b, attack))
            elif attack == JAILBREAK:
                if not templates:
                    raise CAIError("attack 'jailbreak' has no templates; pass --jailbreaks PATH")
                t = templates[i % len(templates)]
                items.append(Item(iid, b, attack, [{"role": "user", "content": t.fill(b.text)}], t.id))
            else:
                items.append(Item(iid, b, attack, apply_transform(attack, b)))
    return items
