// llmsizer's chart renderer: the Vega-Lite subset llmsizer.charts produces (layers of bar —
// stacked by color, or ranged from x to x2 along a nominal y for timelines —, line, point and
// rule marks; linear or log quantitative scales; a nominal band scale for bars; the spec's
// description as a note under the chart) drawn as SVG. Same layout rules as
// llmsizer/chart_svg.py.
"use strict";
var LlmsizerChart = (function () {
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2",
    "#eeca3b", "#9d755d", "#ff9da6", "#bab0ac"];
  const LEFT = 64, RIGHT = 130, TOP = 34, BOTTOM = 48, NOTE_LINE = 14, NOTE_CHAR = 6.5;
  let clipCount = 0;

  function el(name, attrs, text) {
    const e = document.createElementNS(NS, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function isNum(v) { return typeof v === "number" && isFinite(v); }

  function niceStep(span, count) {
    if (!(span > 0) || !isFinite(span)) return 1;
    const raw = span / (count || 5);
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5, 10]) if (raw <= m * power) return m * power;
    return 10 * power;
  }

  function scale(values, length, log, zero) {
    let vals = values.filter(v => isNum(v) && (v > 0 || !log));
    if (!vals.length) vals = log ? [1] : [0, 1];
    let lo = Math.min(...vals), hi = Math.max(...vals);
    const s = { log: log, length: length };
    if (log) {
      s.lo = Math.floor(Math.log10(lo)); s.hi = Math.ceil(Math.log10(hi));
      if (s.hi === s.lo) s.hi += 1;
      s.ticks = [];
      for (let e = s.lo; e <= s.hi; e++) s.ticks.push(Math.pow(10, e));
    } else {
      if (zero) { lo = Math.min(lo, 0); hi = Math.max(hi, 0); }
      if (hi === lo) hi = lo + 1;
      const step = niceStep(hi - lo);
      s.lo = Math.floor(lo / step) * step; s.hi = Math.ceil(hi / step) * step;
      const n = Math.round((s.hi - s.lo) / step);
      s.ticks = [];
      for (let i = 0; i <= n; i++) s.ticks.push(s.lo + i * step);
    }
    s.map = v => ((log ? Math.log10(Math.max(v, 1e-300)) : v) - s.lo) / (s.hi - s.lo) * length;
    return s;
  }

  function tickLabel(v) {
    if (v === 0) return "0";
    const a = Math.abs(v);
    if (a >= 1e6 || a < 1e-3) return v.toExponential(0).replace("e+", "e");
    if (a >= 1000) return Math.round(v).toLocaleString("en-US");
    return String(Number(v.toPrecision(3)));
  }

  // terminal-style cells: East Asian wide and fullwidth characters count two (as chart_svg.py)
  const WIDE = /[\u1100-\u115f\u2e80-\u303e\u3041-\u33ff\u3400-\u4dbf\u4e00-\u9fff\ua000-\ua4cf\uac00-\ud7a3\uf900-\ufaff\ufe30-\ufe4f\uff00-\uff60\uffe0-\uffe6]/;
  function cells(text) {
    let n = 0;
    for (const c of text) n += WIDE.test(c) ? 2 : 1;
    return n;
  }

  function noteLines(text, width) {
    const limit = Math.max(20, Math.floor((width - 16) / NOTE_CHAR));
    const words = (text || "").split(/\s+/).join(" ").match(
      /\s*[\u2e80-\u9fff\uac00-\ud7af\uff00-\uffef]|\s*[^\s\u2e80-\u9fff\uac00-\ud7af\uff00-\uffef]+/g) || [];
    const lines = [];
    let line = "", n = 0;
    for (let word of words) {
      if (line && n + cells(word) > limit) {
        lines.push(line.trimEnd());
        line = ""; n = 0; word = word.trimStart();
      }
      line += word; n += cells(word);
    }
    if (line.trim()) lines.push(line.trimEnd());
    return lines;
  }

  function layersOf(spec) {
    return (spec.layer || [spec]).map(l => {
      const mark = typeof l.mark === "object" ? l.mark : { type: l.mark || "point" };
      return { mark: mark, enc: l.encoding || {},
               values: ((l.data || spec.data || {}).values) || [] };
    });
  }

  function render(spec) {
    const layers = layersOf(spec);
    const w = spec.width || 460, h = spec.height || 260;
    const px = LEFT, py = TOP;
    const note = noteLines(spec.description, LEFT + w + RIGHT);
    const fullH = TOP + h + BOTTOM + note.length * NOTE_LINE;
    const svg = el("svg", { width: LEFT + w + RIGHT, height: fullH,
      viewBox: `0 0 ${LEFT + w + RIGHT} ${fullH}`, class: "llmsizer-chart",
      role: "img", "font-family": "system-ui,Segoe UI,Helvetica,Arial,sans-serif" });
    svg.appendChild(el("title", {}, spec.title || "chart"));
    const fieldValues = ch => {
      let out = [];
      for (const l of layers) {
        const f = (l.enc[ch] || {}).field;
        if (f) out = out.concat(l.values.map(v => v[f]));
      }
      return out;
    };
    const xEnc = (layers.find(l => l.enc.x) || { enc: { x: {} } }).enc.x;
    const yEnc = (layers.find(l => l.enc.y) || { enc: { y: {} } }).enc.y;
    const band = xEnc.type === "nominal" || xEnc.type === "ordinal";
    // a timeline: bars from x to x2, one row per category of y
    const yband = !band && (yEnc.type === "nominal" || yEnc.type === "ordinal");
    const colors = [];
    for (const v of fieldValues("color")) if (!colors.includes(v)) colors.push(v);
    const colorOf = c => PALETTE[colors.indexOf(c) % PALETTE.length];
    const cats = [];
    if (band || yband) {
      for (const v of fieldValues(band ? "x" : "y")) if (!cats.includes(v)) cats.push(v);
    }
    let yVals = fieldValues("y").filter(isNum);
    const hasBar = layers.some(l => l.mark.type === "bar");
    for (const l of layers) {
      if (l.mark.type !== "bar" || yband) continue;
      const sums = new Map();
      for (const v of l.values) sums.set(v[l.enc.x.field],
        (sums.get(v[l.enc.x.field]) || 0) + v[l.enc.y.field]);
      yVals = yVals.concat([...sums.values()]);
    }
    const yLog = ((yEnc.scale || {}).type) === "log";
    const ys = scale(yVals, h, yLog, hasBar || !yLog);
    const xs = band ? null : scale(fieldValues("x").concat(fieldValues("x2")).filter(isNum), w,
      ((xEnc.scale || {}).type) === "log", yband);
    const step = (yband ? h : w) / Math.max(1, cats.length);
    const X = v => band ? px + (cats.indexOf(v) + 0.5) * step : px + xs.map(v);
    const Y = v => yband ? py + (cats.indexOf(v) + 0.5) * step : py + h - ys.map(v);

    svg.appendChild(el("rect", { width: "100%", height: "100%", fill: "white" }));
    svg.appendChild(el("text", { x: px, y: 20, "font-size": 14, "font-weight": 600,
      class: "chart-title" }, spec.title || ""));
    for (const t of yband ? cats : ys.ticks) {
      if (!yband) svg.appendChild(el("line", { x1: px, x2: px + w, y1: Y(t), y2: Y(t),
        stroke: "#e5e5e5" }));
      svg.appendChild(el("text", { x: px - 6, y: Y(t) + 4, "font-size": 11,
        "text-anchor": "end" }, yband ? String(t) : tickLabel(t)));
    }
    if (band) {
      for (const c of cats) svg.appendChild(el("text", { x: X(c), y: py + h + 16,
        "font-size": 11, "text-anchor": "middle" }, String(c)));
    } else {
      for (const t of xs.ticks) {
        svg.appendChild(el("line", { x1: X(t), x2: X(t), y1: py, y2: py + h, stroke: "#f0f0f0" }));
        svg.appendChild(el("text", { x: X(t), y: py + h + 16, "font-size": 11,
          "text-anchor": "middle" }, tickLabel(t)));
      }
    }
    svg.appendChild(el("rect", { x: px, y: py, width: w, height: h, fill: "none",
      stroke: "#999" }));
    if (xEnc.title) svg.appendChild(el("text", { x: px + w / 2, y: py + h + 36,
      "font-size": 12, "text-anchor": "middle" }, xEnc.title));
    if (yEnc.title) svg.appendChild(el("text", { transform: `translate(14,${py + h / 2}) rotate(-90)`,
      "font-size": 12, "text-anchor": "middle" }, yEnc.title));

    const clipId = "llmsizer-clip-" + (++clipCount);
    const clip = el("clipPath", { id: clipId });
    clip.appendChild(el("rect", { x: px, y: py, width: w, height: h }));
    svg.appendChild(clip);
    const g = el("g", { "clip-path": `url(#${clipId})` });
    svg.appendChild(g);
    for (const l of layers) {
      const enc = l.enc, mark = l.mark;
      const cf = (enc.color || {}).field;
      const fixed = mark.color || PALETTE[0];
      if (mark.type === "bar" && yband) {
        const xf = enc.x.field, x2f = enc.x2.field, yf = enc.y.field, bh = step * 0.7;
        const tip = ((enc.tooltip || [{}])[0] || {}).field;
        for (const v of l.values) {
          const r = el("rect", { class: "mark-bar", x: X(v[xf]), y: Y(v[yf]) - bh / 2,
            width: Math.max(0, X(v[x2f]) - X(v[xf])), height: bh,
            fill: cf ? colorOf(v[cf]) : fixed, stroke: "white", "stroke-width": 0.5 });
          const label = tip ? v[tip] : (cf ? v[cf] : v[yf]);
          r.appendChild(el("title", {}, `${label}: ${tickLabel(v[xf])} – ${tickLabel(v[x2f])}`));
          g.appendChild(r);
        }
      } else if (mark.type === "bar") {
        const xf = enc.x.field, yf = enc.y.field, base = new Map();
        for (const v of l.values) {
          const lo = base.get(v[xf]) || 0, hi = lo + v[yf];
          base.set(v[xf], hi);
          const bw = step * 0.6;
          const r = el("rect", { class: "mark-bar", x: X(v[xf]) - bw / 2, y: Y(hi), width: bw,
            height: Math.max(0, Y(lo) - Y(hi)), fill: cf ? colorOf(v[cf]) : fixed });
          r.appendChild(el("title", {}, `${cf ? v[cf] : v[xf]}: ${tickLabel(v[yf])}`));
          g.appendChild(r);
        }
      } else if (mark.type === "line" || mark.type === "point") {
        const xf = enc.x.field, yf = enc.y.field, groups = new Map();
        for (const v of l.values) {
          if (!isNum(v[xf]) || !isNum(v[yf])) continue;
          const key = cf ? v[cf] : null;
          if (!groups.has(key)) groups.set(key, []);
          groups.get(key).push(v);
        }
        for (const [key, rows] of groups) {
          const color = cf ? colorOf(key) : fixed;
          if (mark.type === "line") {
            rows.sort((a, b) => a[xf] - b[xf]);
            const d = rows.map((r, i) => `${i ? "L" : "M"}${X(r[xf]).toFixed(1)},${Y(r[yf]).toFixed(1)}`);
            g.appendChild(el("path", { class: "mark-line", d: d.join(" "), fill: "none",
              stroke: color, "stroke-width": 2 }));
          } else {
            const tip = ((enc.tooltip || [{}])[0] || {}).field;
            for (const r of rows) {
              const c = el("circle", { class: "mark-point", cx: X(r[xf]), cy: Y(r[yf]), r: 4,
                fill: color });
              c.appendChild(el("title", {}, `${tip ? r[tip] + ": " : ""}${tickLabel(r[xf])}, ${tickLabel(r[yf])}`));
              g.appendChild(c);
            }
          }
        }
      } else if (mark.type === "rule") {
        for (const v of l.values) {
          const a = enc.y ? { x1: px, x2: px + w, y1: Y(v[enc.y.field]), y2: Y(v[enc.y.field]) }
            : { x1: X(v[enc.x.field]), x2: X(v[enc.x.field]), y1: py, y2: py + h };
          g.appendChild(el("line", Object.assign(a, { class: "mark-rule", stroke: fixed,
            "stroke-width": 2, "stroke-dasharray": (mark.strokeDash || []).join(",") })));
        }
      }
    }
    colors.forEach((c, i) => {
      const ly = py + 10 + i * 18;
      svg.appendChild(el("rect", { x: px + w + 14, y: ly - 9, width: 11, height: 11,
        fill: colorOf(c) }));
      svg.appendChild(el("text", { x: px + w + 30, y: ly, "font-size": 11 }, String(c)));
    });
    note.forEach((line, i) => svg.appendChild(el("text", { class: "chart-note", x: 8,
      y: py + h + BOTTOM + 4 + i * NOTE_LINE, "font-size": 11, fill: "#555" }, line)));
    return svg;
  }

  return { render: render, tickLabel: tickLabel };
})();
