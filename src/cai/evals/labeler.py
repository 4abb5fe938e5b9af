"""``cai eval labeler``: how often the AI labeller agrees with human preference labels.

The comparisons are labelled by :func:`cai.label.judge.label_pairs`, the very function that
``cai label`` uses, so the numbers describe the labels a run would produce with the same method
flags (principles, few-shot, CoT, swap). Items already written as multiple-choice prompts (the CAI
paper's files) go through the same prompt layout, option scoring and arithmetic.

Each item gets P(correct), the probability the labeller gives to the human-preferred answer.
Reported per category and overall: accuracy (a tie counts half) with a seeded 95% bootstrap
interval, the position-bias rate (share of items whose two orders pick different answers, i.e.
the pick follows the letter), ECE over the confidence of the picked answer with a reliability
diagram, and the majority and random baselines.

Which answer is shown as (A) first is a seeded coin flip per item: BIG-bench HHH always lists
the preferred answer first, so a fixed order would reward a labeller that just says "A".
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from cai.config import option
from cai.errors import CAIError
from cai.outputs import figure_metadata, overwrite_option
from cai.evals.comparisons import ChoiceItem, Comparison, load_comparisons
from cai.evals.tasks.itemrun import scored_text
from cai.evals.metrics import (accuracy, bootstrap_ci, calibration, check_bootstrap, credit, majority_baseline,
                               random_baseline)
from cai.label.judge import JudgeConfig, few_shot_examples, label_pairs, method_summary
from cai.label.prompts import after_reasoning, label_template, paper_choice_conversation, swap_paper_options
from cai.label.preference import check_clamp, clamp, debias, normalised, orders_agree
from cai.progress import batched, progress
from cai.types import SamplingParams


@dataclass
class LabelerEvalConfig(JudgeConfig):
    """``cai eval labeler``: the labelling method (shared with ``cai label``) plus the data."""

    constitution: str = option("hhh", help="constitution whose preference questions are asked (not used for "
                               "paper-format prompts, which hold their own question)", flags=("-c", "--constitution"))
    model: str = option("smollm2-135m", help="the feedback model under test", flags=("-m", "--model"))
    data: str = option("hhh", help="hhh[:FOLDER], hh-rlhf[:FILE], an hhh_alignment-shaped folder, or a JSONL in "
                       "the CAI paper's multiple-choice format (prompt, corrects, incorrects)")
    hh_pool: str = option("check", help="which HH-RLHF (chosen/rejected) pairs to use: check (the 30 percent held out "
                          "from training prompts), train or all")
    limit: int | None = option(None, help="evaluate a seeded random subset of N comparisons")
    output: str = option("", help="where to write the JSON result (default: eval_labeler_<data>.json); per-item "
                         "results go beside it in OUT.examples.jsonl, from which a killed run resumes",
                         flags=("-o", "--output"))
    plot: str | None = option(None, help="write a reliability diagram PNG here")
    batch_size: int = option(32, help="comparisons per backend call")
    bootstrap: int = option(2000, help="bootstrap resamples for the 95 percent intervals")
    overwrite: bool = overwrite_option()


def _comparison_results(backend: Any, items: Sequence[Comparison], constitution: Any, method: JudgeConfig) -> list[dict]:
    flips = [random.Random(f"{method.seed}:{it.id}:order").random() < 0.5 for it in items]
    pairs = [(it.messages, it.better, it.worse) if bf else (it.messages, it.worse, it.better)
             for it, bf in zip(items, flips)]
    labels = label_pairs(backend, pairs, constitution, method, keys=[it.id for it in items])
    out = []
    for it, better_first, lab in zip(items, flips, labels):
        # x is the pair's first response; order 1 shows x as (A).
        if better_first:
            p, first, second = lab.p, lab.p_x_as_a, lab.p_x_as_b
        else:
            p, first = 1.0 - lab.p, 1.0 - lab.p_x_as_a
            second = None if lab.p_x_as_b is None else 1.0 - lab.p_x_as_b
        out.append({"id": it.id, "category": it.category, "p_correct": p, "p_orders": [first, second],
                    "agree": orders_agree(first, second), "correct_options": ["A" if better_first else "B"],
                    "n_options": 2, "principles": [s.id for s in lab.principles]})
    return out


def _choice_results(backend: Any, items: Sequence[ChoiceItem], examples: Sequence[Any], method: JudgeConfig) -> list[dict]:
    """Paper-format items: score every option in one pass; the swapped order (A and B texts
    exchanged) is scored too when the prompt has exactly those two options."""
    tpl = label_template()
    bounds = check_clamp(method.cot_clamp) if method.cot else None
    jobs: list[tuple[int, Any, tuple[str, ...], list[str]]] = []
    for k, it in enumerate(items):
        options = list(it.corrects) + list(it.incorrects)
        jobs.append((k, paper_choice_conversation(it.prompt, examples=examples, cot=method.cot, tpl=tpl),
                     it.corrects, options))
        swapped = swap_paper_options(it.prompt) if method.swap else None
        if swapped is not None and sorted(o.strip() for o in options) == ["(A)", "(B)"]:
            jobs.append((k, paper_choice_conversation(swapped, examples=examples, cot=method.cot, tpl=tpl),
                         it.incorrects, options))
    convs = [j[1] for j in jobs]
    if method.cot:
        params = SamplingParams(temperature=0.0, max_tokens=method.cot_max_tokens, stop=tuple(tpl["cot_stop"]))
        convs = [after_reasoning(c, o.text, tpl, paper=True) for c, o in zip(convs, backend.generate(convs, params))]
    scores = backend.score_options(convs, [j[3] for j in jobs])
    per_item: dict[int, list[float]] = {}
    for (k, _, corrects, _), lp in zip(jobs, scores):
        probs = normalised(lp)
        per_item.setdefault(k, []).append(clamp(sum(probs[o] for o in corrects), bounds))
    out = []
    for k, it in enumerate(items):
        ps = per_item[k]
        first, second = ps[0], (ps[1] if len(ps) > 1 else None)
        out.append({"id": it.id, "category": it.category, "p_correct": debias(first, second),
                    "p_orders": [first, second], "agree": orders_agree(first, second),
                    "correct_options": [o.strip().strip("()") for o in it.corrects],
                    "n_options": len(it.corrects) + len(it.incorrects)})
    return out


_TEXT = ("prompt", "better", "worse", "corrects", "incorrects")


def _item_text(it: Any) -> dict[str, Any]:
    """What an item asks, kept in its stored record (not in the result's items): the text a
    resumed run checks the data file against."""
    if isinstance(it, Comparison):
        return {"prompt": list(it.messages), "better": it.better, "worse": it.worse}
    return {"prompt": it.prompt, "corrects": list(it.corrects), "incorrects": list(it.incorrects)}


def _judged(text: dict[str, Any]) -> Any:
    """An item's text as one conversation for :func:`cai.same_prompts.check_same_prompts`: the prompt, then the
    human-preferred side and the other as two assistant turns, so a swapped human label is an edit too. None for
    a record written before the text was kept."""
    prompt = text.get("prompt")
    if prompt is None:
        return None
    sides = ([text["better"], text["worse"]] if "better" in text
             else [" ".join(text["corrects"]), " ".join(text["incorrects"])])
    return scored_text([{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt, sides)


def summarise(results: Sequence[dict], *, n_resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Accuracy with its 95% bootstrap interval, position bias, calibration and baselines."""
    credits = [credit(r["p_correct"]) for r in results]
    lo, hi = bootstrap_ci(credits, n_resamples=n_resamples, seed=seed)
    swapped = [r for r in results if r["agree"] is not None]
    confidences = [max(r["p_correct"], 1.0 - r["p_correct"]) for r in results]
    ece, bins = calibration(confidences, credits)
    return {
        "n": len(results), "accuracy": accuracy(credits), "ci95": [lo, hi],
        "mean_p_correct": accuracy([r["p_correct"] for r in results]),
        "position_bias_rate": (sum(not r["agree"] for r in swapped) / len(swapped)) if swapped else None,
        "ece": ece, "calibration_bins": bins,
        "majority_baseline": majority_baseline([frozenset(r["correct_options"]) for r in results]),
        "random_baseline": random_baseline([(len(r["correct_options"]), r["n_options"]) for r in results]),
    }


def evaluate_labeler(config: LabelerEvalConfig, *, backend: Any = None, constitution: Any = None,
                     items: Sequence[Any] | None = None, show_progress: bool | None = None,
                     examples: str | Path | None = None) -> dict[str, Any]:
    """Score the labelling method on human-labelled comparisons; returns the result dict (see
    :func:`summarise` for the metrics). The result is not written here (see :func:`write_result`);
    with ``examples`` (a JSONL path) each batch's per-item results are appended there as they are
    made, and a rerun reuses the ones already there, so a killed evaluation resumes."""
    from cai.backends import load_backend
    from cai.backends.unstarted import finished_record, stand_in
    from cai.provenance import provenance

    if config.batch_size < 1:
        raise CAIError("--batch-size must be at least 1")
    check_bootstrap(config.bootstrap)
    if config.limit is not None and config.limit < 1:
        raise CAIError(f"--limit must be at least 1, got {config.limit}; leave it out to use every comparison")
    store = None
    if examples is not None:
        from cai.store import RecordStore

        store = RecordStore(examples, stage="eval-labeler", overwrite=config.overwrite)
    check_clamp(config.cot_clamp)
    kind = "given"
    if items is None:
        kind, items = load_comparisons(config.data, limit=config.limit, seed=config.seed, hh_pool=config.hh_pool)
    comparisons = [it for it in items if isinstance(it, Comparison)]
    if config.method == "pointwise" and len(comparisons) != len(items):
        raise CAIError(f"--method pointwise needs two answers to score apart; {config.data} holds ready-made "
                       "multiple-choice prompts (the paper's format): use --method pairwise for it")
    needs_constitution = bool(comparisons) or config.few_shot != 0
    if constitution is None and needs_constitution:
        from cai.constitution import load_constitution

        constitution = load_constitution(config.constitution)
    shots = few_shot_examples(constitution, config.few_shot) if config.few_shot else ()
    if comparisons:
        from cai.label.judge import PrinciplePlan

        PrinciplePlan(constitution, config.principles)  # a bad --principles fails before the model loads
    if store is not None:
        from cai.same_prompts import check_same_prompts

        first_run = (next(iter(store), None) or {}).get("run") or {}
        if first_run.get("data") == config.data:  # another data's file is refused below, as another run
            check_same_prompts([store], {str(it.id): _judged(_item_text(it)) for it in items}, source=config.data,
                               prompt_of=_judged)
    if backend is None:  # a finished evaluation starts no engine (cai.backends.unstarted)
        first = finished_record(store, items, key=lambda it: it.id)  # --overwrite: never finished
        backend = stand_in(config.model, (first.get("run") or {}).get("model")) if first is not None else None
    backend = load_backend(backend if backend is not None else config.model)
    method_info = method_summary(config, constitution) if constitution is not None else {
        "few_shot": config.few_shot, "cot": config.cot, "swap": config.swap,
        "cot_clamp": list(config.cot_clamp) if config.cot else None}
    run_key = {"model": getattr(backend, "name", str(config.model)), "data": config.data, "method": method_info,
               "seed": config.seed}
    done: dict[str, dict] = {}
    if store is not None:
        for rec in store:
            if rec.get("run") != run_key:
                raise CAIError(f"{store.path} holds results of another run (model, data, method or seed differ); "
                               "rerun with those settings to resume, or pass a new -o/--output")
            done[str(rec["id"])] = {k: v for k, v in rec.items() if k not in ("run", "provenance", *_TEXT)}

    started = time.perf_counter()
    todo = [it for it in items if str(it.id) not in done]
    bar = progress(len(items), "eval labeler", unit="item", initial=len(items) - len(todo), enabled=show_progress)
    try:
        for batch in batched(todo, config.batch_size):
            comp = [it for it in batch if isinstance(it, Comparison)]
            choice = [it for it in batch if isinstance(it, ChoiceItem)]
            fresh: list[dict] = []
            if comp:
                fresh += _comparison_results(backend, comp, constitution, config)
            if choice:
                fresh += _choice_results(backend, choice, shots, config)
            if store is not None:
                text = {str(it.id): _item_text(it) for it in batch}
                store.append([{**r, **text[str(r["id"])], "run": run_key, "provenance": {"stage": "eval-labeler"}}
                              for r in fresh])
            done.update((str(r["id"]), r) for r in fresh)
            bar.update(len(batch))
    finally:
        bar.close()
    results = [done[str(it.id)] for it in items]

    categories = sorted({r["category"] for r in results})
    method = method_info
    return {
        "eval": "labeler", "data": config.data, "kind": kind,
        **({"hh_pool": config.hh_pool} if kind == "hh-rlhf" else {}),
        "model": getattr(backend, "name", str(config.model)),
        "method": method,
        "overall": summarise(results, n_resamples=config.bootstrap, seed=config.seed),
        "categories": {c: summarise([r for r in results if r["category"] == c], n_resamples=config.bootstrap,
                                    seed=config.seed) for c in categories} if len(categories) > 1 else {},
        "seconds": round(time.perf_counter() - started, 1),
        "items": results,
        "provenance": provenance(constitution=constitution, models={"feedback": getattr(backend, "name", "")},
                                 seed=config.seed, stage="eval-labeler", n_resamples=config.bootstrap),
    }


def check_outputs(config: LabelerEvalConfig) -> Path:
    """The result, its examples file and the --plot, before any model work; returns the result path."""
    from cai.outputs import check_file, check_target, inputs_of, plot_suffix
    from cai.store import check_output

    inputs = inputs_of(config)
    out = default_output(config)
    check_file(out, "result:labeler", flag="-o", inputs=inputs, overwrite=config.overwrite,
               example="eval_labeler.json")
    check_output(examples_path(out), stage="eval-labeler", overwrite=config.overwrite, inputs=inputs)
    if config.plot:
        check_target(config.plot, flag="--plot", example="reliability.png", inputs=inputs)
        plot_suffix(config.plot, "--plot")
        check_file(config.plot, "png", flag="--plot", inputs=inputs, overwrite=config.overwrite)
    return out


def as_eval_result(result: dict[str, Any]) -> Any:
    """A `cai eval labeler` result as an :class:`~cai.evals.results.EvalResult` (task ``labeler``),
    so ``cai compare`` reads it like any other eval's (``cai report`` lists it in its own labeller section)."""
    from cai.evals.results import EvalResult, Metric

    def metrics(s: dict[str, Any]) -> dict[str, Metric]:
        nan = float("nan")
        out = {"accuracy": Metric(s.get("accuracy", nan), tuple(s["ci95"]) if s.get("ci95") else None, s.get("n"),
                                  True, "share of comparisons where the labeller prefers the answer humans preferred"),
               "mean_p_correct": Metric(s.get("mean_p_correct", nan), None, s.get("n"), True,
                                        "mean probability the labeller gives the human-preferred answer"),
               "ece": Metric(s.get("ece", nan), None, s.get("n"), False, "expected calibration error")}
        if s.get("position_bias_rate") is not None:
            out["position_bias_rate"] = Metric(s["position_bias_rate"], None, s.get("n"), False,
                                               "share of comparisons whose verdict flips when the options swap")
        return out

    cats = result.get("categories") or {}
    return EvalResult(task="labeler", model=str(result.get("model", "")), metrics=metrics(result["overall"]),
                      breakdown={"by_category": {c: metrics(s) for c, s in cats.items()}} if cats else {},
                      provenance=result.get("provenance") or {})


def default_output(config: LabelerEvalConfig) -> Path:
    if config.output:
        return Path(config.output)
    slug = "".join(ch if ch.isalnum() else "-" for ch in config.data.split(":")[0].split("/")[-1]).strip("-")
    return Path(f"eval_labeler_{slug or 'data'}.json")


def examples_path(output: str | Path) -> Path:
    """``res.json`` -> ``res.examples.jsonl``: the per-item records a killed run resumes from."""
    p = Path(output)
    return p.with_name((p.name[: -len(".json")] if p.name.endswith(".json") else p.name) + ".examples.jsonl")


def write_result(result: dict[str, Any], path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(p)
    return p


def plot_reliability(result: dict[str, Any], path: str | Path) -> Path:
    """A reliability diagram: per confidence bin, how often the picked answer was right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    overall = result["overall"]
    bins = [b for b in overall["calibration_bins"] if b["count"]]
    fig, ax = plt.subplots(figsize=(5, 5))
    width = overall["calibration_bins"][0]["hi"] - overall["calibration_bins"][0]["lo"]
    ax.bar([b["lo"] for b in bins], [b["accuracy"] for b in bins], width=width, align="edge",
           edgecolor="black", alpha=0.7, label="accuracy")
    for b in bins:
        ax.text(b["lo"] + width / 2, b["accuracy"] + 0.01, str(b["count"]), ha="center", fontsize=7)
    ax.plot([0.5, 1.0], [0.5, 1.0], "k--", label="perfect calibration")
    ax.set_xlim(0.5, 1.0)
    ax.set_ylim(0.0, 1.1)
    ax.set_xlabel("confidence in the picked answer")
    ax.set_ylabel("fraction agreeing with humans")
    ax.set_title(f"{result['model']} on {result['data']}\nn={overall['n']}  ECE={overall['ece']:.3f}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=120, metadata=figure_metadata(p))
    plt.close(fig)
    return p


def result_table(result: dict[str, Any]):
    """A rich Table: one row per category (when there are several) and the overall row."""
    from rich.table import Table

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    m = result["method"]
    how = ("pointwise" if m.get("method") == "pointwise" else
           f"pairwise, swap={'on' if m.get('swap') else 'off'}, cot={'on' if m.get('cot') else 'off'}")
    title = f"labeller {result['model']} on {result['data']} ({how}, principles={m.get('principles', '-')})"
    table = Table(title=title)
    for col in ("category", "n", "accuracy", "95% CI", "position bias", "ECE", "majority", "random"):
        table.add_column(col, justify="left" if col == "category" else "right", no_wrap=True)
    cats = list(result["categories"].items())
    for k, (name, s) in enumerate(cats + [("overall", result["overall"])]):
        table.add_row(name, str(s["n"]), pct(s["accuracy"]), f"{100 * s['ci95'][0]:.1f}-{100 * s['ci95'][1]:.1f}",
                      pct(s["position_bias_rate"]), f"{s['ece']:.3f}", pct(s["majority_baseline"]),
                      pct(s["random_baseline"]), end_section=k == len(cats) - 1)
    return table


def result_markdown(result: dict[str, Any], name: str = "") -> str:
    """Markdown table rows (category, n, accuracy [95% CI], position bias, ECE, majority, random)
    for docs; ``name`` labels the run."""
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}"

    rows = []
    for cat, s in list(result["categories"].items()) + [("overall", result["overall"])]:
        rows.append(f"| {name} | {cat} | {s['n']} | {pct(s['accuracy'])} [{pct(s['ci95'][0])}, {pct(s['ci95'][1])}] | "
                    f"{pct(s['position_bias_rate'])} | {s['ece']:.3f} | {pct(s['majority_baseline'])} | "
                    f"{pct(s['random_baseline'])} |")
    return "\n".join(rows)


MARKDOWN_HEADER = ("| run | category | n | accuracy % [95% CI] | position bias % | ECE | majority % | random % |\n"
                   "|---|---|---:|---|---:|---:|---:|---:|")
