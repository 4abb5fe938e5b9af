"""Small inline-SVG charts for the report: line charts (training curves), a scatter with error
bars (the helpfulness-harmlessness trade-off), horizontal bars with intervals (attack success
rates) and a histogram (p_chosen). Each returns one ``<svg>`` string; every piece of data text is
escaped here, so the caller may insert the result into the page as markup.
"""

from __future__ import annotations

import math
from html import escape
from typing import Sequence

PALETTE = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563")
FONT = "font-family=\"inherit\" font-size=\"11\""


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values (steps of 1, 2 or 5 x 10^k) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, v = [], start
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 12))
        v += step
    if ticks[-1] < hi:
        ticks.append(round(v, 12))
    return ticks


def fmt_num(v: float) -> str:
    """Compact axis labels: 0.25, 1.5k, 3e-05."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 10000:
        return f"{v / 1000:.0f}k"
    if a >= 1000:
        return f"{v / 1000:.1f}k".replace(".0k", "k")
    if a < 0.001:
        return f"{v:.0e}"
    return f"{v:.4g}"


def _pct(v: float) -> str:
    return f"{v * 100:.0f}%"


class _Frame:
    """Maps data to pixels inside the plot area and draws axes, grid and labels."""

    def __init__(self, width: int, height: int, xs: tuple[float, float], ys: tuple[float, float], *,
                 left: int = 52, right: int = 14, top: int = 26, bottom: int = 36, pct: tuple[bool, bool] = (False, False)):
        self.w, self.h = width, height
        self.l, self.r, self.t, self.b = left, right, top, bottom
        self.xt = nice_ticks(*xs)
        self.yt = nice_ticks(*ys)
        self.x0, self.x1 = self.xt[0], self.xt[-1]
        self.y0, self.y1 = self.yt[0], self.yt[-1]
        self.pct = pct

    def x(self, v: float) -> float:
        return self.l + (v - self.x0) / ((self.x1 - self.x0) or 1) * (self.w - self.l - self.r)

    def y(self, v: float) -> float:
        return self.h - self.b - (v - self.y0) / ((self.y1 - self.y0) or 1) * (self.h - self.t - self.b)

    def axes(self, title: str, xlabel: str, ylabel: str) -> list[str]:
        out = [f'<text x="{self.l}" y="15" class="c-title" {FONT} font-weight="600">{_e(title)}</text>'] if title else []
        for v in self.yt:
            y = self.y(v)
            label = _pct(v) if self.pct[1] else fmt_num(v)
            out.append(f'<line x1="{self.l}" x2="{self.w - self.r}" y1="{y:.1f}" y2="{y:.1f}" class="c-grid"/>')
            out.append(f'<text x="{self.l - 6}" y="{y + 3.5:.1f}" text-anchor="end" class="c-tick" {FONT}>{_e(label)}</text>')
        for v in self.xt:
            x = self.x(v)
            label = _pct(v) if self.pct[0] else fmt_num(v)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{self.h - self.b}" y2="{self.h - self.b + 4}" class="c-axis"/>')
            out.append(f'<text x="{x:.1f}" y="{self.h - self.b + 15}" text-anchor="middle" class="c-tick" {FONT}>{_e(label)}</text>')
        out.append(f'<line x1="{self.l}" x2="{self.w - self.r}" y1="{self.h - self.b}" y2="{self.h - self.b}" class="c-axis"/>')
        if xlabel:
            out.append(f'<text x="{(self.l + self.w - self.r) / 2:.0f}" y="{self.h - 4}" text-anchor="middle" '
                       f'class="c-label" {FONT}>{_e(xlabel)}</text>')
        if ylabel:
            cy = (self.t + self.h - self.b) / 2
            out.append(f'<text transform="translate(12 {cy:.0f}) rotate(-90)" text-anchor="middle" class="c-label" '
                       f'{FONT}>{_e(ylabel)}</text>')
        return out


def _svg(width: int, height: int, label: str, body: list[str]) -> str:
    return (f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'aria-label="{_e(label)}" xmlns="http://www.w3.org/2000/svg">' + "".join(body) + "</svg>")


def _smooth(ys: Sequence[float], half: int) -> list[float]:
    """A centred moving average: unlike an EMA it does not lag behind the curve."""
    out = []
    for i in range(len(ys)):
        window = ys[max(0, i - half): i + half + 1]
        out.append(sum(window) / len(window))
    return out


def _thin(xs: Sequence[float], ys: Sequence[float], limit: int) -> tuple[list[float], list[float]]:
    """At most ``limit`` points (every k-th, and always the last), so a long run stays light."""
    if len(xs) <= limit:
        return list(xs), list(ys)
    k = math.ceil(len(xs) / limit)
    idx = list(range(0, len(xs), k))
    if idx[-1] != len(xs) - 1:
        idx.append(len(xs) - 1)
    return [xs[i] for i in idx], [ys[i] for i in idx]


def line_chart(series: Sequence[tuple[str, Sequence[float], Sequence[float]]], *, title: str, xlabel: str = "step",
               ylabel: str = "", width: int = 440, height: int = 220, max_points: int = 400) -> str:
    """One or more (name, xs, ys) series. Long series (30+ points) are drawn faint with a moving
    average on top, so the trend reads through step-to-step noise."""
    pts = [(n, *_thin(xs, ys, max_points)) for n, xs, ys in series if len(xs)]
    if not pts:
        return ""
    allx = [x for _, xs, _ in pts for x in xs]
    ally = [y for _, _, ys in pts for y in ys]
    f = _Frame(width, height, (min(allx), max(allx)), (min(ally), max(ally)))
    body = f.axes(title, xlabel, ylabel)
    for i, (name, xs, ys) in enumerate(pts):
        color = PALETTE[i % len(PALETTE)]
        smooth = len(ys) >= 30
        path = " ".join(f"{f.x(x):.1f},{f.y(y):.1f}" for x, y in zip(xs, ys))
        if len(xs) == 1:
            body.append(f'<circle cx="{f.x(xs[0]):.1f}" cy="{f.y(ys[0]):.1f}" r="3" fill="{color}"><title>'
                        f'{_e(name)}: {_e(fmt_num(ys[0]))}</title></circle>')
            continue
        body.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.5" '
                    f'stroke-opacity="{0.3 if smooth else 1}"><title>{_e(name)}</title></polyline>')
        if smooth:
            sm = _smooth(ys, max(2, len(ys) // 25))
            spath = " ".join(f"{f.x(x):.1f},{f.y(y):.1f}" for x, y in zip(xs, sm))
            body.append(f'<polyline points="{spath}" fill="none" stroke="{color}" stroke-width="2">'
                        f'<title>{_e(name)} (smoothed)</title></polyline>')
    if len(pts) > 1:
        for i, (name, _, _) in enumerate(pts):
            y = 30 + 14 * i
            body.append(f'<rect x="{width - 130}" y="{y - 8}" width="10" height="3" fill="{PALETTE[i % len(PALETTE)]}"/>'
                        f'<text x="{width - 116}" y="{y - 3}" class="c-tick" {FONT}>{_e(name[:18])}</text>')
    return _svg(width, height, title, body)


def scatter_ci(points: Sequence[dict], *, title: str, xlabel: str, ylabel: str, width: int = 560,
               height: int = 380, show_title: bool = True) -> str:
    """Points {label, x, y, x_ci, y_ci} with their intervals as error bars; axes as percentages
    when every value lies in [0, 1]. Up and to the right is better on both axes."""
    if not points:
        return ""
    xs = [v for p in points for v in (p["x"], *(p.get("x_ci") or ()))]
    ys = [v for p in points for v in (p["y"], *(p.get("y_ci") or ()))]
    unit = all(0 <= v <= 1 for v in xs + ys)
    pad = lambda lo, hi: (lo - 0.05 * ((hi - lo) or 1), hi + 0.05 * ((hi - lo) or 1))  # noqa: E731
    xr, yr = pad(min(xs), max(xs)), pad(min(ys), max(ys))
    if unit:
        xr, yr = (max(0.0, xr[0]), min(1.0, xr[1])), (max(0.0, yr[0]), min(1.0, yr[1]))
    f = _Frame(width, height, xr, yr, left=56, bottom=42, top=26 if show_title else 14, pct=(unit, unit))
    body = f.axes(title if show_title else "", xlabel, ylabel)
    for i, p in enumerate(points):
        color = PALETTE[i % len(PALETTE)]
        cx, cy = f.x(p["x"]), f.y(p["y"])
        if p.get("x_ci"):
            a, b = (f.x(v) for v in p["x_ci"])
            body.append(f'<line x1="{a:.1f}" x2="{b:.1f}" y1="{cy:.1f}" y2="{cy:.1f}" stroke="{color}" stroke-width="1.5"/>')
        if p.get("y_ci"):
            a, b = (f.y(v) for v in p["y_ci"])
            body.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{a:.1f}" y2="{b:.1f}" stroke="{color}" stroke-width="1.5"/>')
        tip = f'{p["label"]}: x {p["x"]:.3f}, y {p["y"]:.3f}'
        body.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{color}" stroke="#fff" stroke-width="1.5">'
                    f'<title>{_e(tip)}</title></circle>')
        anchor = "end" if cx > width * 0.75 else "start"
        dx = -8 if anchor == "end" else 8
        body.append(f'<text x="{cx + dx:.1f}" y="{cy - 7:.1f}" text-anchor="{anchor}" class="c-point" {FONT} '
                    f'fill="{color}">{_e(p["label"][:40])}</text>')
    return _svg(width, height, title, body)


def bars_ci(rows: Sequence[dict], *, title: str, xlabel: str = "", width: int = 560, bar: int = 18) -> str:
    """Horizontal bars {label, value, ci, n}, one per row, on a 0-100% axis when values are
    shares, with the interval drawn as a whisker."""
    if not rows:
        return ""
    label_w = min(200, 12 + 6.5 * max(len(str(r["label"])) for r in rows))
    height = 34 + 40 + (bar + 8) * len(rows)
    vals = [v for r in rows for v in (r["value"], *(r.get("ci") or ()))]
    unit = all(0 <= v <= 1 for v in vals)
    hi = 1.0 if unit else max(vals) or 1.0
    f = _Frame(width, height, (0.0, hi), (0.0, 1.0), left=int(label_w), top=28, bottom=34, pct=(unit, False))
    body = [f'<text x="4" y="15" class="c-title" {FONT} font-weight="600">{_e(title)}</text>']
    for v in f.xt:
        x = f.x(v)
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{f.t}" y2="{height - f.b}" class="c-grid"/>')
        body.append(f'<text x="{x:.1f}" y="{height - f.b + 14}" text-anchor="middle" class="c-tick" {FONT}>'
                    f'{_e(_pct(v) if unit else fmt_num(v))}</text>')
    if xlabel:
        body.append(f'<text x="{(f.l + width - f.r) / 2:.0f}" y="{height - 4}" text-anchor="middle" class="c-label" '
                    f'{FONT}>{_e(xlabel)}</text>')
    for i, r in enumerate(rows):
        y = f.t + 6 + i * (bar + 8)
        w = max(f.x(r["value"]) - f.l, 0.0)
        n = f" (n={r['n']})" if r.get("n") is not None else ""
        body.append(f'<text x="{f.l - 6}" y="{y + bar / 2 + 4:.1f}" text-anchor="end" class="c-tick" {FONT}>'
                    f'{_e(str(r["label"])[:30])}</text>')
        body.append(f'<rect x="{f.l}" y="{y}" width="{w:.1f}" height="{bar}" rx="2" fill="{PALETTE[0]}" '
                    f'fill-opacity="0.75"><title>{_e(r["label"])}: {_e(fmt_num(r["value"]))}{_e(n)}</title></rect>')
        if r.get("ci"):
            a, b = (f.x(v) for v in r["ci"])
            m = y + bar / 2
            body.append(f'<path d="M{a:.1f} {m - 4:.1f}v8M{a:.1f} {m:.1f}H{b:.1f}M{b:.1f} {m - 4:.1f}v8" '
                        f'stroke="#111827" stroke-width="1.2" fill="none"/>')
    return _svg(width, height, title, body)


def histogram(values: Sequence[float], *, title: str, xlabel: str, lo: float = 0.0, hi: float = 1.0, bins: int = 10,
              width: int = 440, height: int = 200) -> str:
    if not values:
        return ""
    counts = [0] * bins
    for v in values:
        i = min(bins - 1, max(0, int((v - lo) / (hi - lo) * bins)))
        counts[i] += 1
    f = _Frame(width, height, (lo, hi), (0.0, float(max(counts))), left=44)
    body = f.axes(title, xlabel, "pairs")
    step = (hi - lo) / bins
    for i, c in enumerate(counts):
        x0, x1 = f.x(lo + i * step), f.x(lo + (i + 1) * step)
        y = f.y(c)
        body.append(f'<rect x="{x0 + 1:.1f}" y="{y:.1f}" width="{x1 - x0 - 2:.1f}" height="{f.y(0) - y:.1f}" '
                    f'fill="{PALETTE[2]}" fill-opacity="0.75"><title>{lo + i * step:.1f}-{lo + (i + 1) * step:.1f}: '
                    f'{c}</title></rect>')
    return _svg(width, height, title, body)
