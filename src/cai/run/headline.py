"""The lines ``cai run`` prints at the end of a run with ``eval: {baseline: true}``: each eval task's
headline metrics on the base model and on the final model, with their 95% intervals, whether the
intervals overlap, and where the report is. A rerun of a finished run prints them too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cai.run.plan import Step, baseline_pairs


def _result(step: Step, run_dir: Path) -> Any:
    from cai.evals.results import read_result

    path = run_dir / step.folder / step.output
    return read_result(path) if path.is_file() else None


def headline(plan: Any, run_dir: Path) -> list[str]:
    """The lines, or [] when no task has both results (no baseline, or the evals have not run)."""
    from cai.evals.before_after import rows

    groups: dict[str, list[Step]] = plan.arms or {"": plan.steps}
    found: list[tuple[str, str]] = []
    for arm, steps in groups.items():
        for task, base_step, final_step in baseline_pairs(steps):
            base, final = _result(base_step, run_dir), _result(final_step, run_dir)
            if base is None or final is None:
                continue
            for row in rows(base, final, headline_only=True):
                overlap = {True: "intervals overlap", False: "intervals do not overlap",
                           None: "no intervals"}[row.overlap]
                found.append((f"{arm + ': ' if arm else ''}{task} {row.metric}:", f"{row.line()}  ({overlap})"))
    if not found:
        return []
    width = max(len(label) for label, _ in found)
    lines = [f"  {label:<{width}} {text}" for label, text in found]
    reports = [s for s in plan.steps if s.stage == "report" and (run_dir / s.folder / s.output).is_file()]
    report = (f"report: {run_dir / reports[-1].folder / reports[-1].output}" if reports
              else f"report: none in this run (cai report {run_dir} writes one)")
    return ["cai run: base model -> final model, 95% intervals:", *lines, report]


def print_headline(plan: Any, run_dir: Path) -> None:
    for line in headline(plan, run_dir):
        print(line)
