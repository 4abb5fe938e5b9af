"""``cai report``: one self-contained HTML page about a run folder or any set of cai files.

:func:`build_report` finds what the inputs hold (:mod:`cai.report.discover`), reads it into plain
data and SVG charts (:mod:`cai.report.collect`), and lays it out (:mod:`cai.report.render`). The
page needs no network: styles, script, charts and data are all inline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from cai.config import option
from cai.errors import CAIError

__all__ = ["ReportConfig", "build_report", "default_output"]


@dataclass
class ReportConfig:
    inputs: tuple[str, ...] = option((), help="run folders or cai files to report on")
    output: str | None = option(None, help="HTML file to write (default: DIR/report.html for one folder, else "
                                "report.html)", flags=("-o", "--output"))
    title: str | None = option(None, help="page title (default: from the input's name)")
    max_examples: int = option(5000, help="most examples embedded per input file; the page pages through them")
    screenshot: str | None = option(None, help="also render the page in headless Chromium and save a PNG here")

    def __post_init__(self) -> None:
        self.inputs = tuple(self.inputs)
        if self.max_examples < 0:
            raise ValueError(f"max_examples must be >= 0, got {self.max_examples}")


def default_output(inputs: Sequence[str]) -> Path:
    if len(inputs) == 1 and Path(inputs[0]).is_dir():
        return Path(inputs[0]) / "report.html"
    return Path("report.html")


def build_report(config: ReportConfig) -> dict[str, Any]:
    """Write the report; returns the output path and what went into it."""
    from cai.report.collect import collect
    from cai.report.discover import discover
    from cai.report.render import render_html

    if not config.inputs:
        raise CAIError("nothing to report on; pass a run folder or files: cai report DIR or cai report FILE...")
    out = Path(config.output) if config.output else default_output(config.inputs)
    if out.exists() and out.is_dir():
        raise CAIError(f"{out} is a folder; pass -o FILE.html")
    if not out.parent.exists():
        raise CAIError(f"{out.parent}: no such folder for the output; create it or pick another -o")
    found = discover(config.inputs)
    if found.empty():
        raise CAIError(f"found nothing to report in {', '.join(config.inputs)}: no cai_run.json, eval result, "
                       "critique or preference file")
    model = collect(found, max_examples=config.max_examples)
    title = config.title or ("cai report · " + (Path(config.inputs[0]).resolve().name if len(config.inputs) == 1
                                                  else f"{len(config.inputs)} inputs"))
    html = render_html(model, title=title, sources=list(config.inputs))
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)
    shot = None
    if config.screenshot:
        from cai.report.browser import Page

        with Page() as page:
            page.open(out.resolve().as_uri())
            shot = str(page.screenshot(config.screenshot))
    kinds: dict[str, int] = {}
    for it in model["examples"]:
        kinds[it["kind"]] = kinds.get(it["kind"], 0) + 1
    return {"output": str(out), "bytes": len(html.encode("utf-8")), "screenshot": shot,
            "stages": len(model["stages"]), "training_runs": len(model["training"]),
            "eval_results": len(model["eval_results"]) + len(model["redteam"]) + len(model["labelers"]),
            "examples": kinds}
