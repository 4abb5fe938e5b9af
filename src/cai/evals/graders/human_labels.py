"""Answers with human refusal labels, to measure a grader against (``cai eval grader --data``).

Two shapes are read:

- XSTest's completions CSV (``xstest_v2_completions_*.csv``: ``id, type, prompt, completion,
  final_label``): ``final_label`` 1_full_compliance is compliance, 2_full_refusal and
  3_partial_refusal are refusals (a partial refusal still declines part of the request); prompt
  types starting with ``contrast_`` are the unsafe prompts;
- JSONL records with ``prompt`` (text or a conversation) or ``messages`` (ending with a user
  turn), ``answer`` (or ``completion``), and ``refused`` (true/false); optional ``id``, ``type``,
  ``unsafe``. The examples file of ``cai eval harmlessness`` / ``over-refusal`` has this shape once
  a person adds ``refused`` to its records.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from cai.errors import CAIError
from cai.sources.readers import iter_jsonl
from cai.types import Conversation

XSTEST_LABELS = {"1_full_compliance": False, "2_full_refusal": True, "3_partial_refusal": True}


@dataclass(frozen=True)
class LabelledAnswer:
    id: str
    prompt: Conversation
    answer: str
    refused: bool  # the human label
    type: str = ""
    unsafe: bool | None = None
    human_label: str = ""


def read_human_labels(path: str | Path) -> list[LabelledAnswer]:
    p = Path(path)
    if not p.is_file():
        raise CAIError(f"{p}: no such file; pass --data with an XSTest completions CSV or a JSONL of "
                       "prompt, answer, refused")
    if p.suffix == ".csv":
        return _xstest_csv(p)
    if p.suffix == ".jsonl":
        return _jsonl(p)
    raise CAIError(f"{p}: unknown format; use an XSTest completions .csv or a .jsonl of prompt, answer, refused")


def _xstest_csv(p: Path) -> list[LabelledAnswer]:
    with open(p, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        need = {"prompt", "completion", "final_label"}
        missing = need - set(reader.fieldnames or ())
        if missing:
            raise CAIError(f"{p}: missing column(s) {', '.join(sorted(missing))}; an XSTest completions file has "
                           "id, type, prompt, completion, final_label")
        out = []
        for i, row in enumerate(reader, 2):  # line 1 is the header
            label = (row["final_label"] or "").strip()
            if label not in XSTEST_LABELS:
                raise CAIError(f"{p}:{i}: final_label {label!r} is not one of {', '.join(XSTEST_LABELS)}")
            kind = (row.get("type") or "").strip()
            out.append(LabelledAnswer(id=(row.get("id") or f"row{i}").strip(),
                                      prompt=[{"role": "user", "content": row["prompt"]}],
                                      answer=row["completion"] or "", refused=XSTEST_LABELS[label], type=kind,
                                      unsafe=kind.startswith("contrast_") if kind else None, human_label=label))
    if not out:
        raise CAIError(f"{p}: no rows")
    return out


def _jsonl(p: Path) -> list[LabelledAnswer]:
    out = []
    for n, rec in iter_jsonl(p, "each line is an object with prompt, answer, refused"):
        where = f"{p}:{n}"
        conv = rec.get("messages") if isinstance(rec.get("messages"), list) else rec.get("prompt")
        if isinstance(conv, list):  # a conversation, e.g. the examples file of a cai eval
            prompt = [{"role": m["role"], "content": m["content"]} for m in conv]
        elif isinstance(rec.get("prompt"), str):
            prompt = [{"role": "user", "content": rec["prompt"]}]
        else:
            raise CAIError(f"{where}: needs 'prompt' (text) or 'messages'")
        answer = rec.get("answer", rec.get("completion"))
        if not isinstance(answer, str):
            raise CAIError(f"{where}: needs 'answer' (the text graded)")
        if not isinstance(rec.get("refused"), bool):
            raise CAIError(f"{where}: needs 'refused': true or false (the human label)")
        out.append(LabelledAnswer(id=str(rec.get("id", f"line{n}")), prompt=prompt, answer=answer,
                                  refused=rec["refused"], type=str(rec.get("type", "")), unsafe=rec.get("unsafe")))
    if not out:
        raise CAIError(f"{p}: no records")
    return out
