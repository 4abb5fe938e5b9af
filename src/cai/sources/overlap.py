"""Near-duplicate detection between prompt sets, so training prompts stay apart from eval prompts.

Two prompts are near duplicates when their words are the same once case and punctuation are
ignored, or when their word-trigram sets overlap with a Jaccard index of at least 0.5. Light
rewording of a request ("How can I ..." / "How do I ...") keeps most trigrams, so this catches
the copies that would leak an eval set into training, while prompts that merely share a topic
stay apart.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Iterable

__all__ = ["NEAR_DUPLICATE_JACCARD", "NearDuplicateIndex", "jaccard", "word_trigrams", "words"]

NEAR_DUPLICATE_JACCARD = 0.5
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> tuple[str, ...]:
    """Lower-case words, punctuation dropped (an apostrophe splits: "don't" -> don, t)."""
    return tuple(_WORD.findall(text.lower()))


def word_trigrams(text: str) -> frozenset[tuple[str, ...]]:
    """The set of consecutive word triples; a text under three words is its own single gram."""
    w = words(text)
    if len(w) < 3:
        return frozenset([w]) if w else frozenset()
    return frozenset(zip(w, w[1:], w[2:]))


def jaccard(a: frozenset, b: frozenset) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


class NearDuplicateIndex:
    """Reference texts (an eval set, say) that candidates are checked against, with an inverted
    index on trigrams so each check only compares texts sharing at least one trigram."""

    def __init__(self, texts: Iterable[str], threshold: float = NEAR_DUPLICATE_JACCARD) -> None:
        self.threshold = threshold
        self._texts: list[str] = []
        self._grams: list[frozenset] = []
        self._exact: dict[tuple[str, ...], int] = {}
        self._by_gram: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for text in texts:
            self.add(text)

    def __len__(self) -> int:
        return len(self._texts)

    def add(self, text: str) -> None:
        k = len(self._texts)
        grams = word_trigrams(text)
        self._texts.append(text)
        self._grams.append(grams)
        self._exact.setdefault(words(text), k)
        for g in grams:
            self._by_gram[g].append(k)

    def match(self, text: str) -> tuple[str, float] | None:
        """The closest reference text that ``text`` near-duplicates, with its Jaccard index (1.0
        for the same words), or None."""
        k = self._exact.get(words(text))
        if k is not None:
            return self._texts[k], 1.0
        grams = word_trigrams(text)
        best: tuple[str, float] | None = None
        for k in {k for g in grams for k in self._by_gram.get(g, ())}:
            score = jaccard(grams, self._grams[k])
            if score >= self.threshold and (best is None or score > best[1]):
                best = (self._texts[k], score)
        return best
