"""Shared by the judged tasks (``helpfulness``, ``pairwise``): the questions, each model's answers
to them (one or two turns, batched through ``generate``), and the judge's verdict on two answers.

A question is MT-Bench's (``question_id``, ``category``, ``turns``) or any prompt source of
``cai.sources`` (one turn). Turn 2 is asked after the model's own turn-1 answer, as MT-Bench does.

The judge sees, per turn, the user's first message as the conversation and each model's answer as
an option; for turn 2 an option is the model's whole exchange after that message (its first answer,
the second question, its second answer), because the two models' conversations differ from the
first answer on. Labels come from :func:`cai.label.judge.label_pairs`, the function ``cai label``
uses: the same prompt, the same (A)/(B) scoring, both orders unless ``swap`` is off.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from cai.errors import CAIError
from cai.sources.readers import iter_jsonl
from cai.types import SamplingParams


@dataclass(frozen=True)
class Question:
    id: str
    category: str
    turns: tuple[str, ...]


def load_questions(source: str, *, turns: int, field: str | None = None) -> list[Question]:
    """MT-Bench (``mt-bench`` or an MT-Bench-shaped JSONL: ``question_id``, ``category``, ``turns``)
    or any prompt source (one turn each)."""
    from cai.evals.datasets import dataset_path

    if turns not in (1, 2):
        raise CAIError(f"--turns must be 1 or 2, got {turns}")
    path = dataset_path("mt-bench") if source == "mt-bench" else Path(source)
    if path.is_file() and path.suffix == ".jsonl" and _is_mt_bench(path):
        out = []
        for n, rec in iter_jsonl(path, "an MT-Bench record needs question_id and a turns list"):
            try:
                qs = [str(t) for t in rec["turns"]]
            except (KeyError, TypeError):
                raise CAIError(f"{path}:{n}: an MT-Bench record needs question_id and a turns list") from None
            if len(qs) < turns or not all(q.strip() for q in qs[:turns]):
                raise CAIError(f"{path}:{n}: --turns {turns} needs {turns} non-empty turns, found {len(qs)}")
            out.append(Question(f"mt-bench/{rec.get('question_id', n)}", str(rec.get("category", "all")),
                                tuple(qs[:turns])))
        return out
    if turns != 1:
        raise CAIError(f"--turns 2 needs MT-Bench-shaped questions (a JSONL with a turns list); {source} has one turn")
    from cai.sources import load_prompts

    out = []
    for p in load_prompts(source, field=field):
        if len(p.messages) != 1:
            raise CAIError(f"{source}: prompt {p.id} is a multi-turn conversation; give single questions")
        out.append(Question(p.id, str(p.meta.get("category", "all")), (p.messages[0]["content"],)))
    return out


def asked(turns: Sequence[str]) -> list[dict[str, str]]:
    """A question's turns as the user turns of one conversation: what a stored record answered, for
    :func:`cai.evals.tasks.itemrun.check_same_items` (the answers between them are the models')."""
    return [{"role": "user", "content": t} for t in turns]


def question_text(q: Question) -> str:
    """What a question asks, its turns one per line (for measuring overlap with training prompts)."""
    return "\n".join(q.turns)


def _is_mt_bench(path: Path) -> bool:
    with open(path, encoding="utf-8") as f:
        first = next((line for line in f if line.strip()), "")
    try:
        rec = json.loads(first)
    except json.JSONDecodeError:
        return False
    return isinstance(rec, dict) and isinstance(rec.get("turns"), list)


def answer(backend: Any, questions: Sequence[Question], params: SamplingParams) -> list[list[str]]:
    """Each question's answers, turn by turn: one batched ``generate`` call per turn."""
    answers: list[list[str]] = [[] for _ in questions]
    for t in range(max(len(q.turns) for q in questions) if questions else 0):
        idx = [k for k, q in enumerate(questions) if len(q.turns) > t]
        convs = []
        for k in idx:
            conv = []
            for s in range(t):
                conv += [{"role": "user", "content": questions[k].turns[s]},
                         {"role": "assistant", "content": answers[k][s]}]
            convs.append(conv + [{"role": "user", "content": questions[k].turns[t]}])
        for k, c in zip(idx, backend.generate(convs, params)):
            answers[k].append(c.text.strip())
    return answers


def judged_option(q: Question, answers: Sequence[str], turn: int) -> str:
    """What the judge sees as one model's reply at ``turn`` (0-based)."""
    if turn == 0:
        return answers[0]
    from cai.label.prompts import label_template

    roles = label_template()["roles"]
    parts = [answers[0]]
    for s in range(1, turn + 1):
        parts += [f"{roles['user']}: {q.turns[s]}", f"{roles['assistant']}: {answers[s]}"]
    return "\n\n".join(parts)


def judge(judge_backend: Any, items: Sequence[tuple[Question, int, Sequence[str], Sequence[str], str]],
          constitution: Any, method: Any) -> list[dict[str, Any]]:
    """P(x better than y) for (question, turn, x answers, y answers, key) items, debiased over both
    orders; one dict per item with p, p_x_as_a, p_x_as_b, agree."""
    from cai.label.judge import label_pairs

    pairs = [([{"role": "user", "content": q.turns[0]}], judged_option(q, xa, t), judged_option(q, ya, t))
             for q, t, xa, ya, _ in items]
    labels = label_pairs(judge_backend, pairs, constitution, method, keys=[k for *_, k in items])
    return [{"p": lab.p, "p_x_as_a": lab.p_x_as_a, "p_x_as_b": lab.p_x_as_b, "agree": lab.agree,
             "principles": [s.id for s in lab.principles]} for lab in labels]


def backends(specs: Sequence[Any]) -> list[Any]:
    """Load each distinct spec once (the same model as policy and judge shares one backend)."""
    from cai.backends import load_backend

    loaded: dict[str, Any] = {}
    out = []
    for s in specs:
        key = s if isinstance(s, str) else f"object:{id(s)}"
        if key not in loaded:
            loaded[key] = load_backend(s)
        out.append(loaded[key])
    return out
