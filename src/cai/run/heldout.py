"""Before a run starts: each eval set must be held out from the prompts the run trains on.

The plan gives every eval step ``train_prompts``: the prompt sources its training steps read
(``critique.prompts``, ``label.prompts``, ``ppo.prompts``, ``sft.data``, ...). Here, before any step
runs (a dry run too), each eval set's prompts are compared with each of those sources, exact and
near-duplicate (:mod:`cai.evals.overlap`), and the run stops at the first overlap with a one-line
error naming the task, the source and an example. The eval steps measure the same again and record
it in their results.

Files the run itself writes (``@critique/critique.jsonl``) do not exist yet; their prompts come from
sources of the same run that are checked here, so they are left to the eval step.
"""

from __future__ import annotations

import json
from typing import Any

from cai.errors import CAIError

_SHOWN = 80


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def check_held_out(plan: Any, opts: Any, *, where: str) -> None:
    """Raise CAIError when an eval step's prompts overlap any training source of its run."""
    from cai.config import to_dict
    from cai.evals.overlap import measure, train_texts
    from cai.run.runner import step_config
    from cai.run.stages import build_stage_config, eval_prompt_texts

    train: dict[str, list[str]] = {}
    evals: dict[str, list[str] | None] = {}
    checked: set[tuple[str, tuple[str, ...]]] = set()  # arms share eval sets and sources: check each once
    for step in plan.steps:
        if step.stage != "eval" or not step.config.get("train_prompts"):
            continue
        task = step.config["task"]
        config = step_config(step, plan.folders[step.id], opts.run_dir, opts.base)
        cfg, _ = build_stage_config("eval", config, where=f"{where}, section eval")
        # Which model answers does not change the prompts; the data, limit and seed do.
        asked = {k: v for k, v in to_dict(cfg).items() if k not in ("model", "output", "train_prompts")}
        key = task + json.dumps(asked, sort_keys=True, default=str)
        # The built config holds the sources as the step reads them (relative paths made absolute).
        sources = {given: source for given, source in zip(step.config["train_prompts"], cfg.train_prompts)
                   if not given.startswith("@")}
        if not sources or (key, tuple(sources.values())) in checked:
            continue
        checked.add((key, tuple(sources.values())))
        if key not in evals:
            try:
                evals[key] = eval_prompt_texts(task, cfg)
            except CAIError as e:
                raise CAIError(f"{where}, section eval, task {task}: {e}") from None
        texts = evals[key]
        if texts is None:
            continue
        for given, source in sources.items():
            if source not in train:
                try:
                    train[source] = train_texts(source)
                except CAIError as e:
                    raise CAIError(f"{where}: {step.trained_on.get(given, 'eval.train_prompts')}: {e}") from None
        if not measure(texts, {given: train[source] for given, source in sources.items()}).count:
            continue
        for given, source in sources.items():  # name the first source that overlaps, with its own example
            found = measure(texts, {given: train[source]})
            if found.count:
                ex = found.examples[0]
                raise CAIError(
                    f"{where}: eval task {task} is not held out from the training prompts of "
                    f"{step.trained_on.get(given, 'eval.train_prompts')} ({given}): {found.count} of {found.n} eval "
                    f"prompts are in them ({found.exact} exact, {found.near} near-duplicate), e.g. "
                    f"{_short(ex['eval'])!r} ~ {_short(ex['train'])!r}; train on other prompts or evaluate on "
                    "another set")
