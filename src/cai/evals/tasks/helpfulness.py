"""``cai eval helpfulness``: MT-Bench win rate of a model against a baseline model, judged pairwise.

Both models answer every question (first turn, or both turns with ``--turns 2``); a judge model
compares the two answers per turn with the labelling method of ``cai label`` (preference question
from the constitution, default ``hhh``'s ``helpful`` principle; (A)/(B) scored, never parsed), in
both orders so a preference for a letter cancels. Per question the score is the mean over its
turns of 1 (model's answer preferred), 0 (baseline's) or 0.5 (exact tie); ``win_rate`` is its mean
with a bootstrap interval over questions. ``mean_p_win`` is the judge's mean probability instead of
the hard verdict, and ``order_agreement`` the share of comparisons whose two orders pick the same
answer (low: the judge mostly follows the letter, and the win rate is mostly noise near 0.5).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

from cai.config import option, to_dict
from cai.errors import CAIError
from cai.evals.overlap import held_out, train_prompts_option
from cai.evals.results import EvalResult, Metric
from cai.evals.tasks.answers import Question, answer, asked, backends, judge, load_questions, question_text
from cai.evals.tasks.itemrun import (TaskCommon, check_same_items, examples_path, mean_ci, open_store, result_path,
                                     run_items, seeded_subset, unless_finished)
from cai.label.judge import JudgeConfig
from cai.label.preference import is_tie
from cai.types import SamplingParams

TASK = "helpfulness"


@dataclass
class HelpfulnessConfig(TaskCommon, JudgeConfig):
    constitution: str = option("hhh", help="constitution whose preference question the judge answers",
                               flags=("-c", "--constitution"))
    principles: str = option("helpful", help="which preference questions: comma-separated ids, 'all', 'sample' "
                             "or N (as for cai label)")
    baseline: str = option("smollm2-135m", help="the model whose answers are compared against")
    judge: str = option("smollm2-135m", help="the judge model (feedback model)")
    data: str = option("mt-bench", help="mt-bench (the shipped 80 questions), an MT-Bench-shaped JSONL, or any "
                       "prompt source of cai critique (one turn)")
    field: str | None = option(None, help="column holding the question in a JSONL/CSV/Parquet prompt source "
                               "(default: detected)")
    turns: int = option(1, help="1: first turns only; 2: both MT-Bench turns (the second after the model's own "
                        "first answer)")
    max_tokens: int = option(256, help="most tokens per answer")
    temperature: float = option(0.0, help="sampling temperature of both models (0: greedy)")
    batch_size: int = option(16, help="questions per step (answers of both models, then one judging call)")
    train_prompts: tuple[str, ...] = train_prompts_option()


def _verdict(p: float) -> float:
    return 0.5 if is_tie(p) else 1.0 if p > 0.5 else 0.0


def prompt_texts(config: HelpfulnessConfig) -> list[str]:
    """The questions evaluated (their turns, one per line); no model is loaded."""
    return [question_text(q) for q in seeded_subset(load_questions(config.data, turns=config.turns), config.limit,
                                                    config.seed)]


def evaluate_helpfulness(config: HelpfulnessConfig, *, model: Any = None, baseline: Any = None, judge_model: Any = None,
                         constitution: Any = None, show_progress: bool | None = None) -> EvalResult:
    from cai.constitution import load_constitution
    from cai.label.judge import PrinciplePlan, method_summary
    from cai.label.preference import check_clamp
    from cai.provenance import provenance

    config.check_common()
    out = result_path(config.output, TASK, config)
    questions = seeded_subset(load_questions(config.data, turns=config.turns, field=config.field), config.limit,
                              config.seed)
    overlap = held_out([question_text(q) for q in questions], config.train_prompts)
    constitution = constitution if constitution is not None else load_constitution(config.constitution)
    PrinciplePlan(constitution, config.principles)  # a bad --principles fails before any model loads
    if config.cot:
        check_clamp(config.cot_clamp)
    specs = [model if model is not None else config.model, baseline if baseline is not None else config.baseline,
             judge_model if judge_model is not None else config.judge]
    check_same_items(out, {q.id: asked(q.turns) for q in questions}, source=config.data,
                     prompt_of=lambda r: asked(r["turns"]), overwrite=config.overwrite,
                     same_run={"task": TASK, "data": config.data, "field": config.field, "turns": config.turns})
    policy, base, judge_b = backends(unless_finished(specs, out, questions, lambda q: q.id,
                                                     lambda fp: [fp["model"], fp["baseline"], fp["judge"]],
                                                     overwrite=config.overwrite))
    names = {"model": policy.name, "baseline": base.name, "judge": judge_b.name}
    params = SamplingParams(temperature=config.temperature, max_tokens=config.max_tokens, seed=config.seed)
    method = method_summary(config, constitution)
    fingerprint = {"task": TASK, **names, "data": config.data, **({"field": config.field} if config.field else {}),
                   "turns": config.turns, "sampling": params.to_dict(), "constitution": constitution.hash,
                   "method": method}
    store = open_store(out, fingerprint, overwrite=config.overwrite)

    def work(batch: list[Question]) -> list[dict[str, Any]]:
        mine = answer(policy, batch, params)
        theirs = answer(base, batch, params)
        jobs = [(q, t, mine[k], theirs[k], f"{q.id}:{t}") for k, q in enumerate(batch) for t in range(len(q.turns))]
        verdicts = judge(judge_b, jobs, constitution, config)
        by_q: dict[str, list[dict[str, Any]]] = {}
        for (q, t, *_), v in zip(jobs, verdicts):
            by_q.setdefault(q.id, []).append({"turn": t + 1, "p_model": v["p"], "p_model_as_a": v["p_x_as_a"],
                                              "p_model_as_b": v["p_x_as_b"], "agree": v["agree"],
                                              "principles": v["principles"], "verdict": _verdict(v["p"])})
        return [{"id": q.id, "category": q.category, "turns": list(q.turns), "answers": mine[k],
                 "baseline_answers": theirs[k], "judgements": by_q[q.id],
                 "score": sum(j["verdict"] for j in by_q[q.id]) / len(by_q[q.id]),
                 "p_win": sum(j["p_model"] for j in by_q[q.id]) / len(by_q[q.id])} for k, q in enumerate(batch)]

    started = time.perf_counter()
    records = run_items(store, questions, lambda q: q.id, work, batch_size=config.batch_size,
                        fingerprint=fingerprint, desc="eval helpfulness", show_progress=show_progress)
    metrics = summarise(records, seed=config.seed, n_resamples=config.bootstrap)
    categories = sorted({r["category"] for r in records})
    breakdown = {"by_category": {c: summarise([r for r in records if r["category"] == c], seed=config.seed,
                                              n_resamples=config.bootstrap) for c in categories}}
    if config.turns > 1:
        breakdown["by_turn"] = {f"turn {t}": {"win_rate": mean_ci(
            [j["verdict"] for r in records for j in r["judgements"] if j["turn"] == t], seed=config.seed,
            n_resamples=config.bootstrap, help="win rate at this turn")} for t in range(1, config.turns + 1)}
    return EvalResult(
        task=TASK, model=policy.name, metrics=metrics, breakdown=breakdown,
        grader={"name": "judge", "spec": judge_b.name, "baseline": base.name, "method": method, "agreement": None},
        examples=examples_path(out).name, overlap=overlap,
        provenance=provenance(constitution=constitution, models=names, sampling=params.to_dict(), seed=config.seed,
                              stage="eval-helpfulness", config=to_dict(config),
                              seconds=round(time.perf_counter() - started, 1)),
    )


def summarise(records: Sequence[dict[str, Any]], *, seed: int = 0, n_resamples: int = 2000) -> dict[str, Metric]:
    if not records:
        raise CAIError("no questions were evaluated")
    judgements = [j for r in records for j in r["judgements"]]
    swapped = [j for j in judgements if j["agree"] is not None]
    out = {
        "win_rate": mean_ci([r["score"] for r in records], seed=seed, n_resamples=n_resamples,
                            help="share of questions where the judge prefers the model's answer to the baseline's "
                            "(ties half)"),
        "mean_p_win": mean_ci([r["p_win"] for r in records], seed=seed, n_resamples=n_resamples,
                              help="the judge's mean probability that the model's answer is better"),
    }
    if swapped:
        out["order_agreement"] = mean_ci([1.0 if j["agree"] else 0.0 for j in swapped], seed=seed,
                                         n_resamples=n_resamples, higher_is_better=None,
                                         help="share of comparisons whose two orders pick the same answer")
    return out
