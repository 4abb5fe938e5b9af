"""Checkers of the ``length_constraints`` group: words, sentences and paragraphs.

Words are ``\\w+`` runs and sentences come from :mod:`cai.evals.ifeval.text`. ``number_paragraphs``
counts paragraphs split by the markdown divider ``***`` (the instruction's own wording), and
``nth_paragraph_first_word`` paragraphs split by a blank line, as upstream does. In both an empty
paragraph at either end is not counted; ``number_paragraphs`` fails on an empty one in between.
"""

from __future__ import annotations

import re

from cai.evals.ifeval.relation import compare
from cai.evals.ifeval.text import count_sentences, count_words

_FIRST_WORD_STOP = set(".,?!'\"")


def number_words(response: str, *, num_words: int, relation: str) -> bool:
    return compare(count_words(response), relation, num_words)


def number_sentences(response: str, *, num_sentences: int, relation: str) -> bool:
    return compare(count_sentences(response), relation, num_sentences)


def number_paragraphs(response: str, *, num_paragraphs: int) -> bool:
    parts = re.split(r"\s?\*\*\*\s?", response)
    n = len(parts)
    for k, part in enumerate(parts):
        if not part.strip():
            if 0 < k < len(parts) - 1:
                return False
            n -= 1
    return n == num_paragraphs


def nth_paragraph_first_word(response: str, *, num_paragraphs: int, nth_paragraph: int, first_word: str) -> bool:
    parts = response.split("\n\n")
    n = sum(1 for p in parts if p.strip())
    if nth_paragraph > n:
        return False
    # Indexed among all parts, empty ones included, as upstream does: a stray blank paragraph
    # before the wanted one shifts it.
    paragraph = parts[nth_paragraph - 1].strip()
    if not paragraph:
        return False
    word = paragraph.split()[0].lstrip("'\"")
    first = ""
    for ch in word:
        if ch in _FIRST_WORD_STOP:
            break
        first += ch.lower()
    return n == num_paragraphs and first == first_word.lower()
