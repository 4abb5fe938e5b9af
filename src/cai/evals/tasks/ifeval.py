"""``cai eval ifeval``: instruction following with verifiable instructions (IFEval, Zhou et al. 2023).

The model answers IFEval's 541 prompts; each carries one to three instructions that a program
checks ("no commas", "at least 300 words", "wrap the whole answer in JSON"), 834 in all, of 25
types. No judge: the checkers of :mod:`cai.evals.ifeval` decide, so the number is cheap and
reproducible, a helpfulness measure that no grader's taste enters.

Metrics, each with a 95% bootstrap interval over prompts:

- ``prompt_strict_accuracy``: share of prompts whose every instruction is followed;
- ``prompt_loose_accuracy``: the same when a response may also pass with its first and/or last
  line removed or its ``*`` markdown removed (the paper's loose criterion);
- ``instruction_strict_accuracy`` / ``instruction_loose_accuracy``: share of all instructions
  followed (n is the number of instructions; prompts are resampled with their instructions).

The breakdown gives strict and loose accuracy per instruction type and per group. Answers are
stored as they come (OUT.examples.jsonl, resumable); the scores are recomputed from the stored
answers on every run, so a finished run rescored by a later cai uses that cai's checkers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from cai.config import option, to_dict
from cai.errors import CAIError
from cai.evals.results import EvalResult
from cai.evals.overlap import held_out, train_prompts_option
from cai.evals.tasks.itemrun import (TaskCommon, check_same_items, examples_path, open_store, result_path, run_items,
                                     seeded_subset, unless_finished)
from cai.sources.readers import iter_jsonl
from cai.types import SamplingParams

TASK = "ifeval"


@dataclass
class IFEvalConfig(TaskCommon):
    data: str = option("ifeval", help="ifeval (the 541 prompts that ship with cai) or a JSONL in IFEval's format "
                       "(key, prompt, instruction_id_list, kwargs)")
    max_tokens: int = option(1280, help="token limit of each answer; some prompts ask for 300+ words, so a low "
                             "limit cuts answers short and fails their length instructions")
    temperature: float = option(0.0, help="sampling temperature of the answers (0 = greedy)")
    system_prompt: str | None = option(None, help="system message before every prompt (default: none)")
    train_prompts: tuple[str, ...] = train_prompts_option()

    def sampling(self) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, max_tokens=self.max_tokens, seed=self.seed)

    def check(self) -> None:
        self.check_common()
        if self.max_tokens < 1:
            raise CAIError(f"--max-tokens must be at least 1, got {self.max_tokens}")
        if not self.temperature >= 0:
            raise CAIError(f"--temperature must be a number >= 0, got {self.temperature}")


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    instruction_ids: tuple[str, ...]
    kwargs: tuple[dict[str, Any], ...]


def load_prompts(source: str) -> list[Prompt]:
    """IFEval's JSONL, every instruction checked against the registry so a bad line is named
    before any model work."""
    from cai.evals.datasets import dataset_path
    from cai.evals.ifeval.registry import check_args

    path = dataset_path("ifeval") if source == "ifeval" else Path(source)
    if not path.is_file():
        raise CAIError(f"--data {source}: not found; use ifeval or a JSONL with key, prompt, instruction_id_list "
                       "and kwargs")
    out, seen = [], set()
    for n, rec in iter_jsonl(path, "each line is one IFEval prompt object"):
        if not isinstance(rec.get("prompt"), str) or not rec["prompt"].strip():
            raise CAIError(f"{path}:{n}: needs a non-empty prompt string (IFEval's fields: key, prompt, "
                           "instruction_id_list, kwargs)")
        ids, kwargs = rec.get("instruction_id_list"), rec.get("kwargs")
        if not isinstance(ids, list) or not ids or not isinstance(kwargs, list) or len(kwargs) != len(ids):
            raise CAIError(f"{path}:{n}: instruction_id_list must be a non-empty list and kwargs a list of the "
                           "same length (one object per instruction, {} when it takes none)")
        for iid, kw in zip(ids, kwargs):
            err = check_args(iid, kw)
            if err:
                raise CAIError(f"{path}:{n}: {err}")
        pid = f"ifeval/{rec.get('key', n)}"
        if pid in seen:
            raise CAIError(f"{path}:{n}: key {rec.get('key')!r} appears twice; keys must be unique")
        seen.add(pid)
        out.append(Prompt(pid, rec["prompt"], tuple(ids), tuple(dict(k) for k in kwargs)))
    if not out:
        raise CAIError(f"{path}: no prompts")
    return out


def answer_batch(backend: Any, batch: Sequence[Prompt], config: IFEvalConfig) -> list[dict[str, Any]]:
    from cai.evals.ifeval.scoring import score_response

    system = [{"role": "system", "content": config.system_prompt}] if config.system_prompt else []
    completions = backend.generate([system + [{"role": "user", "content": p.text}] for p in batch], config.sampling())
    if len(completions) != len(batch):
        raise RuntimeError(f"backend returned {len(completions)} answers for {len(batch)} prompts")
    out = []
    for p, c in zip(batch, completions):
        # Not stripped: the loose variants drop the first and last line, and a leading newline
        # is part of what the model said.
        scores = score_response(p.instruction_ids, p.kwargs, c.text)
        out.append({"id": p.id, "prompt": p.text, "answer": c.text, "finish_reason": c.finish_reason,
                    "instruction_id_list": list(p.instruction_ids), "kwargs": [dict(k) for k in p.kwargs],
                    **scores, "failed": not all(scores["strict"])})
    return out


def _asked(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def prompt_texts(config: IFEvalConfig) -> list[str]:
    """The prompts evaluated; no model is loaded."""
    return [p.text for p in seeded_subset(load_prompts(config.data), config.limit, config.seed)]


def evaluate_ifeval(config: IFEvalConfig, *, backend: Any = None, show_progress: bool | None = None) -> EvalResult:
    from cai.backends import load_backend
    from cai.evals.ifeval.scoring import by_instruction, score_response, summarise
    from cai.provenance import provenance

    config.check()
    out = result_path(config.output, TASK, config)
    prompts = seeded_subset(load_prompts(config.data), config.limit, config.seed)
    check_same_items(out, {p.id: _asked(p.text) for p in prompts}, source=config.data,
                     prompt_of=lambda r: _asked(r["prompt"]), same_run={"task": TASK, "data": config.data},
                     overwrite=config.overwrite)
    backend = load_backend(unless_finished([backend if backend is not None else config.model], out, prompts,
                                           lambda p: p.id, lambda fp: [fp["model"]], overwrite=config.overwrite)[0])
    name = getattr(backend, "name", str(config.model))
    params = config.sampling()
    fingerprint = {"task": TASK, "model": name, "data": config.data, "sampling": params.to_dict(),
                   "system_prompt": config.system_prompt}
    store = open_store(out, fingerprint, overwrite=config.overwrite)
    started = time.perf_counter()
    records = run_items(store, prompts, lambda p: p.id, lambda batch: answer_batch(backend, batch, config),
                        batch_size=config.batch_size, fingerprint=fingerprint, desc="eval ifeval",
                        show_progress=show_progress)
    by_id = {p.id: p for p in prompts}
    scored = [score_response(by_id[r["id"]].instruction_ids, by_id[r["id"]].kwargs, r["answer"]) for r in records]
    stats = {"seed": config.seed, "n_resamples": config.bootstrap}
    return EvalResult(
        task=TASK, model=name, metrics=summarise(scored, **stats),
        breakdown={"by_instruction": by_instruction(records, scored, **stats),
                   "by_group": by_instruction(records, scored, group=True, **stats)},
        grader={"name": "ifeval-rules", "spec": "cai.evals.ifeval: IFEval's verifiable-instruction checkers, "
                "strict and loose", "agreement": None},
        examples=examples_path(out).name, overlap=held_out([p.text for p in prompts], config.train_prompts),
        provenance=provenance(models={"model": name}, sampling=params.to_dict(), seed=config.seed,
                              stage="eval-ifeval", data=config.data, n=len(records), config=to_dict(config),
                              seconds=round(time.perf_counter() - started, 1)),
    )
