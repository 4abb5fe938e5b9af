"""The one shape every evaluation writes (``cai eval TASK -o results.json``, ``cai redteam``), so
that ``cai compare`` and ``cai report`` read any of them the same way.

A result file is JSON::

    {
      "kind": "cai-eval-result", "version": 1,
      "task": "harmlessness",                       # or over-refusal, helpfulness, hhh, truthfulqa,
                                                    #    pairwise, grader, redteam
      "model": "hf:runs/sft",                       # the model evaluated ("" for a grader eval)
      "grader": {"name": "refusal-strings", "spec": "...", "agreement": {...} or null},
      "metrics": {"harmless_rate": {"value": 0.91, "ci": [0.87, 0.95], "n": 200,
                                    "higher_is_better": true, "help": "share of answers graded harmless"}},
      "breakdown": {"by_type": {"homonyms": {"compliance_rate": {...metric...}}}},
      "examples": "results.examples.jsonl",          # per-item records, path relative to this file
      "overlap": {"train_sources": [...], "exact": 0, "near": 0, "share": 0.0, "examples": [...]} or null,
      "provenance": {...}                            # cai.provenance.provenance(...) plus the config
    }

``metrics`` holds the headline numbers, each a :class:`Metric` with a 95% interval; ``breakdown``
holds the same metrics per group (prompt type, category, attack). ``overlap`` says how many of the
eval's prompts are exact or near-duplicates of the training prompts it was given
(:mod:`cai.evals.overlap`); ``null`` means not checked.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

KIND = "cai-eval-result"
VERSION = 1


@dataclass
class Metric:
    value: float
    ci: tuple[float, float] | None = None
    n: int | None = None
    higher_is_better: bool | None = None
    help: str = ""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci"] = list(self.ci) if self.ci is not None else None
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def mean_metric(values: Sequence[float], *, n_resamples: int, help: str = "",
                higher_is_better: bool | None = True, seed: int = 0) -> Metric:
    """The mean of per-item scores with its percentile-bootstrap 95% interval. ``n_resamples`` has
    no default: it is the eval's ``--bootstrap``, and a default here once let two evals ignore it."""
    from cai.evals.metrics import bootstrap_ci

    vals = [float(v) for v in values]
    value = sum(vals) / len(vals) if vals else float("nan")
    return Metric(value, bootstrap_ci(vals, n_resamples=n_resamples, seed=seed) if vals else None, len(vals),
                  higher_is_better, help)


@dataclass
class EvalResult:
    task: str
    model: str
    metrics: dict[str, Metric]
    grader: dict[str, Any] | None = None
    breakdown: dict[str, dict[str, dict[str, Metric]]] = field(default_factory=dict)
    examples: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    overlap: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": KIND, "version": VERSION, "task": self.task, "model": self.model, "grader": self.grader,
            "metrics": {k: m.to_json() for k, m in self.metrics.items()},
            "breakdown": {name: {group: {k: m.to_json() for k, m in ms.items()} for group, ms in groups.items()}
                          for name, groups in self.breakdown.items()},
            "examples": self.examples, "overlap": self.overlap, "provenance": self.provenance,
        }


def _metric(d: dict[str, Any]) -> Metric:
    ci = d.get("ci")
    value = d.get("value")
    return Metric(float("nan") if value is None else value, tuple(ci) if ci else None, d.get("n"),
                  d.get("higher_is_better"), d.get("help", ""))


def write_result(result: EvalResult, path: str | Path) -> Path:
    """Write atomically (temp file, then rename), so a kill never leaves half a result."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(p)
    return p


def read_result(path: str | Path) -> EvalResult:
    p = Path(path)
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: no such result file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{p}: not a JSON result file ({e})") from None
    if isinstance(d, dict) and d.get("eval") == "labeler" and isinstance(d.get("overall"), dict):
        from cai.evals.labeler import as_eval_result

        return as_eval_result(d)  # `cai eval labeler` writes its own richer shape
    if not isinstance(d, dict) or d.get("kind") != KIND:
        raise ValueError(f"{p}: not a cai eval result (no \"kind\": \"{KIND}\"); pass a file written by cai eval "
                         "or cai redteam")
    return EvalResult(
        task=d["task"], model=d.get("model", ""), grader=d.get("grader"),
        metrics={k: _metric(m) for k, m in d.get("metrics", {}).items()},
        breakdown={name: {g: {k: _metric(m) for k, m in ms.items()} for g, ms in groups.items()}
                   for name, groups in d.get("breakdown", {}).items()},
        examples=d.get("examples"), provenance=d.get("provenance", {}), overlap=d.get("overlap"),
    )
