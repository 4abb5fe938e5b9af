"""Checkers of the ``keywords`` group: words that must, must not, or must so often appear.

Matching is case-insensitive, as upstream. ``existence`` and ``frequency`` look for the keyword
anywhere (a substring: "cat" is found in "category"); ``forbidden_words`` only as a whole word.
"""

from __future__ import annotations

import re
from collections import Counter

from cai.evals.ifeval.relation import compare


def existence(response: str, *, keywords: list[str]) -> bool:
    return all(re.search(re.escape(k), response, flags=re.IGNORECASE) for k in keywords)


def forbidden_words(response: str, *, forbidden_words: list[str]) -> bool:
    return not any(re.search(r"\b" + re.escape(w) + r"\b", response, flags=re.IGNORECASE) for w in forbidden_words)


def frequency(response: str, *, keyword: str, frequency: int, relation: str) -> bool:
    n = len(re.findall(re.escape(keyword.strip()), response, flags=re.IGNORECASE))
    return compare(n, relation, frequency)


def letter_frequency(response: str, *, letter: str, let_frequency: int, let_relation: str) -> bool:
    return compare(Counter(response.lower())[letter.strip().lower()], let_relation, let_frequency)
