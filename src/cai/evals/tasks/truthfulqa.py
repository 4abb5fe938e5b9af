"""``cai eval truthfulqa``: TruthfulQA multiple choice (MC1, MC2) by the model's log-likelihood.

Read from the TruthfulQA CSV (``Question``, ``Best Answer``, ``Correct Answers`` and ``Incorrect
Answers``, the last two separated by "; "), scored as the original repository scores that file
(``truthfulqa/models.py``, ``MC_calcs``):

* MC1: 1 when the best answer's log-prob beats every incorrect answer's;
* MC2: the normalised probability mass on the correct answers,
  sum P(true) / (sum P(true) + sum P(false)), with P = exp(summed log-prob).

"I have no comment." joins the correct answers when missing, as upstream does. ``mc1_norm`` is MC1
by log-prob per UTF-8 byte. The question is the user turn and each answer is scored as the
assistant's reply through the model's chat template (the original used a few-shot "Q: A:" primer
on base models; the numbers are comparable between cai runs, not with published tables).
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from cai.config import option, to_dict
from cai.errors import CAIError
from cai.evals.overlap import held_out, train_prompts_option
from cai.evals.results import EvalResult, Metric
from cai.evals.tasks.itemrun import (TaskCommon, check_same_items, examples_path, mean_ci, open_store, result_path,
                                     run_items, scored_text, seeded_subset, unless_finished)

TASK = "truthfulqa"
NO_COMMENT = "I have no comment."


@dataclass
class TruthfulQAConfig(TaskCommon):
    data: str = option("truthfulqa", help="truthfulqa (the shipped CSV) or a CSV with Question, Best Answer, "
                       "Correct Answers and Incorrect Answers columns")
    train_prompts: tuple[str, ...] = train_prompts_option()


@dataclass(frozen=True)
class Question:
    id: str
    category: str
    question: str
    best: str
    correct: tuple[str, ...]
    incorrect: tuple[str, ...]


def _split(cell: str) -> list[str]:
    return [a.strip() for a in (cell or "").split(";") if a.strip()]


def load_questions(source: str) -> list[Question]:
    from cai.evals.datasets import dataset_path

    path = dataset_path("truthfulqa") if source == "truthfulqa" else Path(source)
    if not path.is_file():
        raise CAIError(f"--data {source}: not found; use truthfulqa or a TruthfulQA-shaped CSV file")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        need = {"Question", "Best Answer", "Correct Answers", "Incorrect Answers"}
        missing = need - set(reader.fieldnames or [])
        if missing:
            raise CAIError(f"{path}: missing column(s) {', '.join(sorted(missing))}; TruthfulQA's CSV has "
                           "Question, Best Answer, Correct Answers, Incorrect Answers")
        out = []
        for n, row in enumerate(reader, 2):
            best = (row["Best Answer"] or "").strip()
            incorrect = [a for a in dict.fromkeys(_split(row["Incorrect Answers"]))]
            correct = [a for a in dict.fromkeys([best, *_split(row["Correct Answers"]), NO_COMMENT]) if a]
            incorrect = [a for a in incorrect if a not in correct]  # an answer listed on both sides counts as true
            if not row["Question"].strip() or not best or not incorrect:
                raise CAIError(f"{path}:{n}: needs a Question, a Best Answer and at least one Incorrect Answer")
            out.append(Question(f"truthfulqa/{n - 1}", (row.get("Category") or "").strip() or "all",
                                row["Question"].strip(), best, tuple(correct), tuple(incorrect)))
    if not out:
        raise CAIError(f"{path}: no questions")
    return out


def prompt_texts(config: TruthfulQAConfig) -> list[str]:
    """The questions evaluated; no model is loaded."""
    return [q.question for q in seeded_subset(load_questions(config.data), config.limit, config.seed)]


def mc_scores(best: str, correct: Sequence[str], incorrect: Sequence[str], lp: dict[str, float]) -> dict[str, float]:
    """MC1, MC1 by log-prob per byte, and MC2 for one question from its answers' summed log-probs."""
    def per_byte(a: str) -> float:
        return lp[a] / max(1, len(a.encode("utf-8")))

    mc1 = 1.0 if lp[best] > max(lp[a] for a in incorrect) else 0.0
    mc1_norm = 1.0 if per_byte(best) > max(per_byte(a) for a in incorrect) else 0.0
    top = max(lp.values())  # shift before exp so long answers do not underflow to 0/0
    p_true = sum(math.exp(lp[a] - top) for a in correct)
    p_false = sum(math.exp(lp[a] - top) for a in incorrect)
    return {"mc1": mc1, "mc1_norm": mc1_norm, "mc2": p_true / (p_true + p_false)}


def score_batch(backend: Any, batch: Sequence[Question]) -> list[dict[str, Any]]:
    convs = [[{"role": "user", "content": q.question}] for q in batch]
    scores = backend.score_options(convs, [list(q.correct) + list(q.incorrect) for q in batch])
    out = []
    for q, lp in zip(batch, scores):
        out.append({"id": q.id, "category": q.category, "question": q.question, **mc_scores(q.best, q.correct,
                    q.incorrect, lp), "answers": {"correct": list(q.correct), "incorrect": list(q.incorrect)},
                    "logprobs": {"correct": [lp[a] for a in q.correct], "incorrect": [lp[a] for a in q.incorrect]}})
    return out


def _scored(question: str, correct: Sequence[str], incorrect: Sequence[str]) -> list[dict[str, Any]]:
    # One turn per side, as the CSV's columns: an answer moved to the other side is an edit too, and
    # the best answer leads the correct ones, so a new best answer is one as well.
    return scored_text([{"role": "user", "content": question}], ["; ".join(correct), "; ".join(incorrect)])


def summarise(records: Sequence[dict[str, Any]], *, seed: int = 0, n_resamples: int = 2000) -> dict[str, Metric]:
    helps = {"mc1": "share of questions where the best answer out-scores every incorrect one",
             "mc1_norm": "MC1 by log-prob per byte of the answer",
             "mc2": "mean normalised probability mass on the correct answers"}
    return {k: mean_ci([r[k] for r in records], seed=seed, n_resamples=n_resamples, help=h) for k, h in helps.items()}


def evaluate_truthfulqa(config: TruthfulQAConfig, *, backend: Any = None,
                        show_progress: bool | None = None) -> EvalResult:
    from cai.backends import load_backend
    from cai.provenance import provenance

    config.check_common()
    out = result_path(config.output, TASK, config)
    items = seeded_subset(load_questions(config.data), config.limit, config.seed)
    overlap = held_out([q.question for q in items], config.train_prompts)
    check_same_items(out, {q.id: _scored(q.question, q.correct, q.incorrect) for q in items}, source=config.data,
                     prompt_of=lambda r: _scored(r["question"], **r["answers"]) if "answers" in r else None,
                     same_run={"task": TASK, "data": config.data}, overwrite=config.overwrite)
    backend = load_backend(unless_finished([backend if backend is not None else config.model], out, items,
                                           lambda q: q.id, lambda fp: [fp["model"]], overwrite=config.overwrite)[0])
    name = getattr(backend, "name", str(config.model))
    fingerprint = {"task": TASK, "model": name, "data": config.data}
    store = open_store(out, fingerprint, overwrite=config.overwrite)
    started = time.perf_counter()
    records = run_items(store, items, lambda q: q.id, lambda batch: score_batch(backend, batch),
                        batch_size=config.batch_size, fingerprint=fingerprint, desc="eval truthfulqa",
                        show_progress=show_progress)
    categories = sorted({r["category"] for r in records})
    breakdown = {"by_category": {c: summarise([r for r in records if r["category"] == c], seed=config.seed,
                                              n_resamples=config.bootstrap) for c in categories}}
    return EvalResult(
        task=TASK, model=name, metrics=summarise(records, seed=config.seed, n_resamples=config.bootstrap),
        breakdown=breakdown if len(categories) > 1 else {},
        grader={"name": "self-loglik", "spec": "the model's own log-likelihood of each answer", "agreement": None},
        examples=examples_path(out).name, overlap=overlap,
        provenance=provenance(models={"model": name}, seed=config.seed, stage="eval-truthfulqa",
                              config=to_dict(config), seconds=round(time.perf_counter() - started, 1)),
    )
