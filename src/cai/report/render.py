"""Lay the report model out as one HTML file: a Jinja template with autoescaping (data text is
always escaped), inline CSS and script read from package data, charts as inline SVG, and the
examples as a JSON blob that the script draws page by page.

The page loads nothing: a Content-Security-Policy forbids every fetch, and lets only the one
script whose hash it names run, so text that slipped into markup still could not execute.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from importlib import resources
from typing import Any

from cai.report.collect import fmt_value, is_share


def _asset(name: str) -> str:
    return (resources.files("cai.report") / "templates" / name).read_text(encoding="utf-8")


def json_for_script(data: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&``
    (so no ``</script>`` or ``<!--`` can end the element early) and no line separators."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def _metric_cell(m: dict[str, Any] | None, name: str) -> dict[str, str]:
    if not m or m.get("value") is None:
        return {"value": "–", "ci": "", "n": "", "help": ""}
    ci = m.get("ci")
    share = is_share(name, m["value"])
    if ci:
        lo, hi = ci
        ci_text = f"[{lo * 100:.1f}, {hi * 100:.1f}]" if share else f"[{lo:.4g}, {hi:.4g}]"
    else:
        ci_text = ""
    return {"value": fmt_value(name, m["value"]), "ci": ci_text, "n": "" if m.get("n") is None else str(m["n"]),
            "help": m.get("help") or ""}


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return ""
    s = int(round(seconds))
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"


def _pct(v: Any, digits: int = 0) -> str:
    return "–" if not isinstance(v, (int, float)) else f"{v * 100:.{digits}f}%"


def _num(v: Any, digits: int = 3) -> str:
    return "–" if not isinstance(v, (int, float)) else f"{v:.{digits}g}"


def _short_time(t: Any) -> str:
    if not t:
        return ""
    try:
        return dt.datetime.fromisoformat(str(t).replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return str(t)


def render_html(model: dict[str, Any], *, title: str, sources: list[str]) -> str:
    import jinja2
    from markupsafe import Markup

    env = jinja2.Environment(autoescape=True, extensions=["jinja2.ext.do"], undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(metric=_metric_cell, duration=_duration, pct=_pct, num=_num, when=_short_time,
                       svg=lambda s: Markup(s or ""))  # charts are escaped by cai.report.svg
    script = _asset("report.js")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    kinds: dict[str, int] = {}
    for it in model["examples"]:
        kinds[it["kind"]] = kinds.get(it["kind"], 0) + 1
    from cai.provenance import cai_version

    template = env.from_string(_asset("report.html.j2"))
    return template.render(
        m=model, title=title, sources=sources, kinds=kinds, css=Markup(_asset("report.css")), script=Markup(script),
        data=Markup(json_for_script({"examples": model["examples"]})),
        csp=f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-{digest}'",
        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), version=cai_version())
