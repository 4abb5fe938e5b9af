"""What a critique run works on: the prompts as items with stable ids, and the principle each
round of each prompt is judged by."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from typing import Any, Sequence

from cai.errors import CAIError
from cai.types import Conversation, check_conversation


@dataclass(frozen=True)
class PromptItem:
    id: str
    messages: Conversation
    index: int  # position in the whole prompt list: round-robin stays stable across resumed runs


def prompt_id(messages: Conversation) -> str:
    """A stable id for a prompt given without one: a digest of its messages."""
    return "p-" + hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]


def prompt_items(prompts: Sequence[Any]) -> list[PromptItem]:
    """Accept Prompt objects, plain strings, conversations, or dicts with ``messages`` (and ``id``)."""
    items = []
    for i, p in enumerate(prompts):
        pid = None
        if isinstance(p, str):
            messages = [{"role": "user", "content": p}]
        elif isinstance(p, dict):
            messages, pid = p.get("messages") or p.get("prompt"), p.get("id")
            if isinstance(messages, str):
                messages = [{"role": "user", "content": messages}]
        elif isinstance(p, (list, tuple)):
            messages = list(p)
        else:  # cai.sources.Prompt and anything shaped like it
            messages, pid = getattr(p, "messages", None), getattr(p, "id", None)
        check_conversation(messages, f"prompts[{i}]")
        if messages[-1]["role"] != "user":
            raise ValueError(f"prompts[{i}]: a prompt must end with a user turn")
        messages = [{"role": m["role"], "content": m["content"]} for m in messages]
        items.append(PromptItem(str(pid) if pid is not None else prompt_id(messages), messages, i))
    return items


def principle_pool(constitution: Any, config: Any) -> list[Any]:
    """The principles rounds draw from: the ids in ``config.principles`` (in order) if given, else
    every principle with both a critique and a revision request."""
    usable = [p for p in constitution.principles if p.critique and p.revision]
    if config.principles:
        chosen = [constitution.principle(pid) for pid in config.principles]
        bad = [p.id for p in chosen if not (p.critique and p.revision)]
        if bad:
            raise CAIError(f"principle(s) {', '.join(bad)} of {constitution.name!r} have no critique/revision "
                           "request; pick others (see `cai constitution show`)")
        return chosen
    if not usable:
        raise CAIError(f"constitution {constitution.name!r} has no principle with both a critique and a revision "
                       "request; the critique engine needs at least one")
    return usable


def choose_principles(item_id: str, index: int, rounds: int, pool: Sequence[Any], config: Any) -> list[Any]:
    """The principle of each round for one prompt.

    random: as in the paper, drawn independently each round, weighted by ``weight``, from an RNG
    seeded by (seed, prompt id) so a prompt gets the same principles whatever batch it lands in;
    round-robin: consecutive principles, each prompt starting one further along;
    list: the given ids in order, cycled.
    """
    if config.principle_selection == "list":
        return [pool[r % len(pool)] for r in range(rounds)]
    if config.principle_selection == "round-robin":
        return [pool[(index + r) % len(pool)] for r in range(rounds)]
    rng = random.Random(f"{config.seed}:{item_id}")
    weights = [max(float(getattr(p, "weight", 1.0)), 0.0) for p in pool]
    if not any(weights):
        weights = [1.0] * len(pool)
    return [rng.choices(pool, weights=weights)[0] for _ in range(rounds)]
