"""Is an eval set held out from the training prompts? Exact and near-duplicate overlap, measured.

Exact and near duplicates are as :mod:`cai.sources.overlap` defines them (normalised texts equal;
word 3-gram Jaccard >= 0.5). ``near`` counts the eval prompts that are near-duplicates without being
exact copies; ``share`` is the share of eval prompts that are either. On short prompts one changed
word is enough to stay above 0.5 ("How can I kill a person?" / "How can I kill a Python process?": 3
of 6 shingles), which is what a templated eval set should be warned about. Thousands of eval prompts
against thousands of training prompts take well under a second.

An eval result records :meth:`Overlap.to_json` under ``"overlap"`` (``null`` when no training
prompts were given: not checked); ``cai run`` stops before any step when an eval set overlaps the
run's own training prompts (:mod:`cai.run.heldout`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from cai.config import option
from cai.errors import CAIError
from cai.sources.overlap import SHINGLE, THRESHOLD, NearDuplicateIndex, normalise

MAX_EXAMPLES = 5
_SHOWN_CHARS = 300  # of each text in an example pair: enough to recognise it, not a copy of the set


def train_prompts_option() -> Any:
    """The ``--train-prompts`` field every eval that answers prompts declares."""
    return option((), help="training prompt sources (any prompt source of cai critique, or a JSONL of cai "
                  "critique/generate records; repeatable): the result records how many eval prompts are exact or "
                  "near-duplicates of them (default: not checked)")


@dataclass
class Overlap:
    """How much of an eval set its training sources contain."""

    sources: list[str]
    n: int                      # eval prompts checked
    exact: int                  # eval prompts with an exact (normalised) copy in some source
    near: int                   # eval prompts with a near-duplicate and no exact copy
    by_source: dict[str, dict[str, int]] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    threshold: float = THRESHOLD

    @property
    def share(self) -> float:
        return (self.exact + self.near) / self.n if self.n else 0.0

    @property
    def count(self) -> int:
        return self.exact + self.near

    def to_json(self) -> dict[str, Any]:
        return {"train_sources": list(self.sources), "n": self.n, "exact": self.exact, "near": self.near,
                "share": self.share, "threshold": self.threshold, "shingle": SHINGLE,
                "by_source": self.by_source, "examples": self.examples}


def _shown(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def measure(eval_texts: Sequence[str], train: Mapping[str, Sequence[str]], *, threshold: float = THRESHOLD,
            max_examples: int = MAX_EXAMPLES) -> Overlap:
    """Overlap of ``eval_texts`` with each training source (name -> its prompt texts)."""
    eval_norm = [normalise(t) for t in eval_texts]
    hits: dict[int, dict[str, Any]] = {}  # eval index -> its best pair (an exact one wins over a near one)
    by_source: dict[str, dict[str, int]] = {}
    for name, texts in train.items():
        texts = list(texts)
        norm = [normalise(t) for t in texts]
        first = {}
        for j, t in enumerate(norm):
            first.setdefault(t, j)
        exact = {i: first[t] for i, t in enumerate(eval_norm) if t and t in first}
        index = NearDuplicateIndex(norm, threshold)
        near = {i: pair for i, t in enumerate(eval_norm) if i not in exact and (pair := index.nearest(t))}
        by_source[name] = {"exact": len(exact), "near": len(near)}
        for i, j in exact.items():
            if hits.get(i, {}).get("kind") != "exact":
                hits[i] = {"kind": "exact", "source": name, "eval": eval_texts[i], "train": texts[j], "jaccard": 1.0}
        for i, (j, sim) in near.items():
            if i not in hits or (hits[i]["kind"] == "near" and sim > hits[i]["jaccard"]):
                hits[i] = {"kind": "near", "source": name, "eval": eval_texts[i], "train": texts[j],
                           "jaccard": round(sim, 3)}
    # Both kinds shown when both occur (exact and near alternating, each in eval order): a near pair
    # shows what the threshold catches, which a list of exact copies would hide.
    kinds = [[i for i in sorted(hits) if hits[i]["kind"] == k] for k in ("exact", "near")]
    order = [i for pair in itertools.zip_longest(*kinds) for i in pair if i is not None]
    examples = [{**hits[i], "eval": _shown(hits[i]["eval"]), "train": _shown(hits[i]["train"])}
                for i in order[:max_examples]]
    n_exact = sum(1 for h in hits.values() if h["kind"] == "exact")
    return Overlap(list(train), len(eval_texts), n_exact, len(hits) - n_exact, by_source, examples, threshold)


def prompt_text(messages: Iterable[Mapping[str, Any]]) -> str:
    """The words a prompt asks: its user turns, one per line (system text is instructions, not the
    request, and an assistant turn is an answer)."""
    return "\n".join(str(m["content"]) for m in messages if m.get("role") == "user")


def weightless(spec: str) -> str:
    """``FILE:0.5`` (an SFT/DPO data mix weight) -> ``FILE``; anything else unchanged."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and not Path(spec).exists():
        try:
            float(tail)
        except ValueError:
            return spec
        return head
    return spec


def train_texts(spec: str) -> list[str]:
    """The prompt texts of one training source: anything :func:`cai.sources.load_prompts` reads
    (a built-in set, a file, ``hh-rlhf:PATH``, ``hf:...``), including cai critique/generate/label
    output, whose records hold the prompt with its answers; ``FILE:WEIGHT`` reads FILE."""
    from cai.sources import load_prompts

    path = weightless(spec)
    p = Path(path)
    if p.is_file() and not p.read_bytes().strip():
        return []  # a training file left empty (every revision filtered out) holds no prompts
    return [prompt_text(p.messages) for p in load_prompts(path)]


def held_out(eval_texts: Sequence[str], sources: Sequence[str], *,
             cache: dict[str, list[str]] | None = None) -> dict[str, Any] | None:
    """The ``overlap`` block of an eval result: None (not checked) without training sources."""
    if not sources:
        return None
    cache = {} if cache is None else cache
    train = {}
    for s in dict.fromkeys(sources):
        if s not in cache:
            try:
                cache[s] = train_texts(s)
            except CAIError as e:
                raise CAIError(f"--train-prompts {s}: {e}") from None
        train[s] = cache[s]
    return measure(eval_texts, train).to_json()
