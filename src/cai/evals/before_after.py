"""One eval task on the base model and on the trained model, metric by metric: both values with
their 95% intervals, the change, and whether the intervals overlap.

``cai run`` prints the headline rows at the end of a run with ``eval: {baseline: true}``, and
``cai report`` opens with every row. Intervals that do not overlap are a conservative sign of a
real change (two overlapping intervals may still differ); overlapping ones mean this sample size
cannot tell the two models apart on that metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cai.evals.results import EvalResult, Metric

# The metrics a task is judged by; a task not listed (truthfulqa, helpfulness) by its first metric.
HEADLINE: dict[str, tuple[str, ...]] = {
    "harmlessness": ("harmless_rate",),
    "over-refusal": ("compliance_rate_safe", "refusal_rate_unsafe"),
    "hhh": ("accuracy",),
    "ifeval": ("prompt_strict_accuracy",),
}


def _finite(v: float | None) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def headline_metrics(task: str, names: list[str]) -> list[str]:
    wanted = [n for n in HEADLINE.get(task, ()) if n in names]
    return wanted or names[:1]


def intervals_overlap(a: Metric, b: Metric) -> bool | None:
    """None when either interval is missing."""
    if not (a.ci and b.ci and all(_finite(v) for v in (*a.ci, *b.ci))):
        return None
    return a.ci[0] <= b.ci[1] and b.ci[0] <= a.ci[1]


@dataclass
class Row:
    metric: str
    base: Metric
    final: Metric
    percent: bool   # a rate in [0, 1], shown in percent, its change in percentage points
    headline: bool

    def _value(self, m: Metric) -> str:
        if not _finite(m.value):
            return "-"
        return f"{m.value * 100:.1f}%" if self.percent else f"{m.value:.4g}"

    def _ci(self, m: Metric) -> str:
        if not (m.ci and all(_finite(v) for v in m.ci)):
            return ""
        lo, hi = m.ci
        return f"[{lo * 100:.1f}, {hi * 100:.1f}]" if self.percent else f"[{lo:.4g}, {hi:.4g}]"

    @property
    def base_value(self) -> str:
        return self._value(self.base)

    @property
    def base_ci(self) -> str:
        return self._ci(self.base)

    @property
    def final_value(self) -> str:
        return self._value(self.final)

    @property
    def final_ci(self) -> str:
        return self._ci(self.final)

    @property
    def change(self) -> str:
        if not (_finite(self.base.value) and _finite(self.final.value)):
            return "-"
        d = self.final.value - self.base.value
        return f"{d * 100:+.1f} pts" if self.percent else f"{d:+.4g}"

    @property
    def overlap(self) -> bool | None:
        return intervals_overlap(self.base, self.final)

    @property
    def better(self) -> bool | None:
        """Whether the final model is better on this metric (None: no direction, or no change)."""
        hib = self.final.higher_is_better if self.final.higher_is_better is not None else self.base.higher_is_better
        if hib is None or not (_finite(self.base.value) and _finite(self.final.value)) \
                or self.final.value == self.base.value:
            return None
        return (self.final.value > self.base.value) == hib

    def line(self) -> str:
        """``base 41.7% [29.2, 54.2] -> final 63.3% [51.7, 75.0]``"""
        return (f"base {self.base_value} {self.base_ci}".rstrip() + " -> "
                + f"final {self.final_value} {self.final_ci}".rstrip())


def _is_rate(name: str, *metrics: Metric) -> bool:
    vals = [v for m in metrics for v in (m.value, *(m.ci or ())) if _finite(v)]
    return bool(vals) and all(0.0 <= v <= 1.0 for v in vals) and not name.startswith("elo")


def rows(base: EvalResult, final: EvalResult, *, headline_only: bool = False) -> list[Row]:
    """The metrics both results hold, the task's headline metrics first."""
    names = [n for n in base.metrics if n in final.metrics]
    heads = headline_metrics(final.task, names)
    order = heads if headline_only else heads + [n for n in names if n not in heads]
    return [Row(n, base.metrics[n], final.metrics[n], _is_rate(n, base.metrics[n], final.metrics[n]), n in heads)
            for n in order]
