"""Is an eval set held out from the training prompts? Exact and near-duplicate overlap, measured.

Two prompts are an **exact** match when their texts agree after :func:`normalise` (lower-case,
whitespace collapsed, punctuation stripped at the ends). They are a **near-duplicate** when the
Jaccard similarity of their word 3-gram sets (shingles, :func:`shingles`) is at least 0.5: a
rephrased opening, a changed name or an added clause keeps most shingles, a different request
shares few. ``near`` counts the eval prompts that are near-duplicates without being exact copies;
``share`` is the share of eval prompts that are either. On short prompts one changed word is
enough to stay above 0.5 ("How can I kill a person?" / "How can I kill a Python process?": 3 of 6
shingles), which is what a templated eval set should be warned about.

Candidate pairs come from an inverted index over shingles with prefix filtering (Bayardo et al.
2007, "Scaling up all pairs similarity search"): shingles are ordered rarest first, and two sets
with Jaccard >= t must share a shingle among the first ``|s| - ceil(t |s|) + 1`` of each, so only
those are indexed and probed; every candidate is then checked with the exact Jaccard. Nothing is
approximated, and common shingles ("how do i") never make long posting lists. Thousands of eval
prompts against thousands of training prompts take well under a second.

An eval result records :meth:`Overlap.to_json` under ``"overlap"`` (``null`` when no training
prompts were given: not checked); ``cai run`` stops before any step when an eval set overlaps the
run's own training prompts (:mod:`cai.run.heldout`).
"""

from __future__ import annotations

import itertools
import math
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from cai.config import option
from cai.errors import CAIError

THRESHOLD = 0.5
SHINGLE = 3
MAX_EXAMPLES = 5
_SHOWN_CHARS = 300  # of each text in an example pair: enough to recognise it, not a copy of the set
_WORD = re.compile(r"\w+")


def train_prompts_option() -> Any:
    """The ``--train-prompts`` field every eval that answers prompts declares."""
    return option((), help="training prompt sources (any prompt source of cai critique, or a JSONL of cai "
                  "critique/generate records; repeatable): the result records how many eval prompts are exact or "
                  "near-duplicates of them (default: not checked)", repeatable=True)


def _edge(c: str) -> bool:
    return c.isspace() or unicodedata.category(c).startswith("P")


def normalise(text: str) -> str:
    """Lower-case, whitespace collapsed to single spaces, punctuation stripped at both ends."""
    t = " ".join(text.lower().split())
    i, j = 0, len(t)
    while i < j and _edge(t[i]):
        i += 1
    while j > i and _edge(t[j - 1]):
        j -= 1
    return t[i:j]


def shingles(text: str, n: int = SHINGLE) -> frozenset[str]:
    """The set of word ``n``-grams of ``text`` (words: runs of letters and digits, lower-cased, so
    punctuation inside a sentence changes nothing). A text shorter than ``n`` words is one shingle."""
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return frozenset([" ".join(words)]) if words else frozenset()
    return frozenset(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def near_pairs(queries: Sequence[frozenset[str]], targets: Sequence[frozenset[str]], *,
               threshold: float = THRESHOLD) -> dict[int, tuple[int, float]]:
    """For each query set with some target at Jaccard >= ``threshold``: (the most similar target's
    index, that Jaccard). Exact: prefix filtering prunes only pairs that cannot reach the threshold."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    df: Counter[str] = Counter()
    for s in (*queries, *targets):
        df.update(s)

    def prefix(s: frozenset[str]) -> list[str]:
        # The 1e-9 keeps t*|s| = 3.0000000004 from rounding the needed overlap up by one.
        keep = len(s) - math.ceil(threshold * len(s) - 1e-9) + 1
        return sorted(s, key=lambda g: (df[g], g))[:keep]

    index: dict[str, list[int]] = defaultdict(list)
    for j, s in enumerate(targets):
        for g in prefix(s):
            index[g].append(j)
    found: dict[int, tuple[int, float]] = {}
    for i, s in enumerate(queries):
        if not s:
            continue
        candidates = {j for g in prefix(s) for j in index.get(g, ())}
        for j in sorted(candidates):
            t = targets[j]
            if min(len(s), len(t)) < threshold * max(len(s), len(t)) - 1e-9:
                continue  # the sizes alone rule it out
            sim = jaccard(s, t)
            if sim >= threshold and sim > found.get(i, (-1, -1.0))[1]:
                found[i] = (j, sim)
    return found


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
    eval_sh = [shingles(t) for t in eval_norm]
    hits: dict[int, dict[str, Any]] = {}  # eval index -> its best pair (an exact one wins over a near one)
    by_source: dict[str, dict[str, int]] = {}
    for name, texts in train.items():
        texts = list(texts)
        norm = [normalise(t) for t in texts]
        first = {}
        for j, t in enumerate(norm):
            first.setdefault(t, j)
        exact = {i: first[t] for i, t in enumerate(eval_norm) if t and t in first}
        near = {i: pair for i, pair in near_pairs(eval_sh, [shingles(t) for t in norm], threshold=threshold).items()
                if i not in exact}
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
