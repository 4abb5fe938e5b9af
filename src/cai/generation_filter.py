"""Which of a model's own answers are usable training data (``cai generate --filter``).

An answer in an SFT mix teaches the model to write it. In the SL-CAI dose-response study
(docs/results.md), the model's own answers to chat questions are the helpful half of the mix, so
that it does not learn "a chat question gets a refusal"; an answer that refuses would teach exactly
that, and one that loops teaches looping. Each answer is checked in this order, and a dropped one
gets the first reason that applies:

* ``empty``: under :data:`MIN_CHARS` characters once trimmed (nothing to learn from);
* ``refuses``: the refusal grader (``refusal-strings:extended`` by default) says it refuses. It
  reads the answer as written, so a refusal in a tail that trimming cuts off still counts;
* ``repetitive``: it loops (:func:`cai.critique.filter.is_repetitive`, the revision filter's check).

An answer cut at the token limit (``finish_reason: length``) stops mid-sentence, and training on
it would teach stopping mid-sentence, so it is first cut back to its last whole sentence
(:func:`whole_sentences`); the kept record says so with ``trimmed: true``.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from cai.critique.filter import is_repetitive

# Shorter answers are fragments ("Sure!", a lone heading): the study dropped them as empty.
MIN_CHARS = 20
REASONS = ("refuses", "repetitive", "empty")
_SENTENCE_END = re.compile(r"(?<![0-9])[.!?](\s|$)|\n")  # not "1." of a numbered list


def whole_sentences(text: str) -> str:
    """``text`` up to the end of its last complete sentence or line ("" when it has none)."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]].rstrip() if ends else ""


def answer_of(rec: dict[str, Any]) -> str:
    """The answer of a ``cai generate`` record: its last (assistant) message."""
    msgs = rec.get("messages") or []
    return msgs[-1]["content"] if msgs and msgs[-1].get("role") == "assistant" else ""


def filter_answers(records: Sequence[dict[str, Any]], grader: Any) -> list[dict[str, Any]]:
    """Each ``cai generate`` record, in order, either kept (its answer trimmed when it was cut at
    the token limit, and ``trimmed`` saying whether it was) or marked ``dropped: [REASON]`` with its
    answer as written. ``grader`` is a loaded grader (:func:`cai.evals.graders.load_grader`)."""
    if not records:
        return []
    texts = [answer_of(r) for r in records]
    grades = grader.grade([list(r["messages"][:-1]) for r in records], texts)
    out = []
    for rec, text, grade in zip(records, texts, grades):
        cut = (rec.get("completion") or {}).get("finish_reason") == "length"
        kept = whole_sentences(text) if cut else text
        reason = ("empty" if len(kept.strip()) < MIN_CHARS else "refuses" if grade.refused
                  else "repetitive" if is_repetitive(kept) else None)
        if reason:
            out.append({**rec, "dropped": [reason]})
            continue
        new = dict(rec)
        if kept != text:
            new["messages"] = list(rec["messages"][:-1]) + [{**rec["messages"][-1], "content": kept}]
        new["trimmed"] = kept != text
        out.append(new)
    return out


def dropped_counts(records: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Dropped records per reason, every reason listed (0 when none)."""
    counts = dict.fromkeys(REASONS, 0)
    for rec in records:
        for r in rec.get("dropped") or ():
            counts[r] = counts.get(r, 0) + 1
    return counts


def kept_no_answer(dropped: Any) -> str:
    """The error when the filter dropped every answer: counts by reason, where they are, what to change."""
    counts = {r: n for r, n in dropped_counts(list(dropped)).items() if n}
    why = ", ".join(f"{r} {n}" for r, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return (f"the filter kept 0 of {sum(counts.values())} answers (reasons: {why}); they are in {dropped.path}, "
            "each with its reason. Give more prompts (--limit), a larger --max-tokens (answers cut with no "
            "whole sentence are empty), another --filter-grader, or keep every answer with --no-filter")
