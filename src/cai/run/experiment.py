"""After the arms of a run: their eval results side by side, one column per arm.

Writes into the run folder ``compare.md`` (the table of ``cai compare``, value [95% CI], arms in
the order of the run file), ``tradeoff.png``/``.svg`` (helpfulness against harmlessness, as
``cai compare --plot`` draws it) and ``experiment.json`` (kind "cai-experiment": each arm's
evaluated model and result files), which ``cai report`` reads to show the same table and plot.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cai.errors import CAIError
from cai.run.plan import BASELINE_PREFIX, Step, resolve_refs

EXPERIMENT = "experiment.json"
TABLE = "compare.md"
PLOT = "tradeoff.png"
FALLBACK_X = "over-refusal.compliance_rate_safe"


def arm_results(arms: dict[str, list[Step]], run_dir: Path) -> dict[str, dict[str, Any]]:
    """Arm -> {"model": what its evals evaluated, "results": result files that exist, run-relative}."""
    out = {}
    for arm, steps in arms.items():
        # The arm's own model, not the base model its baseline steps (eval-base-*) evaluate.
        evals = [s for s in steps if s.stage == "eval" and not s.name.startswith(BASELINE_PREFIX)]
        files = [f"{s.folder}/{s.output}" for s in evals if (run_dir / s.folder / s.output).is_file()]
        # "@ppo-1/model" -> that arm's PPO folder, relative to the run folder
        model = resolve_refs(evals[0].config.get("model"), {s.name: Path(s.folder) for s in steps}) if evals else None
        out[arm] = {"model": model, "results": files}
    return out


def arm_columns(experiment: dict[str, Any], root: Path) -> list[Any]:
    """One ``cai.evals.compare.Column`` per arm that has results, labelled by the arm's name."""
    from cai.evals.compare import Column
    from cai.evals.results import read_result

    cols = []
    for arm in experiment.get("arms") or []:
        col = Column(model=str(arm.get("model") or arm["name"]), label=arm["name"])
        for f in arm.get("results") or []:
            r = read_result(root / f)
            col.metrics.update({f"{r.task}.{k}": m for k, m in r.metrics.items()})
            col.files.append(f)
        if col.metrics:
            cols.append(col)
    return cols


def _x_axis(cols: list[Any]) -> str | None:
    """The plot's default helpfulness axis, else XSTest compliance on safe prompts (the share of
    safe requests answered), as the report's own trade-off chart falls back to."""
    from cai.evals.compare import DEFAULT_X, rows_of

    rows = rows_of(cols)
    if any(x in rows for x in DEFAULT_X) or FALLBACK_X not in rows:
        return None
    return FALLBACK_X


def write_experiment(run_dir: Path, arms: dict[str, list[Step]]) -> dict[str, Any]:
    """Write experiment.json always, compare.md and the plot when any arm has results; returns
    what was written (paths relative to the run folder)."""
    from cai.evals.compare import describe, markdown_table, plot_tradeoff

    results = arm_results(arms, run_dir)
    experiment: dict[str, Any] = {"kind": "cai-experiment", "version": 1,
                                  "arms": [{"name": a, **r} for a, r in results.items()], "table": None, "plot": []}
    cols = arm_columns(experiment, run_dir)
    if cols:
        notes: list[str] = []
        try:
            files, skipped = plot_tradeoff(cols, run_dir / PLOT, x=_x_axis(cols),
                                           title="Helpfulness against harmlessness, per arm")
            experiment["plot"] = [f.name for f in files]
            notes += skipped
        except CAIError as e:  # no harmlessness metric in these results
            notes.append(f"no trade-off plot: {e}")
        missing = [a for a, r in results.items() if not r["results"]]
        lines = ["# Experiment: arms compared", "",
                 "One column per arm (in the run file's order); value [95% bootstrap CI], rates in percent.", "",
                 markdown_table(cols), ""]
        if experiment["plot"]:
            lines += [f"![helpfulness against harmlessness]({PLOT})", ""]
        lines += [f"- {line}" for line in describe(cols)]
        lines += [f"- {a}: no eval results yet" for a in missing] + [f"- note: {n}" for n in notes]
        (run_dir / TABLE).write_text("\n".join(lines) + "\n", encoding="utf-8")
        experiment["table"] = TABLE
    tmp = run_dir / (EXPERIMENT + ".tmp")
    tmp.write_text(json.dumps(experiment, indent=2) + "\n", encoding="utf-8")
    tmp.replace(run_dir / EXPERIMENT)
    return experiment
