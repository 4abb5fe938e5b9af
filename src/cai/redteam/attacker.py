"""The attacker: a model that writes new red-team requests per harm category from a few examples,
as the few-shot generation of "Red Teaming Language Models with Language Models" (Perez et al.
2022). For each behavior, the attacker is shown up to ``shots`` behaviors of the same category
(that behavior among them, the rest drawn with a seed) and writes one new request, which the target
then answers as it is. The wording is in ``templates/redteam.yaml`` (``attacker``).
"""

from __future__ import annotations

import random
import re
from typing import Any, Sequence

from cai.redteam.behaviors import Behavior
from cai.types import Conversation, SamplingParams, keyed_seed

_NUMBERING = re.compile(r"^\s*(?:(?:\d+[.)]|[-*•]|request\s*:)\s*)+", re.IGNORECASE)


def examples_for(behavior: Behavior, pool: Sequence[Behavior], shots: int, seed: int) -> list[Behavior]:
    """``behavior`` and up to ``shots - 1`` others of its category, drawn with a seed per behavior
    so the same behavior gets the same examples in any batch or resumed run."""
    others = [b for b in pool if b.category == behavior.category and b.id != behavior.id]
    rng = random.Random(keyed_seed(seed, behavior.id))
    picked = rng.sample(others, min(len(others), max(0, shots - 1))) + [behavior]
    rng.shuffle(picked)
    return picked


def attacker_conversation(behavior: Behavior, pool: Sequence[Behavior], shots: int, seed: int) -> Conversation:
    from cai.templates import fill, load_template

    spec = load_template("redteam")["attacker"]
    lines = "\n".join(fill(spec["example_line"], n=i, text=b.text)
                      for i, b in enumerate(examples_for(behavior, pool, shots, seed), 1))
    return [{"role": m["role"], "content": fill(m["content"], category=behavior.category, examples=lines)}
            for m in spec["messages"]]


def clean_request(text: str) -> str:
    """The first non-empty line of what the attacker wrote, without numbering or quotes."""
    for line in text.splitlines():
        line = _NUMBERING.sub("", line).strip().strip('"“”\'').strip()
        if line:
            return line
    return ""


def write_requests(attacker: Any, behaviors: Sequence[Behavior], pool: Sequence[Behavior], *, shots: int,
                   seed: int, temperature: float, max_tokens: int) -> list[tuple[str, str]]:
    """One new request per behavior, in one batched ``generate`` call: a list of (request, raw text).
    An empty request falls back to the behavior itself, so the item is still answered and graded;
    the raw text, kept in the record, shows when that happened."""
    if not behaviors:
        return []
    convs = [attacker_conversation(b, pool, shots, seed) for b in behaviors]
    # A seed per behavior: its request is the same whatever batch a resumed run puts it in.
    params = SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=seed,
                            seeds=tuple(keyed_seed(seed, "attacker", b.id) for b in behaviors))
    outs = attacker.generate(convs, params)
    if len(outs) != len(behaviors):
        raise RuntimeError(f"attacker returned {len(outs)} requests for {len(behaviors)} behaviors")
    return [(clean_request(o.text) or b.text, o.text) for b, o in zip(behaviors, outs)]
