"""What every per-item evaluation task shares: the options every task has (model, output, limit,
seed, batch size, bootstrap), where its per-item records go, and a resumable loop over items.

Records go to ``OUT.examples.jsonl`` beside ``OUT.json`` through :class:`cai.store.RecordStore`,
one batch at a time, so a killed eval resumes where it stopped. Every record carries the run's
``fingerprint`` (task, model and whatever changes the numbers); resuming a file made with another
fingerprint is refused rather than mixing two runs into one result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from cai.config import option
from cai.errors import CAIError
from cai.evals.metrics import check_bootstrap
from cai.outputs import overwrite_option
from cai.store import RecordStore


@dataclass
class TaskCommon:
    """Options shared by the per-item eval tasks (hhh, truthfulqa, helpfulness, pairwise)."""

    model: str = option("smollm2-135m", help="the model evaluated", flags=("-m", "--model"))
    output: str = option("", help="where to write the JSON result (default: eval_TASK.json); per-item records go "
                         "beside it as OUT.examples.jsonl, and running the same command again resumes from them",
                         flags=("-o", "--output"))
    limit: int | None = option(None, help="evaluate a seeded random subset of N items")
    seed: int = option(0, help="seed for the subset, sampling and bootstrap")
    batch_size: int = option(64, help="items per backend call (and per write of the records file)")
    bootstrap: int = option(2000, help="bootstrap resamples for the 95 percent intervals")
    overwrite: bool = overwrite_option()

    def check_common(self) -> None:
        if self.batch_size < 1:
            raise CAIError("--batch-size must be at least 1")
        if self.limit is not None and self.limit < 1:
            raise CAIError(f"--limit must be a positive number, got {self.limit}")
        check_bootstrap(self.bootstrap)


def result_path(output: str, task: str, config: Any = None) -> Path:
    """The result file; refused before any model work if it cannot be written there. With the
    task's ``config``, also when it is one of the config's inputs or holds something other than
    this task's result (unless ``config.overwrite``), and the same for its examples file."""
    from cai.outputs import check_file, check_target, inputs_of
    from cai.store import check_output

    default = f"eval_{task}.json"
    if config is None:
        return result_name(output, default)
    inputs = inputs_of(config)
    _not_a_folder(output, default)
    check_target(output or default, flag="-o", example=default, inputs=inputs)
    p = check_file(result_name(output, default), f"result:{task}", flag="-o", inputs=inputs,
                   overwrite=config.overwrite, example=default)
    check_output(examples_path(p), overwrite=config.overwrite, inputs=inputs)
    return p


def result_name(output: str, default: str) -> Path:
    """``-o`` of an eval as a path: ``default`` when empty; a folder (or a name ending in ``/``) or
    a name not ending in .json is refused with a file name to use."""
    _not_a_folder(output, default)
    p = Path(output or default)
    if p.suffix != ".json":
        raise CAIError(f"-o {p}: the result is a .json file; use a name ending in .json, e.g. -o "
                       f"{p.with_suffix('.json')}")
    return p


def _not_a_folder(output: str, default: str) -> None:
    if output.endswith(("/", "\\")) or Path(output or default).is_dir():
        raise CAIError(f"-o {output} is a folder; pass a file name, e.g. -o {Path(output) / default}")


def examples_path(result: str | Path) -> Path:
    """``results.json`` -> ``results.examples.jsonl``."""
    p = Path(result)
    return p.with_name(p.name[: -len(".json")] + ".examples.jsonl" if p.name.endswith(".json") else p.name + ".examples.jsonl")


def open_store(result: str | Path, fingerprint: dict[str, Any], *, overwrite: bool = False) -> RecordStore:
    store = RecordStore(examples_path(result), overwrite=overwrite)
    first = next(iter(store), None)
    if first is not None and first.get("fingerprint") != fingerprint:
        old = first.get("fingerprint") or {}
        diffs = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
        raise CAIError(f"{store.path} holds a run with a different {', '.join(diffs) or 'setup'}; resume with the "
                       "same settings, or write to a new -o file (or delete that file to start over)")
    return store


def check_same_items(result: str | Path, now: Mapping[str, Any], *, source: str,
                     prompt_of: Callable[[dict[str, Any]], Any], same_run: Mapping[str, Any],
                     overwrite: bool = False) -> None:
    """Before any model starts: refuse a records file beside ``result`` whose record of an id scored
    other text than that item (``now``: id -> conversation) reads today (:mod:`cai.same_prompts`).
    Ids of a data file are its own keys or row numbers, so an edited item keeps its id. A file whose
    fingerprint differs in ``same_run`` (task, data, ...) is left to :func:`open_store`, whose error
    names that difference rather than calling every item edited."""
    from cai.same_prompts import check_same_prompts

    if overwrite or not examples_path(result).is_file():
        return
    store = RecordStore(examples_path(result))
    old = (next(iter(store), None) or {}).get("fingerprint") or {}
    if all(old.get(k) == v for k, v in same_run.items()):
        check_same_prompts([store], now, source=source, prompt_of=prompt_of)


def scored_text(messages: Sequence[Any], options: Sequence[str]) -> list[dict[str, Any]]:
    """What a log-likelihood record scored, as one conversation for :func:`check_same_items`: the
    conversation, then each option scored after it as an assistant turn, so that an edited option
    counts as an edited item (its stored log-prob is of the old text)."""
    return [*messages, *({"role": "assistant", "content": o} for o in options)]


def unless_finished(specs: Sequence[Any], result: str | Path, items: Sequence[Any], key: Callable[[Any], str],
                    stored: Callable[[dict[str, Any]], Sequence[Any]], *, overwrite: bool = False) -> list[Any]:
    """``specs`` (the models a task loads), or unstarted stand-ins for them when the records file
    beside ``result`` already holds every item and its fingerprint names models they could load
    (``stored`` reads those names from it, in the order of ``specs``): a rerun on a finished
    output then starts no engine (:mod:`cai.backends.unstarted`)."""
    from cai.backends.unstarted import finished_record, stand_ins

    if overwrite or not items or not examples_path(result).is_file():
        return list(specs)
    first = finished_record(RecordStore(examples_path(result)), items, key=key)
    if first is None:
        return list(specs)
    try:
        names = list(stored(first.get("fingerprint") or {}))
    except (KeyError, TypeError):  # a fingerprint without the model names: let the loaded run decide
        return list(specs)
    return stand_ins(specs, names) or list(specs)


def run_items(store: RecordStore, items: Sequence[Any], key: Callable[[Any], str],
              work: Callable[[list[Any]], list[dict[str, Any]]], *, batch_size: int, fingerprint: dict[str, Any],
              desc: str, show_progress: bool | None = None) -> list[dict[str, Any]]:
    """Run ``work`` on the items not yet in ``store``, a batch at a time, appending its records
    (each with an ``id``) as soon as a batch is done; return the stored records of ``items``,
    in their order."""
    from cai.progress import batched, progress

    todo = store.todo(items, key=key)
    with progress(len(items), desc, unit="item", initial=len(items) - len(todo), enabled=show_progress) as bar:
        for batch in batched(todo, batch_size):
            records = work(batch)
            for r in records:
                r["fingerprint"] = fingerprint
            store.append(records)
            bar.update(len(batch))
    wanted = {str(key(it)) for it in items}
    by_id = {str(r["id"]): r for r in store if str(r["id"]) in wanted}
    return [by_id[str(key(it))] for it in items if str(key(it)) in by_id]


def seeded_subset(items: list[Any], limit: int | None, seed: int) -> list[Any]:
    """A seeded random subset of ``limit`` items, kept in their original order. Subsets are nested
    (a larger ``limit`` keeps every item of a smaller one), so raising --limit on a finished run
    resumes it instead of starting over."""
    import random

    if limit is None or limit >= len(items):
        return items
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    keep = set(order[:limit])
    return [it for k, it in enumerate(items) if k in keep]


def credit(better: float, worse: float) -> float:
    """1 when the right option scores higher, 0 when lower, 0.5 for an exact tie."""
    return 1.0 if better > worse else 0.0 if better < worse else 0.5


def mean_ci(values: Sequence[float], *, help: str = "", seed: int = 0, n_resamples: int = 2000,
            higher_is_better: bool | None = True) -> Any:
    """:func:`cai.evals.results.mean_metric` with the run's number of bootstrap resamples."""
    from cai.evals.results import mean_metric

    return mean_metric(values, n_resamples=n_resamples, help=help, higher_is_better=higher_is_better, seed=seed)
