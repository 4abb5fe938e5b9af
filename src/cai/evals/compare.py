"""``cai compare RESULT...``: eval results side by side, and the helpfulness-against-harmlessness
trade-off plot (the CAI paper's Figure 2).

Columns are runs: one per model named in the result files, in the order first seen (so
``cai compare base/*.json sft/*.json rl/*.json --labels base,sft,rl`` gives three columns whatever
tasks each folder holds). Rows are ``TASK.METRIC``. A pairwise result (several models in one file)
puts each model's Elo and win rate in that model's column. A cell is the value with its 95%
interval; rates are shown in percent.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from cai.errors import CAIError
from cai.evals.results import EvalResult, Metric, read_result
from cai.outputs import figure_metadata

# The trade-off plot's default axes: the first metric present in any column wins.
DEFAULT_X = ("helpfulness.win_rate", "hhh.helpful_accuracy", "ifeval.prompt_strict_accuracy")
DEFAULT_Y = ("harmlessness.harmless_rate", "hhh.harmless_accuracy")


@dataclass
class Column:
    model: str
    label: str
    metrics: dict[str, Metric] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def columns(results: Sequence[EvalResult], files: Sequence[str] | None = None,
            labels: Sequence[str] | None = None) -> list[Column]:
    """Group result metrics into one column per model (a second result of the same task for the
    same model opens a new column)."""
    files = list(files) if files is not None else [""] * len(results)
    cols: list[Column] = []

    def column_for(model: str, rows: Sequence[str]) -> Column:
        for c in cols:
            if c.model == model and not (set(rows) & set(c.metrics)):
                return c
        c = Column(model, model)
        cols.append(c)
        return c

    for res, f in zip(results, files):
        if res.task == "pairwise" and res.breakdown.get("by_model"):
            for model, ms in res.breakdown["by_model"].items():
                rows = {f"pairwise.{k}": m for k, m in ms.items()}
                c = column_for(model, list(rows))
                c.metrics.update(rows)
                c.files.append(f)
            continue
        rows = {f"{res.task}.{k}": m for k, m in res.metrics.items()}
        c = column_for(res.model or Path(f).stem, list(rows))
        c.metrics.update(rows)
        c.files.append(f)
    if labels:
        if len(labels) != len(cols):
            raise CAIError(f"--labels gives {len(labels)} names for {len(cols)} runs "
                           f"({', '.join(c.model for c in cols)}); give one label per run, in that order")
        for c, lab in zip(cols, labels):
            c.label = lab
    else:
        short = [_short_name(c.model) for c in cols]
        for c, s in zip(cols, short):
            c.label = s if short.count(s) == 1 else c.model
    return cols


def _short_name(model: str) -> str:
    """``hf:/abs/runs/sft`` -> ``sft``; ``smollm2-135m`` stays."""
    tail = model.split(":", 1)[-1].rstrip("/").split("/")[-1]
    return tail or model


def load(paths: Sequence[str], labels: Sequence[str] | None = None) -> list[Column]:
    if not paths:
        raise CAIError("no result files given; pass files written by cai eval TASK -o FILE.json")
    return columns([read_result(p) for p in paths], [str(p) for p in paths], labels)


def rows_of(cols: Sequence[Column]) -> list[str]:
    seen: dict[str, None] = {}
    for c in cols:
        for k in c.metrics:
            seen.setdefault(k, None)
    return list(seen)


def fmt(m: Metric | None, *, percent: bool) -> str:
    if m is None or m.value is None or (isinstance(m.value, float) and math.isnan(m.value)):
        return "-"
    scale, digits = (100.0, 1) if percent else (1.0, 0 if abs(m.value) >= 100 else 3)
    text = f"{scale * m.value:.{digits}f}"
    if m.ci is not None and all(v is not None and math.isfinite(v) for v in m.ci):
        text += f" [{scale * m.ci[0]:.{digits}f}, {scale * m.ci[1]:.{digits}f}]"
    return text


def _is_rate(row: str, cols: Sequence[Column]) -> bool:
    vals = [c.metrics[row].value for c in cols if row in c.metrics and c.metrics[row].value is not None]
    return all(0.0 <= v <= 1.0 for v in vals if math.isfinite(v)) and not row.split(".", 1)[1].startswith("elo")


def table_rows(cols: Sequence[Column]) -> list[list[str]]:
    out = []
    for row in rows_of(cols):
        pct = _is_rate(row, cols)
        out.append([row + (" %" if pct else "")] + [fmt(c.metrics.get(row), percent=pct) for c in cols])
    return out


def metrics_table(results: Sequence[EvalResult], labels: Sequence[str] | None = None, cols: Sequence[Column] | None = None):
    """A rich Table: rows TASK.METRIC, one column per run, value [95% CI]."""
    from rich.table import Table

    cols = list(cols) if cols is not None else columns(results, labels=labels)
    table = Table(title="value [95% CI]")
    table.add_column("metric", no_wrap=True)
    for c in cols:
        table.add_column(c.label, justify="right", no_wrap=True)
    for row in table_rows(cols):
        table.add_row(*row)
    return table


def markdown_table(cols: Sequence[Column]) -> str:
    head = "| metric | " + " | ".join(c.label for c in cols) + " |"
    sep = "|---|" + "---:|" * len(cols)
    return "\n".join([head, sep] + ["| " + " | ".join(r) + " |" for r in table_rows(cols)])


def pick_metric(cols: Sequence[Column], wanted: str | None, defaults: Sequence[str], axis: str) -> str:
    available = rows_of(cols)
    if wanted:
        if wanted not in available:
            raise CAIError(f"--{axis} {wanted}: no result has it; available: {', '.join(available) or 'none'}")
        return wanted
    for d in defaults:
        if d in available:
            return d
    raise CAIError(f"no {axis} metric for the trade-off plot: none of {', '.join(defaults)} is in these results; "
                   f"pass --{axis} TASK.METRIC (available: {', '.join(available) or 'none'})")


def pick_axes(cols: Sequence[Column], x: str | None, y: str | None) -> tuple[str, str]:
    """The axes asked for, or among the defaults the pair that the most runs have both of."""
    xs = [pick_metric(cols, x, DEFAULT_X, "x")] if x else [d for d in DEFAULT_X if d in rows_of(cols)]
    ys = [pick_metric(cols, y, DEFAULT_Y, "y")] if y else [d for d in DEFAULT_Y if d in rows_of(cols)]
    if not xs:
        pick_metric(cols, None, DEFAULT_X, "x")  # raises, naming what is available
    if not ys:
        pick_metric(cols, None, DEFAULT_Y, "y")
    both = [(sum(a in c.metrics and b in c.metrics for c in cols), -k, a, b)
            for k, (a, b) in enumerate((a, b) for a in xs for b in ys)]
    _, _, xm, ym = max(both)
    return xm, ym


def plot_tradeoff(cols: Sequence[Column], path: str | Path, *, x: str | None = None, y: str | None = None,
                  title: str = "") -> tuple[list[Path], list[str]]:
    """The trade-off scatter with 95% error bars, runs joined in order (a training trajectory).
    Writes PNG and SVG (``out.png`` -> also ``out.svg``); returns the files and a note per run
    left out for lack of a metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xm, ym = pick_axes(cols, x, y)
    points, skipped = [], []
    for c in cols:
        mx, my = c.metrics.get(xm), c.metrics.get(ym)
        missing = [n for n, m in ((xm, mx), (ym, my)) if m is None or m.value is None or not math.isfinite(m.value)]
        if missing:
            skipped.append(f"{c.label}: no {' or '.join(missing)}; left out of the plot")
            continue
        points.append((c.label, mx, my))
    if not points:
        raise CAIError(f"no run has both {xm} and {ym}; " + "; ".join(skipped))

    def err(m: Metric) -> list[float]:
        if m.ci is None or not all(v is not None and math.isfinite(v) for v in m.ci):
            return [0.0, 0.0]
        return [max(0.0, m.value - m.ci[0]), max(0.0, m.ci[1] - m.value)]

    fig, ax = plt.subplots(figsize=(6, 5))
    xs, ys = [p[1].value for p in points], [p[2].value for p in points]
    if len(points) > 1:
        ax.plot(xs, ys, "-", color="0.7", zorder=1)
    for k, (label, mx, my) in enumerate(points):
        ax.errorbar(mx.value, my.value, xerr=[[err(mx)[0]], [err(mx)[1]]], yerr=[[err(my)[0]], [err(my)[1]]],
                    fmt="o", capsize=4, color=f"C{k % 10}", label=label, zorder=2)
        ax.annotate(label, (mx.value, my.value), textcoords="offset points", xytext=(6, 6), fontsize=9)
    ax.set_xlabel(f"{xm}  (helpfulness)")
    ax.set_ylabel(f"{ym}  (harmlessness)")
    ax.set_title(title or "Helpfulness vs harmlessness (95% CIs)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    outs = [p.with_suffix(".png"), p.with_suffix(".svg")]
    for o in outs:
        fig.savefig(o, dpi=120, metadata=figure_metadata(o))
    plt.close(fig)
    return outs, skipped


def print_table(cols: Sequence[Column], *, markdown: bool = False) -> None:
    if markdown:
        print(markdown_table(cols))
        return
    from rich.console import Console

    Console(width=None if sys.stdout.isatty() else 160).print(metrics_table([], cols=cols))


def describe(cols: Sequence[Column]) -> list[str]:
    return [f"{c.label}: {c.model} ({', '.join(f for f in c.files if f)})" for c in cols]


def parse_labels(text: str | None) -> list[str] | None:
    if not text:
        return None
    labels = [s.strip() for s in text.split(",")]
    if any(not s for s in labels):
        raise CAIError(f"--labels {text!r}: an empty name; give comma-separated names like base,sft,rl")
    return labels


def plot_outputs(path: str, *, inputs: Sequence[str] = (), overwrite: bool = False) -> Any:
    """The --plot path, once its PNG and SVG are known to be writable there: new files, cai's own
    plots, or (``overwrite``) anything but an input."""
    from cai.outputs import check_file, check_target

    p = Path(path)
    if p.is_dir():
        raise CAIError(f"--plot {path}: is a folder; name a file such as {p / 'tradeoff.png'}")
    check_target(p, flag="--plot", inputs=inputs)
    if p.suffix not in (".png", ".svg"):
        raise CAIError(f"--plot {path}: name a .png (an .svg is written beside it) or .svg file")
    for out, kind in ((p.with_suffix(".png"), "png"), (p.with_suffix(".svg"), "svg")):
        check_file(out, kind, flag="--plot", inputs=inputs, overwrite=overwrite, example="tradeoff.png")
    return p
