"""Answer a prompt set with the model under test and grade every answer, resumably.

Shared by the graded tasks (harmlessness, over-refusal): the batch is answered with one
``generate`` call (so vLLM runs it at batch speed), graded with one grader call, and written to a
RecordStore as one record per prompt. Running the same command again skips what is stored; a
store made with another model, grader or sampling is refused rather than mixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from cai.config import option, to_dict
from cai.errors import CAIError
from cai.evals.graders import GraderConfig
from cai.evals.metrics import check_bootstrap
from cai.outputs import overwrite_option
from cai.types import Conversation, SamplingParams


@dataclass
class AnsweringConfig(GraderConfig):
    """Flags of every eval that answers prompts and grades the answers."""

    model: str = option("smollm2-135m", help="model under test (alias, folder or backend spec: hf:PATH, vllm:PATH, "
                        "openai:URL#MODEL, mock:)", flags=("-m", "--model"))
    output: str = option("", help="result JSON (per-prompt answers and grades go beside it as "
                         "NAME.examples.jsonl)", flags=("-o", "--output"))
    limit: int | None = option(None, help="evaluate a seeded random subset of N prompts")
    seed: int = option(0, help="seed for --limit, sampling and the bootstrap")
    batch_size: int = option(64, help="prompts answered and graded per backend call; also the unit of saving")
    max_tokens: int = option(256, help="token limit of each answer")
    temperature: float = option(0.0, help="sampling temperature of the answers (0 = greedy)")
    system_prompt: str | None = option(None, help="system message before every prompt (default: none)")
    grader_agreement: str | None = option(None, help="a `cai eval grader` result for this grader; its accuracy and "
                                          "kappa are copied into this result's grader block")
    bootstrap: int = option(2000, help="bootstrap resamples for the 95 percent intervals")
    overwrite: bool = overwrite_option()

    def sampling(self) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, max_tokens=self.max_tokens, seed=self.seed)

    def check(self) -> None:
        if self.batch_size < 1:
            raise CAIError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise CAIError(f"--limit must be a positive number, got {self.limit}")
        if self.max_tokens < 1:
            raise CAIError(f"--max-tokens must be at least 1, got {self.max_tokens}")
        check_bootstrap(self.bootstrap)


@dataclass(frozen=True)
class Item:
    id: str
    messages: Conversation
    meta: dict[str, Any]


def examples_path(output: str | Path) -> Path:
    p = Path(output)
    return p.with_name(p.stem + ".examples.jsonl")


def setup(config: AnsweringConfig, *, backend: Any = None, grader: Any = None, task: str = "",
          items: Sequence[Item] = ()) -> tuple[Any, Any, dict[str, Any], Any]:
    """(backend, grader, grader block, records store) after checking the flags and the output path,
    before any model work is wasted on a run that cannot write its result. When the records file
    already answers every one of ``items``, the models are named, not started
    (:mod:`cai.backends.unstarted`). The store is opened once, here, and handed on to
    :func:`answer_and_grade` (opening reads and checks the whole file)."""
    from cai.backends import load_backend, start_options
    from cai.backends.deferred import pending_spec
    from cai.backends.unstarted import Unstarted, finished_record, stand_in
    from cai.evals.graders.agreement import agreement_summary, check_output
    from cai.same_prompts import check_same_prompts
    from cai.store import RecordStore

    config.check()
    config.check_grader()
    check_output(config.output, config, task)
    if config.grader_agreement and not Path(config.grader_agreement).is_file():
        raise CAIError(f"--grader-agreement {config.grader_agreement}: no such file; run cai eval grader first")
    store = RecordStore(examples_path(config.output), overwrite=config.overwrite)
    # An eval stopped before its result was written leaves only this file: another task run with the same
    # -o would add its answers to it (its result check has nothing to read yet).
    made_by = ((next(iter(store), None) or {}).get("provenance") or {}).get("stage")
    if made_by and task and made_by != f"eval-{task}":
        raise CAIError(f"{store.path} holds the answers of {made_by}, not of eval-{task}; pass another -o, or "
                       "--overwrite to start that file afresh")
    check_same_prompts([store], {it.id: it.messages for it in items}, source=getattr(config, "data", None) or task,
                       prompt_of=lambda rec: rec.get("prompt"))
    if backend is None or pending_spec(backend):  # a shared backend not loaded yet is checked as its spec
        first = finished_record(store, items, key=lambda it: it.id)  # --overwrite: never finished
        models = ((first or {}).get("provenance") or {}).get("models") or {}
        if first is not None:
            spare = stand_in(backend if backend is not None else config.model, models.get("policy"))
            backend = spare if spare is not None else backend
    if backend is None:  # a small job starts vLLM without its compile warm-up (cai.backends.start_options)
        backend = load_backend(config.model, **start_options(config.model, len(items) * config.max_tokens or None))
    backend = load_backend(backend)
    grader = grader if grader is not None else config.build_grader(backend, model_spec=config.model,
                                                                   start=not isinstance(backend, Unstarted))
    block = dict(grader.describe())
    block["agreement"] = agreement_summary(config.grader_agreement, grader) if config.grader_agreement else None
    return backend, grader, block, store


def answer_and_grade(items: Sequence[Item], config: AnsweringConfig, backend: Any, grader: Any, store: Any, *,
                     task: str, show_progress: bool | None = None,
                     on_batch: Callable[[list[dict[str, Any]]], None] | None = None) -> list[dict[str, Any]]:
    """One record per item, in item order: prompt, answer, finish reason, grade, the item's meta;
    ``store`` is the records file :func:`setup` opened."""
    from cai.progress import batched, progress
    from cai.provenance import provenance

    params = config.sampling()
    prov = provenance(models={"policy": backend.name}, sampling=params.to_dict(), seed=config.seed,
                      stage=f"eval-{task}", grader=grader.spec, system_prompt=config.system_prompt)
    first = next(iter(store), None)
    if first is not None:
        old = first.get("provenance") or {}
        diffs = [k for k in ("models", "sampling", "grader", "system_prompt") if old.get(k) != prov.get(k)]
        if diffs:
            raise CAIError(f"{store.path} was made with a different {', '.join(diffs)}; resume with the same "
                           "settings or write to a new -o file")
    todo = store.todo(items, key=lambda it: it.id)
    system = [{"role": "system", "content": config.system_prompt}] if config.system_prompt else []
    with progress(len(items), f"eval {task}", unit="prompt", initial=len(items) - len(todo),
                  enabled=show_progress) as bar:
        for batch in batched(todo, config.batch_size):
            completions = backend.generate([system + list(it.messages) for it in batch], params)
            if len(completions) != len(batch):
                raise RuntimeError(f"backend returned {len(completions)} answers for {len(batch)} prompts")
            answers = [c.text.strip() for c in completions]
            grades = grader.grade([list(it.messages) for it in batch], answers)
            records = [{"id": it.id, "prompt": list(it.messages), "answer": a, "finish_reason": c.finish_reason,
                        "grade": g.to_json(), **it.meta, "provenance": prov}
                       for it, a, c, g in zip(batch, answers, completions, grades)]
            store.append(records)
            bar.update(len(batch))
            if on_batch:
                on_batch(records)
    by_id = {r["id"]: r for r in store}
    return [by_id[it.id] for it in items]


def result_provenance(config: AnsweringConfig, backend: Any, grader: Any, *, task: str, data: str, n: int) -> dict:
    from cai.provenance import provenance

    constitution = getattr(grader, "constitution", None)
    return provenance(constitution=constitution, models={"policy": backend.name, "grader": grader.spec},
                      sampling=config.sampling().to_dict(), seed=config.seed, stage=f"eval-{task}", data=data, n=n,
                      config=to_dict(config))
