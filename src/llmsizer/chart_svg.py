"""A small SVG renderer for the Vega-Lite subset `llmsizer.charts` produces: layers of bar
(stacked by color; or ranged from x to x2 along a nominal y, for timelines), line, point and rule
marks on linear or log quantitative scales, with a nominal band scale for bars, and the spec's
`description` as a note under the chart. The page's renderer (web/static/chart.js) follows the same layout
rules line for line, so a chart looks the same in the browser and in `--plot FILE.svg`.
"""

from __future__ import annotations

import math
from typing import Any
from xml.sax.saxutils import escape

PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b",
           "#9d755d", "#ff9da6", "#bab0ac")
LEFT, RIGHT, TOP, BOTTOM = 64, 130, 34, 48
NOTE_LINE = 14  # pixels per line of the note under a chart
NOTE_CHAR = 6.5  # average advance of an 11-pixel character, for wrapping the note
FONT = "font-family=\"system-ui,Segoe UI,Helvetica,Arial,sans-serif\""


def _layers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    layers = spec.get("layer") or [spec]
    out = []
    for layer in layers:
        mark = layer.get("mark", "point")
        mark = mark if isinstance(mark, dict) else {"type": mark}
        data = (layer.get("data") or spec.get("data") or {}).get("values", [])
        out.append({"mark": mark, "enc": layer.get("encoding", {}), "values": data})
    return out


def nice_step(span: float, count: int = 5) -> float:
    """A round tick step (1, 2 or 5 times a power of ten) giving about `count` ticks."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / count
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * power:
            return m * power
    return 10 * power


class Scale:
    """A quantitative axis: linear (from zero for bars) or log10, mapped onto [0, length]."""

    def __init__(self, values: list[float], length: float, log: bool, zero: bool):
        self.log, self.length = log, length
        vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)
                and (v > 0 or not log)]
        if not vals:
            vals = [1.0] if log else [0.0, 1.0]
        lo, hi = min(vals), max(vals)
        if log:
            self.lo, self.hi = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
            if self.hi == self.lo:
                self.hi += 1
            self.ticks = [10.0 ** e for e in range(int(self.lo), int(self.hi) + 1)]
        else:
            if zero:
                lo, hi = min(lo, 0.0), max(hi, 0.0)
            if hi == lo:
                hi = lo + 1
            step = nice_step(hi - lo)
            self.lo, self.hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
            n = round((self.hi - self.lo) / step)
            self.ticks = [self.lo + i * step for i in range(n + 1)]

    def __call__(self, v: float) -> float:
        if self.log:
            v = math.log10(max(v, 1e-300))
        return (v - self.lo) / (self.hi - self.lo) * self.length


def tick_label(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6 or a < 1e-3:
        return f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-")
    if a >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def _f(x: float) -> str:
    return f"{x:.1f}"


def render(spec: dict[str, Any], x0: float = 0, y0: float = 0) -> tuple[str, float, float]:
    """One chart as an SVG group at (x0, y0); returns (markup, width, height) of its box."""
    layers = _layers(spec)
    w, h = float(spec.get("width", 460)), float(spec.get("height", 260))
    parts: list[str] = []
    px, py = x0 + LEFT, y0 + TOP

    def field_values(channel: str) -> list[Any]:
        out = []
        for la in layers:
            f = la["enc"].get(channel, {}).get("field")
            if f:
                out += [v.get(f) for v in la["values"]]
        return out

    x_enc = next((la["enc"]["x"] for la in layers if "x" in la["enc"]), {})
    y_enc = next((la["enc"]["y"] for la in layers if "y" in la["enc"]), {})
    band = x_enc.get("type") in ("nominal", "ordinal")
    # a timeline: bars from x to x2, one row per category of y
    yband = not band and y_enc.get("type") in ("nominal", "ordinal")
    colors: list[Any] = []
    for v in field_values("color"):
        if v not in colors:
            colors.append(v)
    color_of = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(colors)}

    cats: list[Any] = []
    for v in field_values("x" if band else "y") if band or yband else []:
        if v not in cats:
            cats.append(v)
    # y values: stacked bar sums count toward the domain
    y_vals = [v for v in field_values("y") if isinstance(v, (int, float))]
    has_bar = any(la["mark"]["type"] == "bar" for la in layers)
    for la in layers:
        if la["mark"]["type"] == "bar" and not yband:
            yf, xf = la["enc"]["y"]["field"], la["enc"]["x"]["field"]
            sums: dict[Any, float] = {}
            for v in la["values"]:
                sums[v[xf]] = sums.get(v[xf], 0.0) + v[yf]
            y_vals += list(sums.values())
    ylog = y_enc.get("scale", {}).get("type") == "log"
    ys = Scale(y_vals, h, ylog, zero=has_bar or not ylog)
    xs = None if band else Scale([v for v in field_values("x") + field_values("x2")
                                  if isinstance(v, (int, float))],
                                 w, x_enc.get("scale", {}).get("type") == "log", zero=yband)
    step = (h if yband else w) / max(1, len(cats))

    def X(v: Any) -> float:
        if band:
            return px + (cats.index(v) + 0.5) * step
        assert xs is not None
        return px + xs(v)

    def Y(v: Any) -> float:
        if yband:
            return py + (cats.index(v) + 0.5) * step
        return py + h - ys(v)

    title = spec.get("title", "")
    parts.append(f'<text x="{_f(px)}" y="{_f(y0 + 20)}" font-size="14" font-weight="600" '
                 f'{FONT}>{escape(str(title))}</text>')
    # grid and axes
    for t in cats if yband else ys.ticks:
        y = Y(t)
        if not yband:
            parts.append(f'<line x1="{_f(px)}" x2="{_f(px + w)}" y1="{_f(y)}" y2="{_f(y)}" '
                         'stroke="#e5e5e5"/>')
        parts.append(f'<text x="{_f(px - 6)}" y="{_f(y + 4)}" font-size="11" '
                     f'text-anchor="end" {FONT}>{escape(str(t)) if yband else tick_label(t)}'
                     '</text>')
    if band:
        for c in cats:
            parts.append(f'<text x="{_f(X(c))}" y="{_f(py + h + 16)}" font-size="11" '
                         f'text-anchor="middle" {FONT}>{escape(str(c))}</text>')
    else:
        assert xs is not None
        for t in xs.ticks:
            x = X(t)
            parts.append(f'<line x1="{_f(x)}" x2="{_f(x)}" y1="{_f(py)}" y2="{_f(py + h)}" '
                         'stroke="#f0f0f0"/>')
            parts.append(f'<text x="{_f(x)}" y="{_f(py + h + 16)}" font-size="11" '
                         f'text-anchor="middle" {FONT}>{tick_label(t)}</text>')
    parts.append(f'<rect x="{_f(px)}" y="{_f(py)}" width="{_f(w)}" height="{_f(h)}" '
                 'fill="none" stroke="#999"/>')
    if x_enc.get("title"):
        parts.append(f'<text x="{_f(px + w / 2)}" y="{_f(py + h + 36)}" font-size="12" '
                     f'text-anchor="middle" {FONT}>{escape(x_enc["title"])}</text>')
    if y_enc.get("title"):
        parts.append(f'<text transform="translate({_f(x0 + 14)},{_f(py + h / 2)}) rotate(-90)" '
                     f'font-size="12" text-anchor="middle" {FONT}>{escape(y_enc["title"])}</text>')

    clip = f"clip{int(x0)}_{int(y0)}"
    parts.append(f'<clipPath id="{clip}"><rect x="{_f(px)}" y="{_f(py)}" width="{_f(w)}" '
                 f'height="{_f(h)}"/></clipPath><g clip-path="url(#{clip})">')
    for la in layers:
        mark, enc, values = la["mark"], la["enc"], la["values"]
        cf = enc.get("color", {}).get("field")
        fixed = mark.get("color", PALETTE[0])
        kind = mark["type"]
        if kind == "bar" and yband:
            xf, x2f, yf = enc["x"]["field"], enc["x2"]["field"], enc["y"]["field"]
            tip = (enc.get("tooltip") or [{}])[0].get("field")
            bh = step * 0.7
            for v in values:
                color = color_of.get(v.get(cf), fixed) if cf else fixed
                label = v.get(tip) if tip else v.get(cf, v[yf])
                parts.append(f'<rect class="mark-bar" x="{_f(X(v[xf]))}" '
                             f'y="{_f(Y(v[yf]) - bh / 2)}" width="{_f(X(v[x2f]) - X(v[xf]))}" '
                             f'height="{_f(bh)}" fill="{color}" stroke="white" '
                             f'stroke-width="0.5"><title>{escape(str(label))}: '
                             f'{tick_label(v[xf])} – {tick_label(v[x2f])}</title></rect>')
        elif kind == "bar":
            xf, yf = enc["x"]["field"], enc["y"]["field"]
            base: dict[Any, float] = {}
            for v in values:
                lo = base.get(v[xf], 0.0)
                hi = lo + v[yf]
                base[v[xf]] = hi
                color = color_of.get(v.get(cf), fixed) if cf else fixed
                bw = step * 0.6
                parts.append(f'<rect class="mark-bar" x="{_f(X(v[xf]) - bw / 2)}" '
                             f'y="{_f(Y(hi))}" width="{_f(bw)}" height="{_f(Y(lo) - Y(hi))}" '
                             f'fill="{color}"><title>{escape(str(v.get(cf, v[xf])))}: '
                             f'{tick_label(v[yf])}</title></rect>')
        elif kind in ("line", "point"):
            xf, yf = enc["x"]["field"], enc["y"]["field"]
            groups: dict[Any, list[dict[str, Any]]] = {}
            for v in values:
                if isinstance(v.get(xf), (int, float)) and isinstance(v.get(yf), (int, float)):
                    groups.setdefault(v.get(cf) if cf else None, []).append(v)
            for key, rows in groups.items():
                color = color_of.get(key, fixed) if cf else fixed
                if kind == "line":
                    rows = sorted(rows, key=lambda r: r[xf])
                    d = " ".join(f"{'M' if i == 0 else 'L'}{_f(X(r[xf]))},{_f(Y(r[yf]))}"
                                 for i, r in enumerate(rows))
                    parts.append(f'<path class="mark-line" d="{d}" fill="none" '
                                 f'stroke="{color}" stroke-width="2"/>')
                else:
                    tip = (enc.get("tooltip") or [{}])[0].get("field")
                    for r in rows:
                        label = f"{r.get(tip)}: " if tip else ""
                        parts.append(f'<circle class="mark-point" cx="{_f(X(r[xf]))}" '
                                     f'cy="{_f(Y(r[yf]))}" r="4" fill="{color}"><title>'
                                     f'{escape(label)}{tick_label(r[xf])}, {tick_label(r[yf])}'
                                     '</title></circle>')
        elif kind == "rule":
            dash = ",".join(str(d) for d in mark.get("strokeDash", []))
            for v in values:
                if "y" in enc:
                    y = Y(v[enc["y"]["field"]])
                    coords = f'x1="{_f(px)}" x2="{_f(px + w)}" y1="{_f(y)}" y2="{_f(y)}"'
                else:
                    x = X(v[enc["x"]["field"]])
                    coords = f'x1="{_f(x)}" x2="{_f(x)}" y1="{_f(py)}" y2="{_f(py + h)}"'
                parts.append(f'<line class="mark-rule" {coords} stroke="{fixed}" '
                             f'stroke-width="2" stroke-dasharray="{dash}"/>')
    parts.append("</g>")
    # legend
    for i, c in enumerate(colors):
        ly = py + 10 + i * 18
        parts.append(f'<rect x="{_f(px + w + 14)}" y="{_f(ly - 9)}" width="11" height="11" '
                     f'fill="{color_of[c]}"/><text x="{_f(px + w + 30)}" y="{_f(ly)}" '
                     f'font-size="11" {FONT}>{escape(str(c))}</text>')
    note = note_lines(str(spec.get("description", "")), LEFT + w + RIGHT)
    for i, line in enumerate(note):
        parts.append(f'<text class="chart-note" x="{_f(x0 + 8)}" '
                     f'y="{_f(py + h + BOTTOM + 4 + i * NOTE_LINE)}" font-size="11" fill="#555" '
                     f'{FONT}>{escape(line)}</text>')
    return "\n".join(parts), LEFT + w + RIGHT, TOP + h + BOTTOM + len(note) * NOTE_LINE


def note_lines(text: str, width: float) -> list[str]:
    """A note cut into lines that fit `width` pixels (at NOTE_CHAR per terminal cell: a wide CJK
    character counts twice)."""
    from llmsizer.i18n import wrap_cells

    if not text.strip():
        return []
    return wrap_cells(text, max(20, int((width - 16) / NOTE_CHAR)))


def render_many(specs: list[dict[str, Any]]) -> str:
    """The charts one under another in one standalone SVG document."""
    groups, y, width = [], 0.0, 320.0
    for spec in specs:
        markup, w, h = render(spec, 0, y)
        groups.append(f'<g class="chart">{markup}</g>')
        y += h + 16
        width = max(width, w)
    height = max(y, 40.0)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_f(width)}" height="{_f(height)}" '
            f'viewBox="0 0 {_f(width)} {_f(height)}"><rect width="100%" height="100%" '
            'fill="white"/>\n' + "\n".join(groups) + "\n</svg>\n")
