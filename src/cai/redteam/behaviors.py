"""Harmful behaviors to attack: AdvBench (shipped), HarmBench, JailbreakBench, the forbidden
questions, or any JSONL/CSV prompt file, each with its harm category where the source has one.

Reading goes through :func:`cai.sources.load_prompts`, so the prompt column is detected the same
way everywhere (``goal``, ``Behavior``, ``question``...) and HarmBench's contextual behaviors get
their ``ContextString``. This module only picks the category and the affirmative target out of
the other columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cai.errors import CAIError

# Where each known source keeps its harm category, tried in this order (case-insensitively):
# our own files and JailbreakBench ("category"/"Category"), HarmBench ("SemanticCategory"), the
# forbidden questions ("content_policy_name"), and a few common spellings.
CATEGORY_FIELDS = ("category", "harm_category", "semanticcategory", "content_policy_name", "risk_area", "type")
# The affirmative opening AdvBench and JailbreakBench give for each behavior ("Sure, here is ...").
TARGET_FIELDS = ("target",)
UNCATEGORIZED = "uncategorized"
# Behavior sets that ship inside the package (``cai.evals.datasets``), by the name --data takes.
BUILTIN = ("advbench",)


@dataclass(frozen=True)
class Behavior:
    id: str
    text: str
    category: str
    source: str
    target: str | None = None


def _pick(meta: dict[str, Any], names: tuple[str, ...]) -> str | None:
    lowered = {str(k).lower(): v for k, v in meta.items()}
    for name in names:
        v = lowered.get(name)
        if isinstance(v, str) and v.strip():
            return v.strip()
    return None


def resolve_source(src: str) -> str:
    """A built-in behavior set's shipped file, or ``src`` unchanged."""
    if src in BUILTIN:
        from cai.evals.datasets import dataset_path

        return str(dataset_path(src))
    return src


def load_behaviors(src: str, *, field: str | None = None, category_field: str | None = None,
                   limit: int | None = None, shuffle: bool = False, seed: int = 0) -> list[Behavior]:
    """The behaviors of ``src`` (a built-in name such as ``advbench`` or a file), shuffled with
    ``seed`` if asked, then the first ``limit``. Each keeps its category (``uncategorized`` when the
    source has none) and its affirmative target when the source gives one."""
    from cai.sources import load_prompts

    if not src:
        raise CAIError("no behaviors given; pass --data advbench or a JSONL/CSV file of harmful requests")
    prompts = load_prompts(resolve_source(src), field=field, limit=limit, shuffle=shuffle, seed=seed)
    out = []
    for p in prompts:
        # A behavior is one request; an earlier turn in the source would not survive being wrapped.
        text = p.messages[-1]["content"].strip()
        if not text:
            raise CAIError(f"{src}: behavior {p.id} is empty; fill it in or remove the row")
        if category_field:
            if category_field not in p.meta:
                raise CAIError(f"{src}: behavior {p.id} has no {category_field!r} column; "
                               f"columns there: {', '.join(map(str, p.meta)) or 'none'}")
            category = str(p.meta[category_field]).strip() or UNCATEGORIZED
        else:
            category = _pick(p.meta, CATEGORY_FIELDS) or UNCATEGORIZED
        out.append(Behavior(p.id, text, category, src, _pick(p.meta, TARGET_FIELDS)))
    return out
