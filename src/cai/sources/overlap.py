"""Exact and near-duplicate prompts: the one definition that keeps training prompts apart from eval
prompts, used when the built-in prompt sets are made (``scripts/build_prompt_sets.py``) and when an
eval measures its overlap with training prompts (:mod:`cai.evals.overlap`).

Two prompts are an **exact** match when their texts agree after :func:`normalise` (lower-case,
whitespace collapsed, punctuation stripped at the ends). They are **near duplicates** when the
Jaccard index of their word 3-gram sets (:func:`shingles`) is at least 0.5: a rephrased opening
("How can I ..." / "How do I ..."), a changed name or an added clause keeps most shingles, while
prompts that merely share a topic stay apart. Same words (case and punctuation aside) is Jaccard 1.

Candidates come from an inverted index over shingles with prefix filtering (Bayardo et al. 2007,
"Scaling up all pairs similarity search"): shingles are ordered rarest first, and two sets with
Jaccard >= t must share a shingle among the first ``|s| - ceil(t |s|) + 1`` of each, so only those
are indexed and probed; every candidate is then checked with the exact Jaccard. Nothing is
approximated, and common shingles ("how do i") never make long posting lists.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter, defaultdict
from typing import Iterable

__all__ = ["SHINGLE", "THRESHOLD", "NearDuplicateIndex", "jaccard", "normalise", "shingles", "words"]

THRESHOLD = 0.5
SHINGLE = 3
_WORD = re.compile(r"\w+")


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


def words(text: str) -> tuple[str, ...]:
    """Lower-case words (runs of letters and digits, any script), punctuation dropped (an
    apostrophe splits: "don't" -> don, t)."""
    return tuple(_WORD.findall(text.lower()))


def shingles(text: str, n: int = SHINGLE) -> frozenset[str]:
    """The set of word ``n``-grams of ``text`` (:func:`words`, so punctuation inside a sentence
    changes nothing). A text shorter than ``n`` words is one shingle."""
    w = words(text)
    if len(w) < n:
        return frozenset([" ".join(w)]) if w else frozenset()
    return frozenset(" ".join(w[i:i + n]) for i in range(len(w) - n + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0  # a text without words duplicates nothing
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


class NearDuplicateIndex:
    """Reference texts (an eval set, say) that candidates are checked against.

    Prefix filtering needs one fixed order of shingles for every set, so the rarest-first order is
    taken from the texts given here and kept: texts :meth:`add`-ed later are found just the same,
    only with less pruning."""

    def __init__(self, texts: Iterable[str] = (), threshold: float = THRESHOLD) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self._texts: list[str] = []
        self._sets: list[frozenset[str]] = []
        self._postings: dict[str, list[int]] = defaultdict(list)
        texts = list(texts)
        sets = [shingles(t) for t in texts]
        self._df: Counter[str] = Counter(g for s in sets for g in s)
        for text, s in zip(texts, sets):
            self._add(text, s)

    def __len__(self) -> int:
        return len(self._texts)

    def _prefix(self, s: frozenset[str]) -> list[str]:
        # The 1e-9 keeps t*|s| = 3.0000000004 from rounding the needed overlap up by one.
        keep = len(s) - math.ceil(self.threshold * len(s) - 1e-9) + 1
        return sorted(s, key=lambda g: (self._df[g], g))[:keep]

    def _add(self, text: str, s: frozenset[str]) -> None:
        for g in self._prefix(s):
            self._postings[g].append(len(self._texts))
        self._texts.append(text)
        self._sets.append(s)

    def add(self, text: str) -> None:
        self._add(text, shingles(text))

    def nearest(self, text: str) -> tuple[int, float] | None:
        """(The position of the most similar reference text, its Jaccard index) when that is at
        least the threshold, else None; of equally similar ones the first added."""
        s = shingles(text)
        best: tuple[int, float] | None = None
        for k in sorted({k for g in self._prefix(s) for k in self._postings.get(g, ())}):
            t = self._sets[k]
            if min(len(s), len(t)) < self.threshold * max(len(s), len(t)) - 1e-9:
                continue  # the sizes alone rule it out
            sim = jaccard(s, t)
            if sim >= self.threshold and (best is None or sim > best[1]):
                best = (k, sim)
        return best

    def match(self, text: str) -> tuple[str, float] | None:
        """The most similar reference text that ``text`` near-duplicates, with its Jaccard index
        (1.0 for the same words), or None."""
        hit = self.nearest(text)
        return None if hit is None else (self._texts[hit[0]], hit[1])
