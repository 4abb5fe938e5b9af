"""Checkers of the ``startend``, ``combination`` and ``punctuation`` groups: how the response
begins and ends, two answers in one, the prompt repeated first, and no commas."""

from __future__ import annotations


def end_checker(response: str, *, end_phrase: str) -> bool:
    return response.strip().strip('"').lower().endswith(end_phrase.strip().lower())


def quotation(response: str) -> bool:
    text = response.strip()
    return len(text) > 1 and text[0] == '"' and text[-1] == '"'


def repeat_prompt(response: str, *, prompt_to_repeat: str) -> bool:
    return response.strip().lower().startswith(prompt_to_repeat.strip().lower())


def two_responses(response: str) -> bool:
    parts = response.split("******")
    answers = []
    for k, part in enumerate(parts):
        if part.strip():
            answers.append(part.strip())
        elif 0 < k < len(parts) - 1:
            return False
    return len(answers) == 2 and answers[0] != answers[1]


def no_comma(response: str) -> bool:
    return "," not in response
