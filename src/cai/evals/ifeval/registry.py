"""The 25 IFEval instruction types: each id, its checker and the arguments it takes.

An instruction in the data is ``(id, kwargs)``; :func:`check_args` says what is wrong with one
(an unknown id, a missing or mistyped argument) so the loader can name the line, and
:func:`follows` runs its checker on a response.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from cai.evals.ifeval import case, formats, keywords, length, startend
from cai.evals.ifeval.language import LANGUAGES
from cai.evals.ifeval.relation import RELATIONS

# Argument kinds: how a kwarg is checked when the data is loaded.
INT, TEXT, WORDS, RELATION, LANGUAGE = "int", "text", "words", "relation", "language"


@dataclass(frozen=True)
class Instruction:
    id: str
    check: Callable[..., bool]
    args: dict[str, str]  # argument name -> kind


def _table(*rows: tuple[str, Callable[..., bool], dict[str, str]]) -> dict[str, Instruction]:
    return {i: Instruction(i, fn, args) for i, fn, args in rows}


INSTRUCTIONS = _table(
    ("keywords:existence", keywords.existence, {"keywords": WORDS}),
    ("keywords:forbidden_words", keywords.forbidden_words, {"forbidden_words": WORDS}),
    ("keywords:frequency", keywords.frequency, {"keyword": TEXT, "frequency": INT, "relation": RELATION}),
    ("keywords:letter_frequency", keywords.letter_frequency,
     {"letter": TEXT, "let_frequency": INT, "let_relation": RELATION}),
    ("language:response_language", case.response_language, {"language": LANGUAGE}),
    ("length_constraints:number_sentences", length.number_sentences, {"num_sentences": INT, "relation": RELATION}),
    ("length_constraints:number_paragraphs", length.number_paragraphs, {"num_paragraphs": INT}),
    ("length_constraints:number_words", length.number_words, {"num_words": INT, "relation": RELATION}),
    ("length_constraints:nth_paragraph_first_word", length.nth_paragraph_first_word,
     {"num_paragraphs": INT, "nth_paragraph": INT, "first_word": TEXT}),
    ("detectable_content:number_placeholders", formats.number_placeholders, {"num_placeholders": INT}),
    ("detectable_content:postscript", formats.postscript, {"postscript_marker": TEXT}),
    ("detectable_format:number_bullet_lists", formats.number_bullet_lists, {"num_bullets": INT}),
    ("detectable_format:constrained_response", formats.constrained_response, {}),
    ("detectable_format:number_highlighted_sections", formats.number_highlighted_sections, {"num_highlights": INT}),
    ("detectable_format:multiple_sections", formats.multiple_sections, {"section_spliter": TEXT, "num_sections": INT}),
    ("detectable_format:json_format", formats.json_format, {}),
    ("detectable_format:title", formats.title, {}),
    ("combination:two_responses", startend.two_responses, {}),
    ("combination:repeat_prompt", startend.repeat_prompt, {"prompt_to_repeat": TEXT}),
    ("startend:end_checker", startend.end_checker, {"end_phrase": TEXT}),
    ("startend:quotation", startend.quotation, {}),
    ("change_case:capital_word_frequency", case.capital_word_frequency,
     {"capital_frequency": INT, "capital_relation": RELATION}),
    ("change_case:english_capital", case.english_capital, {}),
    ("change_case:english_lowercase", case.english_lowercase, {}),
    ("punctuation:no_comma", startend.no_comma, {}),
)


def _kind_error(name: str, kind: str, value: Any) -> str | None:
    if kind == INT:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        return None if ok else f"{name} must be a whole number >= 0, got {value!r}"
    if kind == TEXT:
        return None if isinstance(value, str) and value.strip() else f"{name} must be a non-empty string, got {value!r}"
    if kind == WORDS:
        ok = isinstance(value, list) and value and all(isinstance(w, str) and w.strip() for w in value)
        return None if ok else f"{name} must be a non-empty list of words, got {value!r}"
    if kind == RELATION:
        return None if value in RELATIONS else f"{name} must be one of {', '.join(map(repr, RELATIONS))}, got {value!r}"
    if value not in LANGUAGES:
        return f"{name} {value!r} is not a language cai can detect; known: {', '.join(sorted(LANGUAGES))}"
    return None


def check_args(instruction_id: str, kwargs: Any) -> str | None:
    """What is wrong with one instruction of the data, or None. Arguments set to null are ignored,
    as upstream's data carries them for every instruction in some versions."""
    inst = INSTRUCTIONS.get(instruction_id)
    if inst is None:
        return f"unknown instruction {instruction_id!r}; known: {', '.join(sorted(INSTRUCTIONS))}"
    if not isinstance(kwargs, dict):
        return f"{instruction_id}: kwargs must be an object, got {kwargs!r}"
    given = {k: v for k, v in kwargs.items() if v is not None}
    extra = sorted(set(given) - set(inst.args))
    if extra:
        return f"{instruction_id}: unexpected argument(s) {', '.join(extra)}; it takes {', '.join(inst.args) or 'none'}"
    for name, kind in inst.args.items():
        if name not in given:
            return f"{instruction_id}: missing argument {name}"
        if name == "letter" and isinstance(given[name], str) and len(given[name].strip()) != 1:
            return f"{instruction_id}: letter must be one character, got {given[name]!r}"
        err = _kind_error(name, kind, given[name])
        if err:
            return f"{instruction_id}: {err}"
    return None


def follows(instruction_id: str, kwargs: dict[str, Any], response: str) -> bool:
    """Whether ``response`` follows the instruction; an empty response follows none, as upstream."""
    if not response.strip():
        return False
    inst = INSTRUCTIONS[instruction_id]
    return bool(inst.check(response, **{k: v for k, v in kwargs.items() if v is not None}))
