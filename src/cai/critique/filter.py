"""Which revisions are usable SL-CAI data, and why the others are not.

A revision trains the model to write it, so it must be an answer to the user. Small critics often
write something else (on 120 AdvBench prompts with the embedded model, 34% of revisions talked
about the answer and 14% copied their critique). The checks, with their wording in
``templates/revision_filter.yaml``:

* ``commentary``: it talks about an answer ("The assistant's last answer is not helpful...");
* ``copies-critique``: it is mostly the critique it was asked to act on;
* ``copies-example``: it is mostly one of the constitution's worked examples;
* ``off-topic``: it shares no content word with the user's message, is no refusal, and shares
  almost nothing with the first answer either;
* ``repetitive``: it loops, repeating the same few words ("I'm sorry. I'm not. I'm not. ...");
* ``empty``: nothing was written.

:func:`filter_record` keeps the last revision of a record that passes every check as its final
answer, and marks the record dropped when none does, with the reasons per round.
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher
from functools import lru_cache
from typing import Any, Sequence

from cai.templates import load_template


@lru_cache(maxsize=None)
def _rules() -> dict[str, Any]:
    t = load_template("revision_filter")
    flags = re.IGNORECASE | re.MULTILINE
    return {"commentary": [re.compile(p, flags) for p in t["commentary"]],
            "refusal": [re.compile(p, flags) for p in t["refusal"]],
            "copy_ratio": float(t["copy_ratio"]), "min_len": int(t["min_word_length"]),
            "max_overlap": float(t["max_overlap_with_answer"]), "stopwords": frozenset(t["stopwords"]),
            "rep_words": int(t["repetition_min_words"]), "rep_distinct": float(t["repetition_max_distinct"])}


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _content_words(text: str) -> set[str]:
    r = _rules()
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= r["min_len"] and w not in r["stopwords"]}


def is_copy(text: str, source: str) -> bool:
    a, b = _norm(text), _norm(source)
    if not a or not b:
        return False
    if a in b:
        return True
    match, least = SequenceMatcher(None, a, b, autojunk=False), _rules()["copy_ratio"]
    # real_quick_ratio() (the lengths) and quick_ratio() (the letters) bound ratio() from above
    # (difflib's documentation): a pair below either is no copy, decided without ratio()'s
    # quadratic matching, which took 1.7 s of the quickstart's critique step.
    return match.real_quick_ratio() >= least and match.quick_ratio() >= least and match.ratio() >= least


def is_repetitive(text: str) -> bool:
    """Whether ``text`` loops: few of its word trigrams are distinct."""
    r = _rules()
    words = re.findall(r"[\w']+", text.lower())
    if len(words) < r["rep_words"]:
        return False
    trigrams = list(zip(words, words[1:], words[2:]))
    return len(set(trigrams)) / len(trigrams) <= r["rep_distinct"]


def is_refusal(text: str) -> bool:
    return any(p.search(text) for p in _rules()["refusal"])


def revision_problems(revision: str | None, *, user_text: str, critique: str | None = None, initial: str = "",
                      examples: Sequence[str] = ()) -> list[str]:
    """The reasons ``revision`` is not usable as an answer to ``user_text``; [] when it is."""
    text = (revision or "").strip()
    if not text:
        return ["empty"]
    r = _rules()
    problems = []
    if any(p.search(text) for p in r["commentary"]):
        problems.append("commentary")
    if critique and is_copy(text, critique):
        problems.append("copies-critique")
    if any(is_copy(text, ex) for ex in examples):
        problems.append("copies-example")
    if is_repetitive(text):
        problems.append("repetitive")
    words = _content_words(text)
    # Commentary is usually off topic too; one reason per failure keeps the counts readable.
    if "commentary" not in problems and words and not is_refusal(text) and not (words & _content_words(user_text)):
        shared = len(words & _content_words(initial)) / len(words)
        if shared <= r["max_overlap"]:
            problems.append("off-topic")
    return problems


def example_texts(constitution: Any) -> list[str]:
    """The worked examples' critiques, revisions and answers: what a copying critic copies."""
    out = []
    for ex in getattr(constitution, "examples", ()):
        out += [ex.critique, ex.revision] + [m["content"] for m in ex.messages if m["role"] == "assistant"]
    return [t for t in out if t]


def filter_record(rec: dict[str, Any], examples: Sequence[str] = ()) -> dict[str, Any]:
    """The record with ``filter`` added: the round kept (its revision becomes ``final``) or, when no
    revision passes, ``dropped`` with the reasons of each round."""
    user_text = "\n".join(m["content"] for m in rec["prompt"] if m["role"] == "user")
    reasons: dict[str, list[str]] = {}
    kept = None
    for k, step in enumerate(rec.get("steps", []), 1):
        if step.get("stopped"):
            continue
        problems = revision_problems(step.get("revision"), user_text=user_text, critique=step.get("critique"),
                                     initial=rec.get("initial", ""), examples=examples)
        if problems:
            reasons[str(k)] = problems
        else:
            kept = k
    out = dict(rec)
    out["filter"] = {"kept_round": kept, "reasons": reasons}
    if kept is None:
        out["dropped"] = sorted({p for ps in reasons.values() for p in ps}) or ["no-revision"]
        return out
    final = rec["steps"][kept - 1]["revision"]
    if final != rec["final"]:
        out.update(final=final, revised=final != rec["initial"],
                   messages=rec["prompt"] + [{"role": "assistant", "content": final}],
                   completion=[{"role": "assistant", "content": final}],
                   chosen=[{"role": "assistant", "content": final}])
    return out


def kept_nothing(dropped: Any) -> str:
    """The error when every record was dropped: how many, why (reasons by count), where they are,
    and what to change. Without it a run ended "done" with no dataset, and the next stage said
    only that the file was missing."""
    from collections import Counter

    records = list(dropped)
    reasons = Counter(r for rec in records for r in rec.get("dropped") or ["no-revision"])
    why = ", ".join(f"{r} {n}" for r, n in reasons.most_common())
    return (f"the filter kept 0 of {len(records)} records (reasons: {why}); they are in {dropped.path}, each with "
            "its reasons. To get training data, give more prompts (--limit), sample best of K revisions "
            "(--samples 4), try --revision-mode distill or a larger --critic, or keep every revision with "
            "--no-filter (filter: false in a cai run file)")
