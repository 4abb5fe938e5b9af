"""``cai eval pairwise -m A -m B [-m C ...]``: Elo scores for any number of models, from judged
pairwise comparisons on the same prompts. This is how the CAI paper compares snapshots.

Every model answers every question (batched ``generate``); on every question, every pair of models
is judged (method of ``cai label``: both orders, (A)/(B) scored) and the verdict (1, 0, or 0.5 for
an exact tie) is one comparison. A Bradley-Terry fit (:mod:`cai.evals.elo`) turns them into Elo
scores (mean 1000); the 95% intervals come from a bootstrap over questions (a question's
comparisons are resampled together) and a refit. Each model's raw win rate against the others,
and every head-to-head win rate, are reported too.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any, Sequence

from cai.config import option, to_dict
from cai.errors import CAIError
from cai.evals.overlap import held_out, train_prompts_option
from cai.evals.results import EvalResult, Metric
from cai.evals.tasks.answers import Question, answer, asked, backends, judge, load_questions, question_text
from cai.evals.tasks.helpfulness import _verdict
from cai.evals.tasks.itemrun import (TaskCommon, check_same_items, examples_path, mean_ci, open_store, result_path,
                                     run_items, seeded_subset, unless_finished)
from cai.label.judge import JudgeConfig
from cai.types import SamplingParams

TASK = "pairwise"


@dataclass
class PairwiseConfig(TaskCommon, JudgeConfig):
    models: tuple[str, ...] = option((), help="the models compared (on the command line: -m A -m B ...)")
    constitution: str = option("hhh", help="constitution whose preference question the judge answers",
                               flags=("-c", "--constitution"))
    principles: str = option("helpful", help="which preference questions: comma-separated ids, 'all', 'sample' "
                             "or N (as for cai label); e.g. -c hhh --principles harmless --data redteam for "
                             "harmlessness Elo")
    judge: str = option("smollm2-135m", help="the judge model (feedback model)")
    data: str = option("mt-bench", help="mt-bench, an MT-Bench-shaped JSONL, or any prompt source of cai critique")
    field: str | None = option(None, help="column holding the question in a JSONL/CSV/Parquet prompt source "
                               "(default: detected)")
    turns: int = option(1, help="1: first turns only; 2: both MT-Bench turns")
    max_tokens: int = option(256, help="most tokens per answer")
    temperature: float = option(0.0, help="sampling temperature of every model (0: greedy)")
    batch_size: int = option(16, help="questions per step")
    train_prompts: tuple[str, ...] = train_prompts_option()


def evaluate_pairwise(config: PairwiseConfig, *, models: Sequence[Any] | None = None, judge_model: Any = None,
                      constitution: Any = None, show_progress: bool | None = None) -> EvalResult:
    from cai.constitution import load_constitution
    from cai.evals.elo import elo_with_ci
    from cai.label.judge import PrinciplePlan, method_summary
    from cai.provenance import provenance

    config.check_common()
    specs = list(models) if models is not None else list(config.models)
    if len(specs) < 2:
        raise CAIError("cai eval pairwise needs at least two models: -m A -m B [-m C ...]")
    out = result_path(config.output, TASK, config)
    questions = seeded_subset(load_questions(config.data, turns=config.turns, field=config.field), config.limit,
                              config.seed)
    overlap = held_out([question_text(q) for q in questions], config.train_prompts)
    constitution = constitution if constitution is not None else load_constitution(config.constitution)
    PrinciplePlan(constitution, config.principles)
    check_same_items(out, {q.id: asked(q.turns) for q in questions}, source=config.data,
                     prompt_of=lambda r: asked(r["turns"]), overwrite=config.overwrite,
                     same_run={"task": TASK, "data": config.data, "field": config.field, "turns": config.turns})
    loaded = backends(unless_finished([*specs, judge_model if judge_model is not None else config.judge], out,
                                      questions, lambda q: q.id, lambda fp: [*fp["models"], fp["judge"]],
                                      overwrite=config.overwrite))
    players, judge_b = loaded[:-1], loaded[-1]
    names = [b.name for b in players]
    if len(set(names)) != len(names):
        raise CAIError(f"the same model is listed twice among {', '.join(names)}; give each model once")
    params = SamplingParams(temperature=config.temperature, max_tokens=config.max_tokens, seed=config.seed)
    method = method_summary(config, constitution)
    fingerprint = {"task": TASK, "models": names, "judge": judge_b.name, "data": config.data,
                   **({"field": config.field} if config.field else {}), "turns": config.turns,
                   "sampling": params.to_dict(), "constitution": constitution.hash, "method": method}
    store = open_store(out, fingerprint, overwrite=config.overwrite)
    pairs = list(itertools.combinations(range(len(players)), 2))

    def work(batch: list[Question]) -> list[dict[str, Any]]:
        answers = [answer(b, batch, params) for b in players]
        jobs, where = [], []
        for k, q in enumerate(batch):
            for a, b in pairs:
                for t in range(len(q.turns)):
                    jobs.append((q, t, answers[a][k], answers[b][k], f"{q.id}:{a}-{b}:{t}"))
                    where.append((k, a, b, t))
        verdicts = judge(judge_b, jobs, constitution, config)
        recs = [{"id": q.id, "category": q.category, "turns": list(q.turns),
                 "answers": {names[m]: answers[m][k] for m in range(len(players))}, "comparisons": []}
                for k, q in enumerate(batch)]
        for (k, a, b, t), v in zip(where, verdicts):
            recs[k]["comparisons"].append({"a": names[a], "b": names[b], "turn": t + 1, "p_a": v["p"],
                                           "p_a_as_A": v["p_x_as_a"], "p_a_as_B": v["p_x_as_b"], "agree": v["agree"],
                                           "score_a": _verdict(v["p"])})
        return recs

    started = time.perf_counter()
    records = run_items(store, questions, lambda q: q.id, work, batch_size=config.batch_size,
                        fingerprint=fingerprint, desc="eval pairwise", show_progress=show_progress)
    index = {n: k for k, n in enumerate(names)}
    comps = [(index[c["a"]], index[c["b"]], c["score_a"]) for r in records for c in r["comparisons"]]
    groups = [r["id"] for r in records for _ in r["comparisons"]]
    elo, cis = elo_with_ci(len(names), comps, groups, n_resamples=config.bootstrap, seed=config.seed)
    metrics: dict[str, Metric] = {}
    by_model: dict[str, dict[str, Metric]] = {}
    for m, n in enumerate(names):
        mine = [s if i == m else 1.0 - s for i, j, s in comps if m in (i, j)]
        elo_m = Metric(elo[m], cis[m], len(mine), True, "Bradley-Terry Elo (mean of the models 1000), 95% interval "
                       "from a bootstrap over questions")
        win = mean_ci(mine, seed=config.seed, n_resamples=config.bootstrap,
                      help="share of this model's comparisons it won (ties half)")
        metrics[f"elo[{n}]"], metrics[f"win_rate[{n}]"] = elo_m, win
        by_model[n] = {"elo": elo_m, "win_rate": win}
    head = {f"{names[a]} vs {names[b]}": {"win_rate": mean_ci(
        [s for i, j, s in comps if (i, j) == (a, b)], seed=config.seed, n_resamples=config.bootstrap,
        help=f"share of comparisons {names[a]} won against {names[b]}")} for a, b in pairs}
    agree = [c["agree"] for r in records for c in r["comparisons"] if c["agree"] is not None]
    if agree:
        metrics["order_agreement"] = mean_ci([1.0 if x else 0.0 for x in agree], seed=config.seed,
                                             n_resamples=config.bootstrap, higher_is_better=None,
                                             help="share of comparisons whose two orders pick the same answer")
    return EvalResult(
        task=TASK, model=", ".join(names), metrics=metrics, breakdown={"by_model": by_model, "head_to_head": head},
        grader={"name": "judge", "spec": judge_b.name, "method": method, "agreement": None},
        examples=examples_path(out).name, overlap=overlap,
        provenance=provenance(constitution=constitution, models={**{f"model{k}": n for k, n in enumerate(names)},
                                                                 "judge": judge_b.name},
                              sampling=params.to_dict(), seed=config.seed, stage="eval-pairwise",
                              config=to_dict(config), seconds=round(time.perf_counter() - started, 1)),
    )
