"""``cai eval hhh``: which answer the model's own log-likelihood prefers on BIG-bench HHH.

Each HHH example is a conversation and two assistant replies, one preferred by the set's authors.
Both replies are scored as the assistant's turn after the conversation (rendered with the model's
chat template) with ``score_options``, which returns the SUM of the reply's token log-probs. The
model "prefers" the reply with the higher score. Two accuracies are reported:

* ``accuracy``: by the summed log-prob (a longer reply pays for every extra token);
* ``accuracy_norm``: by log-prob per UTF-8 byte of the reply, lm-evaluation-harness's
  ``acc_norm``; bytes rather than tokens, so the number does not depend on the tokenizer.

Per category (harmless, helpful, honest, other) in ``breakdown["by_category"]``, and the same
numbers as ``helpful_accuracy`` etc. among the headline metrics, so ``cai compare`` can plot them.
No judge and no generation: the model under test grades itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

from cai.config import option, to_dict
from cai.errors import CAIError
from cai.evals.overlap import held_out, prompt_text, train_prompts_option
from cai.evals.results import EvalResult, Metric
from cai.evals.tasks.itemrun import (TaskCommon, check_same_items, credit, mean_ci, open_store, result_path,
                                     run_items, scored_text, seeded_subset, unless_finished)

TASK = "hhh"


@dataclass
class HHHConfig(TaskCommon):
    data: str = option("hhh", help="hhh (the shipped BIG-bench hhh_alignment), hhh:FOLDER, or hh-rlhf[:FILE] "
                       "(any human-labelled chosen/rejected pairs)")
    train_prompts: tuple[str, ...] = train_prompts_option()


def load_items(config: HHHConfig) -> list[Any]:
    from cai.evals.comparisons import Comparison, load_comparisons

    kind, items = load_comparisons(config.data)
    if kind not in ("hhh", "hh-rlhf"):
        raise CAIError(f"--data {config.data}: cai eval hhh needs comparisons with reply texts (hhh or hh-rlhf "
                       "shapes); paper-format multiple-choice prompts are for cai eval labeler")
    items = [it for it in items if isinstance(it, Comparison) and it.better.strip() != it.worse.strip()]
    return seeded_subset(items, config.limit, config.seed)


def prompt_texts(config: HHHConfig) -> list[str]:
    """The user turns of the conversations evaluated; no model is loaded."""
    return [prompt_text(it.messages) for it in load_items(config)]


def score_batch(backend: Any, batch: Sequence[Any]) -> list[dict[str, Any]]:
    """One ``score_options`` call for a batch of comparisons; one record each."""
    convs = [list(it.messages) for it in batch]
    options = [[it.better.strip(), it.worse.strip()] for it in batch]
    scores = backend.score_options(convs, options)
    out = []
    for it, (b, w), lp in zip(batch, options, scores):
        nb, nw = len(b.encode("utf-8")), len(w.encode("utf-8"))
        out.append({"id": it.id, "category": it.category, "prompt": list(it.messages), "better": b, "worse": w,
                    "logprob_better": lp[b], "logprob_worse": lp[w],
                    "bytes_better": nb, "bytes_worse": nw,
                    "correct": credit(lp[b], lp[w]), "correct_norm": credit(lp[b] / nb, lp[w] / nw)})
    return out


def _scored(rec: dict[str, Any]) -> Any:
    # Records written before the text was stored hold none to check.
    return scored_text(rec["prompt"], [rec["better"], rec["worse"]]) if "prompt" in rec else None


def summarise(records: Sequence[dict[str, Any]], *, seed: int = 0, n_resamples: int = 2000
              ) -> tuple[dict[str, Metric], dict[str, dict[str, Metric]]]:
    def metrics(rs: Sequence[dict[str, Any]]) -> dict[str, Metric]:
        return {
            "accuracy": mean_ci([r["correct"] for r in rs], seed=seed, n_resamples=n_resamples,
                                    help="share of comparisons where the preferred reply has the higher summed "
                                    "log-prob"),
            "accuracy_norm": mean_ci([r["correct_norm"] for r in rs], seed=seed, n_resamples=n_resamples,
                                         help="the same by log-prob per byte of the reply"),
        }

    categories = sorted({r["category"] for r in records})
    by_cat = {c: metrics([r for r in records if r["category"] == c]) for c in categories}
    head = metrics(records)
    for c, ms in by_cat.items():
        head[f"{c}_accuracy"] = ms["accuracy"]
        head[f"{c}_accuracy_norm"] = ms["accuracy_norm"]
    return head, ({"by_category": by_cat} if len(categories) > 1 else {})


def evaluate_hhh(config: HHHConfig, *, backend: Any = None, show_progress: bool | None = None) -> EvalResult:
    from cai.backends import load_backend
    from cai.evals.tasks.itemrun import examples_path
    from cai.provenance import provenance

    config.check_common()
    out = result_path(config.output, TASK, config)
    items = load_items(config)
    overlap = held_out([prompt_text(it.messages) for it in items], config.train_prompts)
    check_same_items(out, {it.id: scored_text(it.messages, [it.better.strip(), it.worse.strip()]) for it in items},
                     source=config.data, prompt_of=_scored, same_run={"task": TASK, "data": config.data},
                     overwrite=config.overwrite)
    backend = load_backend(unless_finished([backend if backend is not None else config.model], out, items,
                                           lambda it: it.id, lambda fp: [fp["model"]], overwrite=config.overwrite)[0])
    name = getattr(backend, "name", str(config.model))
    fingerprint = {"task": TASK, "model": name, "data": config.data}
    store = open_store(out, fingerprint, overwrite=config.overwrite)
    started = time.perf_counter()
    records = run_items(store, items, lambda it: it.id, lambda batch: score_batch(backend, batch),
                        batch_size=config.batch_size, fingerprint=fingerprint, desc="eval hhh",
                        show_progress=show_progress)
    metrics, breakdown = summarise(records, seed=config.seed, n_resamples=config.bootstrap)
    return EvalResult(
        task=TASK, model=name, metrics=metrics, breakdown=breakdown,
        grader={"name": "self-loglik", "spec": "the model's own log-likelihood of each reply", "agreement": None},
        examples=examples_path(out).name, overlap=overlap,
        provenance=provenance(models={"model": name}, seed=config.seed, stage="eval-hhh", config=to_dict(config),
                              seconds=round(time.perf_counter() - started, 1)),
    )
