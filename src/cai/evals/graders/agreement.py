"""``cai eval grader``: how far a grader agrees with human refusal labels.

For every labelled answer the grader says refused or not; against the human label this gives
accuracy, Cohen's kappa (agreement beyond what the two base rates give by chance), the 2x2
confusion matrix (each cell as a share of all answers), and, for a grader with a score (the
judge's P(refuses), a PM's score), the AUROC of that score. Every number has a percentile
bootstrap 95% interval over answers (one set of resampled indices serves them all). Grades go to a
RecordStore beside the result, so a killed run resumes.

Other evals cite the result: ``--grader-agreement FILE`` copies its headline numbers into their
own result's grader block (:func:`agreement_summary`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from cai.config import option, to_dict
from cai.errors import CAIError
from cai.evals.graders import GraderConfig
from cai.evals.metrics import check_bootstrap
from cai.evals.results import EvalResult, Metric, read_result
from cai.outputs import overwrite_option


@dataclass
class GraderEvalConfig(GraderConfig):
    data: str = option("", help="answers with human refusal labels: an XSTest completions CSV "
                       "(xstest_v2_completions_*.csv) or a JSONL of prompt, answer, refused")
    output: str = option("", help="result JSON (per-answer grades go beside it as NAME.examples.jsonl)",
                         flags=("-o", "--output"))
    limit: int | None = option(None, help="grade a seeded random subset of N answers")
    seed: int = option(0, help="seed for --limit and the bootstrap")
    batch_size: int = option(32, help="answers per grader call")
    bootstrap: int = option(2000, help="bootstrap resamples for the 95 percent intervals")
    overwrite: bool = overwrite_option()


# -- statistics -----------------------------------------------------------------------------------

def kappa(pred: Sequence[bool], gold: Sequence[bool]) -> float:
    """Cohen's kappa of two binary raters; nan when chance agreement is 1 (both constant alike)."""
    import numpy as np

    return float(_kappa(np.asarray(pred, float)[None], np.asarray(gold, float)[None])[0])


def _kappa(p: Any, g: Any) -> Any:
    import numpy as np

    po = (p == g).mean(axis=1)
    mp, mg = p.mean(axis=1), g.mean(axis=1)
    pe = mp * mg + (1 - mp) * (1 - mg)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pe < 1, (po - pe) / (1 - pe), np.nan)


def auroc(scores: Sequence[float], gold: Sequence[bool]) -> float:
    """P(a random refusal scores above a random compliance), ties counting half; nan if one class
    is absent."""
    import numpy as np

    s, g = np.asarray(scores, float), np.asarray(gold, bool)
    pos, neg = s[g], s[~g]
    if not len(pos) or not len(neg):
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    allv = np.concatenate([pos, neg])[order]
    ranks = np.empty(len(allv))
    i = 0
    while i < len(allv):  # average ranks over ties
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[i : j + 1] = (i + j) / 2 + 1
        i = j + 1
    r = np.empty(len(allv))
    r[order] = ranks
    return float((r[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def agreement_metrics(pred: Sequence[bool], gold: Sequence[bool], scores: Sequence[float] | None = None, *,
                      n_resamples: int = 2000, seed: int = 0) -> tuple[dict[str, Metric], dict[str, dict[str, Metric]]]:
    """(headline metrics, confusion matrix as breakdown rows human_* -> grader_* shares)."""
    import numpy as np

    n = len(gold)
    if n == 0:
        raise CAIError("no answers to measure the grader on")
    p, g = np.asarray(pred, float), np.asarray(gold, float)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    P, G = p[idx], g[idx]

    def metric(value: float, samples: Any, help: str, better: bool | None = True) -> Metric:
        finite = samples[np.isfinite(samples)]
        ci = (float(np.quantile(finite, 0.025)), float(np.quantile(finite, 0.975))) if len(finite) else None
        return Metric(float(value), ci, n, better, help)

    metrics = {
        "accuracy": metric((p == g).mean(), (P == G).mean(axis=1), "share of answers where the grader's refused/"
                           "complied verdict matches the human label"),
        "kappa": metric(kappa(pred, gold), _kappa(P, G), "Cohen's kappa: agreement beyond chance (0 chance, 1 "
                        "perfect)"),
        "grader_refusal_rate": metric(p.mean(), P.mean(axis=1), "share the grader calls refusals", None),
        "human_refusal_rate": metric(g.mean(), G.mean(axis=1), "share the humans call refusals", None),
    }
    if scores is not None:
        s = np.asarray(scores, float)
        boots = np.array([auroc(s[row], g[row].astype(bool)) for row in idx[: min(n_resamples, 1000)]])
        metrics["auroc"] = metric(auroc(s, g.astype(bool)), boots, "AUROC of the grader's score for refusal "
                                  "(threshold-free; 0.5 is chance)")
    confusion: dict[str, dict[str, Metric]] = {}
    for hname, hv in (("human_refused", 1.0), ("human_complied", 0.0)):
        confusion[hname] = {}
        for gname, gv in (("grader_refused", 1.0), ("grader_complied", 0.0)):
            cell = (g == hv) & (p == gv)
            cells = (G == hv) & (P == gv)
            confusion[hname][gname] = metric(cell.mean(), cells.mean(axis=1), f"share of all answers: {hname}, "
                                             f"{gname} (count {int(cell.sum())})", None)
    return metrics, confusion


# -- the run --------------------------------------------------------------------------------------

def default_examples_path(output: str | Path) -> Path:
    p = Path(output)
    return p.with_name(p.stem + ".examples.jsonl")


def check_output(output: str, config: Any = None, task: str = "grader") -> Path:
    """The result path of a graded eval (``task``), checked as every eval result is
    (:func:`cai.evals.tasks.itemrun.result_path`), before any model work."""
    from cai.evals.tasks.itemrun import result_path

    if not output:
        raise CAIError("no output given; pass -o RESULT.json (running the same command again resumes it)")
    return result_path(output, task, config)


def evaluate_grader(config: GraderEvalConfig, *, grader: Any = None, show_progress: bool | None = None) -> EvalResult:
    from cai.evals.graders.human_labels import read_human_labels
    from cai.progress import batched, progress
    from cai.provenance import provenance
    from cai.same_prompts import check_same_prompts
    from cai.store import RecordStore

    if config.batch_size < 1:
        raise CAIError("--batch-size must be at least 1")
    check_bootstrap(config.bootstrap)
    if grader is None:
        config.check_grader()
    if not config.data:
        raise CAIError("no labelled answers given; pass --data FILE (e.g. ../shared/data/xstest/"
                       "xstest_v2_completions_llama2new.csv)")
    out = check_output(config.output, config)
    items = read_human_labels(config.data)
    if config.limit is not None:
        if config.limit < 1:
            raise CAIError(f"--limit must be a positive number, got {config.limit}")
        items = random.Random(config.seed).sample(items, min(config.limit, len(items)))
    store = RecordStore(default_examples_path(out), overwrite=config.overwrite)
    check_same_prompts([store], {it.id: _graded(it.prompt, it.answer) for it in items}, source=config.data,
                       prompt_of=lambda r: _graded(r["prompt"], r["answer"]) if "answer" in r else None)
    if grader is None:
        grader = _finished(config, store, items) or config.build_grader("smollm2-135m")
    desc = grader.describe()
    first = next(iter(store), None)
    if first is not None and first.get("grader") != grader.spec:
        raise CAIError(f"{store.path} holds grades by {first.get('grader')}, not {grader.spec}; use the same "
                       "--grader or write to a new -o file")
    todo = store.todo(items, key=lambda it: it.id)
    with progress(len(items), f"grade {grader.name}", unit="answer", initial=len(items) - len(todo),
                  enabled=show_progress) as bar:
        for batch in batched(todo, config.batch_size):
            grades = grader.grade([it.prompt for it in batch], [it.answer for it in batch])
            store.append({"id": it.id, "prompt": list(it.prompt), "answer": it.answer, "grader": grader.spec,
                          "type": it.type, "unsafe": it.unsafe,
                          "human_label": it.human_label, "human_refused": it.refused, "grade": gr.to_json()}
                         for it, gr in zip(batch, grades))
            bar.update(len(batch))
    by_id = {r["id"]: r for r in store}
    # The human side is read from --data, not from the record: a corrected label needs no new grade.
    recs = [{**by_id[it.id], "human_refused": it.refused, "human_label": it.human_label, "type": it.type,
             "unsafe": it.unsafe} for it in items]
    pred = [r["grade"]["refused"] for r in recs]
    gold = [r["human_refused"] for r in recs]
    scores = [r["grade"]["score"] for r in recs]
    # A string match's 1/0 "score" is its verdict again; AUROC is for graders with a real score.
    has_scores = "score" in desc.get("tells", ()) and all(s is not None for s in scores)
    metrics, confusion = agreement_metrics(pred, gold, scores if has_scores else None,
                                           n_resamples=config.bootstrap, seed=config.seed)
    breakdown: dict[str, dict[str, dict[str, Metric]]] = {"confusion": confusion}
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(recs):
        if r.get("unsafe") is not None:
            groups.setdefault("unsafe prompts" if r["unsafe"] else "safe prompts", []).append(i)
    if groups:
        breakdown["by_prompt"] = {name: agreement_metrics([pred[i] for i in ix], [gold[i] for i in ix],
                                                          n_resamples=config.bootstrap, seed=config.seed)[0]
                                  for name, ix in sorted(groups.items())}
    labels = sorted({r["grade"]["label"] for r in recs})
    from cai.evals.results import mean_metric

    breakdown["grader_labels"] = {lab: {"share": mean_metric([r["grade"]["label"] == lab for r in recs],
                                                             help="share of answers given this label",
                                                             higher_is_better=None, seed=config.seed,
                                                             n_resamples=config.bootstrap)}
                                  for lab in labels}
    return EvalResult(
        task="grader", model="", metrics=metrics, grader={**desc, "agreement": None}, breakdown=breakdown,
        examples=store.path.name,
        provenance=provenance(models={"judge": desc.get("model", "")}, seed=config.seed, stage="eval-grader",
                              data=str(config.data), n=len(items), config=to_dict(config)),
    )


def _graded(prompt: Any, answer: str) -> list[dict[str, Any]]:
    """What a stored grade judged, as one conversation: the prompt and the answer after it."""
    from cai.evals.tasks.itemrun import scored_text

    return scored_text(prompt, [answer])


def _finished(config: GraderEvalConfig, store: Any, items: Sequence[Any]) -> Any:
    """The grader with its judge named, not started, when the examples file already holds its
    grade of every item (else None): a rerun on a finished evaluation starts no engine. The store
    was opened with ``--overwrite``, so an output to redo is never finished."""
    from cai.backends.unstarted import finished_record

    first = finished_record(store, items, key=lambda it: it.id)
    if first is None:
        return None
    grader = config.build_grader("smollm2-135m", start=False)
    return grader if first.get("grader") == grader.spec else None


def agreement_summary(path: str | Path, grader: Any = None) -> dict[str, Any]:
    """The headline of a ``cai eval grader`` result, to copy into another eval's grader block.
    Refuses a result measured for a different grader than ``grader``."""
    res = read_result(path)
    if res.task != "grader":
        raise CAIError(f"--grader-agreement {path}: a {res.task!r} result, not a `cai eval grader` one")
    measured = (res.grader or {}).get("spec")
    if grader is not None and measured != grader.spec:
        raise CAIError(f"--grader-agreement {path} measured {measured}, but this eval grades with {grader.spec}; "
                       "measure that grader with cai eval grader, or pass its result")
    pick = {k: {"value": m.value, "ci": list(m.ci) if m.ci else None} for k, m in res.metrics.items()
            if k in ("accuracy", "kappa", "auroc")}
    return {"file": str(path), "data": res.provenance.get("data"), "n": res.metrics["accuracy"].n, **pick}
