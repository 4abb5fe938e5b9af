"""Checkers of the ``change_case`` and ``language`` groups. Languages are told by
:func:`cai.evals.ifeval.language.detect_language`; a text it cannot place counts as being in the
asked language, as upstream counts one langdetect cannot read."""

from __future__ import annotations

from cai.evals.ifeval.language import detect_language
from cai.evals.ifeval.relation import compare
from cai.evals.ifeval.text import word_tokens


def _is(response: str, language: str) -> bool:
    found = detect_language(response)
    return found is None or found == language


def english_capital(response: str) -> bool:
    return response.isupper() and _is(response, "en")


def english_lowercase(response: str) -> bool:
    return response.islower() and _is(response, "en")


def capital_word_frequency(response: str, *, capital_frequency: int, capital_relation: str) -> bool:
    return compare(sum(1 for w in word_tokens(response) if w.isupper()), capital_relation, capital_frequency)


def response_language(response: str, *, language: str) -> bool:
    return _is(response, language)
