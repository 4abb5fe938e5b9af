"""What each stage of ``cai run`` calls: the same config class and public function as the stage's
own command, so ``cai run`` holds no logic that ``cai critique``, ``cai sft``, ... lack.

``python -m cai.run.stages STEP.json`` runs one step in a process of its own (the runner starts
it): each stage's memory (a vLLM engine, a model being trained) is returned to the system when the
step ends, and the runner reads the step's peak memory from the finished process.
``python -m cai.run.stages STEP1.json STEP2.json ...`` runs eval steps of one model in one process
(:func:`shared_model`), one after the other, on one engine started by the first that needs it.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

from cai.errors import CAIError
from cai.quiet import quiet_libraries
from cai.run.processes import now

# stage -> ("module:ConfigClass", "module:function"). The function takes the config and returns a
# summary dict (JSON-friendly), and resumes when its output already holds part of the work.
STAGES: dict[str, tuple[str, str]] = {
    "generate": ("cai.generation:GenerateConfig", "cai.generation:generate_file"),
    "refusals": ("cai.refusals:RefusalsConfig", "cai.refusals:write_refusals"),
    "critique": ("cai.critique.engine:CritiqueConfig", "cai.critique.engine:run_critique"),
    "sft": ("cai.train.sft:SFTRunConfig", "cai.train.sft:run_sft"),
    "label": ("cai.label.engine:LabelConfig", "cai.label.engine:run_label"),
    "reward": ("cai.train.reward:RewardTrainConfig", "cai.train.reward:run_reward"),
    "ppo": ("cai.train.ppo:PPORunConfig", "cai.train.ppo:run_ppo"),
    "dpo": ("cai.train.dpo:DPORunConfig", "cai.train.dpo:run_dpo"),
    "rloo": ("cai.train.rloo:RlooConfig", "cai.train.rloo:run_rloo"),
    "report": ("cai.report:ReportConfig", "cai.report:build_report"),
}
# eval task -> ("module:ConfigClass", "module:function"); the function returns an EvalResult,
# which the step writes to the config's output, as `cai eval TASK -o` does.
EVAL_TASKS: dict[str, tuple[str, str]] = {
    "harmlessness": ("cai.evals.tasks.harmlessness:HarmlessnessConfig", "cai.evals.tasks.harmlessness:evaluate_harmlessness"),
    "over-refusal": ("cai.evals.tasks.over_refusal:OverRefusalConfig", "cai.evals.tasks.over_refusal:evaluate_over_refusal"),
    "hhh": ("cai.evals.tasks.hhh:HHHConfig", "cai.evals.tasks.hhh:evaluate_hhh"),
    "truthfulqa": ("cai.evals.tasks.truthfulqa:TruthfulQAConfig", "cai.evals.tasks.truthfulqa:evaluate_truthfulqa"),
    "helpfulness": ("cai.evals.tasks.helpfulness:HelpfulnessConfig", "cai.evals.tasks.helpfulness:evaluate_helpfulness"),
    "ifeval": ("cai.evals.tasks.ifeval:IFEvalConfig", "cai.evals.tasks.ifeval:evaluate_ifeval"),
}
# eval task -> "module:function" giving the texts of the prompts it would evaluate, from its config
# alone (no model): what `cai run` compares with the run's training prompts before anything runs.
EVAL_PROMPTS: dict[str, str] = {
    "harmlessness": "cai.evals.tasks.harmlessness:prompt_texts",
    "over-refusal": "cai.evals.tasks.over_refusal:prompt_texts",
    "hhh": "cai.evals.tasks.hhh:prompt_texts",
    "truthfulqa": "cai.evals.tasks.truthfulqa:prompt_texts",
    "helpfulness": "cai.evals.tasks.helpfulness:prompt_texts",
    "ifeval": "cai.evals.tasks.ifeval:prompt_texts",
}


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def stage_class(stage: str) -> type:
    """The config class of a stage other than eval (whose class depends on the task)."""
    return _load(STAGES[stage][0])


def eval_task_classes() -> dict[str, type]:
    """Eval task -> its config class, for the tasks a run's eval section may list."""
    return {task: _load(cls_ref) for task, (cls_ref, _) in EVAL_TASKS.items()}


def stage_entry(stage: str, config: dict[str, Any]) -> tuple[type, Callable[..., Any], dict[str, Any]]:
    """(config class, function, config fields) for a step; eval steps pick their task's entry."""
    if stage == "eval":
        config = dict(config)
        task = config.pop("task")
        if task not in EVAL_TASKS:
            raise CAIError(f"run file: eval task {task!r} is unknown; known tasks: {', '.join(sorted(EVAL_TASKS)) or 'none'}")
        cls_ref, fn_ref = EVAL_TASKS[task]
    elif stage in STAGES:
        cls_ref, fn_ref = STAGES[stage]
    else:
        raise CAIError(f"run file: stage {stage!r} is not available in this version of cai")
    return _load(cls_ref), _load(fn_ref), config


def build_stage_config(stage: str, config: dict[str, Any], *, where: str) -> tuple[Any, Callable[..., Any]]:
    """Validate a step's config the way its command does (unknown keys and bad values are errors)."""
    from cai.config import build_config

    cls, fn, fields = stage_entry(stage, config)
    return build_config(cls, fields, where=where), fn


def eval_prompt_texts(task: str, config: Any) -> list[str] | None:
    """The prompt texts of an eval step's built config; None for a task that cannot tell."""
    ref = EVAL_PROMPTS.get(task)
    return _load(ref)(config) if ref else None


def shared_model(stage: str, config: dict[str, Any]) -> str | None:
    """The model of an eval step whose task takes a ready backend (``backend=``), which the steps
    before it in the same process may have started; None for every other step. The eval tasks
    load their model with ``load_backend(model)`` and no other setting, so the model alone decides
    whether two steps can share one. Helpfulness loads three models (``model=``, baseline, judge)
    and is never shared."""
    if stage != "eval" or not isinstance(config.get("model"), str):
        return None
    _, fn, _ = stage_entry(stage, config)
    return config["model"] if "backend" in inspect.signature(fn).parameters else None


def run_step(stage: str, config: dict[str, Any], *, where: str, backend: Any = None) -> dict[str, Any]:
    cfg, fn = build_stage_config(stage, config, where=where)
    summary = fn(cfg, backend=backend) if backend is not None else fn(cfg)
    if hasattr(summary, "metrics") and hasattr(summary, "to_json"):  # an EvalResult
        from cai.evals.results import write_result

        write_result(summary, cfg.output)
        return {"task": summary.task, "metrics": {k: m.to_json() for k, m in summary.metrics.items()}}
    return summary if isinstance(summary, dict) else {}


def _run_file(path: Path, shared: dict[str, Any] | None, options: dict[str, dict[str, Any]] | None = None) -> int:
    """Run the step of one JSON file and write its summary beside it; its exit code. ``shared``
    (model -> :class:`cai.backends.deferred.Deferred`) is the process's engines when it runs
    several steps, ``options`` (model -> load_backend options) how to start them; None for a step
    alone in its process, which loads its own as its command does."""
    step = json.loads(path.read_text())
    where = f"run file, section {step['section']}"
    if step.get("announce"):  # the runner's "[n/N] name" line of a step after the first in this process
        print(step["announce"], file=sys.stderr)
    started, t0 = now(), time.monotonic()
    try:
        backend = None
        model = shared_model(step["stage"], step["config"]) if shared is not None else None
        if model is not None:
            from cai.backends.deferred import Deferred

            backend = shared.setdefault(model, Deferred(model, **(options or {}).get(model, {})))
        shared_backend = {"backend": backend} if backend is not None else {}
        summary = run_step(step["stage"], step["config"], where=where, **shared_backend)
    except KeyboardInterrupt:
        return 130
    except (CAIError, ValueError, FileNotFoundError, KeyError) as e:
        # The step names the place once: "in step label", not "in step label: run file, section label".
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        msg = msg[len(where):].lstrip(": ") if msg.startswith(where) else msg
        print(f"cai: error in step {step['name']}: {msg}", file=sys.stderr)
        return 2  # cai.run.processes.STEP_ERROR: the runner says to fix the cause, not to resume
    # Wrapped, so that a summary that is itself a run record is not mistaken for one by the report.
    # The step's own time and clock, for the runner, which sees only the whole process when it runs several.
    path.with_name("summary.json").write_text(json.dumps(
        {"step": step["name"], "summary": summary, "started": started, "ended": now(),
         "seconds": round(time.monotonic() - t0, 1)}, indent=2, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the steps described by JSON files, in order, stopping at the first that fails; each
    writes its summary beside its file. Eval steps of one model share one engine."""
    import signal

    # The runner interrupts this process with SIGINT (its own SIGTERM passed on). A runner started in
    # the background (`nohup cai run ... &`) has SIGINT ignored, which this process would inherit, and
    # Python then installs no handler: the step ran to its end before the runner could exit.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    paths = [Path(p) for p in (argv or sys.argv[1:])]
    shared: dict[str, Any] | None = {} if len(paths) > 1 else None
    options = group_start_options(paths) if shared is not None else None
    # One quiet scope for all the steps: an engine started in one step logs in the next and at close.
    with quiet_libraries():  # `cai run --verbose` reaches here as CAI_VERBOSE=1
        try:
            for path in paths:
                code = _run_file(path, shared, options)
                if code:
                    return code
            return 0
        finally:
            for backend in (shared or {}).values():
                backend.close()  # frees a vLLM engine's workers now, not at interpreter exit


def job_tokens(stage: str, config: dict[str, Any]) -> int | None:
    """At most how many tokens an eval step generates (its prompts x its answers' token limit);
    None when it cannot tell (a task that scores options, an unreadable config)."""
    if stage != "eval":
        return None
    try:
        cfg, _ = build_stage_config(stage, config, where="run file")
        texts = eval_prompt_texts(config.get("task"), cfg)
    except (CAIError, ValueError, KeyError, OSError):
        return None  # the step itself reports it when it runs
    limit = getattr(cfg, "max_tokens", None)
    return len(texts) * limit if texts is not None and isinstance(limit, int) else None


def group_start_options(paths: list[Path]) -> dict[str, dict[str, Any]]:
    """Shared model -> the load_backend options its group's whole job calls for
    (:func:`cai.backends.start_options`: a small group starts vLLM without its compile warm-up)."""
    from cai.backends import start_options

    steps = [json.loads(p.read_text()) for p in paths]
    totals: dict[str, int | None] = {}
    for step in steps:
        model = shared_model(step["stage"], step["config"])
        if model is not None:
            n = job_tokens(step["stage"], step["config"])
            prev = totals.get(model, 0)
            totals[model] = None if n is None or prev is None else prev + n
    return {m: start_options(m, n) for m, n in totals.items()}


if __name__ == "__main__":
    raise SystemExit(main())
