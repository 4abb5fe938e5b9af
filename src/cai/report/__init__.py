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
from cai.outputs import overwrite_option

__all__ = ["ReportConfig", "build_report", "default_output"]


@dataclass
class ReportConfig:
    inputs: tuple[str, ...] = option((), help="run folders or cai files to report on")
    output: str | None = option(None, help="HTML file to write (default: DIR/report.html for one folder, else "
                                "report.html)", flags=("-o", "--output"))
    title: str | None = option(None, help="page title (default: from the input's name)")
    max_examples: int = option(5000, help="most examples embedded per input file; the page pages through them")
    screenshot: str | None = option(None, help="also render the page in headless Chromium and save a PNG here")
    overwrite: bool = overwrite_option()

    def __post_init__(self) -> None:
        self.inputs = tuple(self.inputs)
        if self.max_examples < 0:
            raise ValueError(f"max_examples must be >= 0, got {self.max_examples}")


def default_output(inputs: Sequence[str]) -> Path:
    if len(inputs) == 1 and Path(inputs[0]).is_dir():
        return Path(inputs[0]) / "report.html"
    return Path("report.html")


def check_outputs(config: ReportConfig) -> Path:
    """The page and the screenshot, before any work: each must be new, or cai's own page or
    screenshot, or ``--overwrite``; never an input. Returns the page's path."""
    from cai.outputs import check_file, check_target, inputs_of, plot_suffix

    inputs = inputs_of(config)
    out = Path(config.output) if config.output else default_output(config.inputs)
    check_file(out, "html", flag="-o", inputs=inputs, overwrite=config.overwrite, example="report.html")
    if not out.parent.exists():
        raise CAIError(f"{out.parent}: no such folder for the output; create it or pick another -o")
    if config.screenshot:
        check_target(config.screenshot, flag="--screenshot", example="report.png", inputs=inputs)
        plot_suffix(config.screenshot, "--screenshot")
        check_file(config.screenshot, "png", flag="--screenshot", inputs=inputs, overwrite=config.overwrite)
    return out


def _write(path: Path, data: bytes) -> None:
    """Whole or not at all: a temporary beside it, then a rename. On a full disk the temporary is
    removed and the error says so (there is nothing to resume: the page is made in one go)."""
    import errno
    import os

    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        full = e.errno in (errno.ENOSPC, errno.EDQUOT)
        why = "the disk is full" if full else (e.strerror or str(e)).lower()
        fix = "free some space and run the same command again" if full else "pass another path"
        raise CAIError(f"cannot write {path}: {why}; nothing was written, {fix}") from None


def build_report(config: ReportConfig) -> dict[str, Any]:
    """Write the report; returns the output path and what went into it."""
    from cai.report.collect import collect
    from cai.report.discover import discover
    from cai.report.render import render_html

    if not config.inputs:
        raise CAIError("nothing to report on; pass a run folder or files: cai report DIR or cai report FILE...")
    out = check_outputs(config)
    found = discover(config.inputs)
    if found.empty():
        raise CAIError(f"found nothing to report in {', '.join(config.inputs)}: no cai_run.json, eval result, "
                       "critique or preference file")
    model = collect(found, max_examples=config.max_examples)
    title = config.title or ("cai report · " + (Path(config.inputs[0]).resolve().name if len(config.inputs) == 1
                                                  else f"{len(config.inputs)} inputs"))
    html = render_html(model, title=title, sources=list(config.inputs))
    _write(out, html.encode("utf-8"))
    shot = None
    if config.screenshot:
        from cai.outputs import mark_png
        from cai.report.browser import Page

        with Page() as page:
            page.open(out.resolve().as_uri())
            data = page.png()  # bytes, not a file: the one write below is the one that can fail
        _write(Path(config.screenshot), mark_png(data))  # marked as cai's, so a rerun may replace it
        shot = config.screenshot
    kinds: dict[str, int] = {}
    for it in model["examples"]:
        kinds[it["kind"]] = kinds.get(it["kind"], 0) + 1
    return {"output": str(out), "bytes": len(html.encode("utf-8")), "screenshot": shot,
            "stages": len(model["stages"]), "training_runs": len(model["training"]),
            "eval_results": len(model["eval_results"]) + len(model["redteam"]) + len(model["labelers"]),
            "examples": kinds}
