"""The report's opening "Before and after" table: for a ``cai run`` folder whose manifest holds an
eval task run on the base model (``eval-base-TASK``, from ``eval: {baseline: true}``) and on the
final model (``eval-TASK``), every metric of both, the change and whether the 95% intervals
overlap. With arms, one table per arm and task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cai.run.plan import BASELINE_PREFIX


def _done(entries: dict[str, Any], ids: list[str]) -> dict[str, dict[str, Any]]:
    """Step name -> manifest entry, for the finished steps among ``ids``."""
    out = {}
    for i in ids:
        e = entries.get(i)
        if isinstance(e, dict) and e.get("status") == "done" and e.get("folder"):
            out[str(e.get("name") or i)] = e
    return out


def before_after(manifests: list[Path]) -> list[dict[str, Any]]:
    from cai.evals.before_after import rows
    from cai.evals.results import read_result

    tables = []
    for manifest in manifests:
        try:
            d = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        entries = d.get("stages")
        if d.get("kind") != "cai-run-manifest" or not isinstance(entries, dict):
            continue
        arms = d.get("arms") if isinstance(d.get("arms"), dict) else {"": list(entries)}
        for arm, ids in arms.items():
            steps = _done(entries, ids if isinstance(ids, list) else [])
            for name, entry in steps.items():
                task = name.removeprefix(BASELINE_PREFIX)
                if not name.startswith(BASELINE_PREFIX) or f"eval-{task}" not in steps:
                    continue
                paths = [manifest.parent / e["folder"] / "results.json" for e in (entry, steps[f"eval-{task}"])]
                if not all(p.is_file() for p in paths):
                    continue
                base, final = (read_result(p) for p in paths)
                found = rows(base, final)
                if not found:
                    continue
                tables.append({"arm": arm, "task": task, "base_model": base.model, "final_model": final.model,
                               "base_path": str(paths[0].relative_to(manifest.parent)),
                               "final_path": str(paths[1].relative_to(manifest.parent)),
                               "rows": [{"metric": r.metric, "headline": r.headline,
                                         "help": r.final.help or r.base.help, "base": r.base_value,
                                         "base_ci": r.base_ci, "final": r.final_value, "final_ci": r.final_ci,
                                         "change": r.change, "overlap": r.overlap, "better": r.better}
                                        for r in found],
                               "apart": [r.metric for r in found if r.overlap is False]})
    return tables
