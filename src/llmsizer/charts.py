"""Charts from one source: Vega-Lite-shaped specifications (plain dicts) built from the JSON the
commands print. The page renders them in the browser (static/chart.js); `--plot FILE` renders the
same dicts with `llmsizer.chart_svg` (.svg), embeds them with the page's renderer (.html), or
converts the SVG with cairosvg (.png, the optional `plot` extra). Notebooks can display any of
them with `altair.Chart.from_dict(spec)` or vega-embed, since they are Vega-Lite v5 specs.

Only four marks are used — bar (stacked when colored, or ranged from x to x2 along a nominal y
for timelines), line, point, rule — with linear or log quantitative scales and nominal
categories, and a `description` drawn as a note under the chart; both renderers implement
exactly that subset.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
GIB = 2**30
WIDTH, HEIGHT = 460, 260


def _t(text: str, lang: str) -> str:
    from llmsizer.i18n import gettext

    return gettext(text, lang)


def _spec(title: str, layers: list[dict[str, Any]], lang: str, **extra: Any) -> dict[str, Any]:
    return {"$schema": SCHEMA, "title": _t(title, lang), "width": WIDTH, "height": HEIGHT,
            "layer": layers, **extra}


def _q(field: str, title: str, lang: str, log: bool = False, **kw: Any) -> dict[str, Any]:
    enc = {"field": field, "type": "quantitative", "title": _t(title, lang), **kw}
    if log:
        enc["scale"] = {"type": "log"}
    return enc


def _n(field: str, title: str, lang: str, **kw: Any) -> dict[str, Any]:
    return {"field": field, "type": "nominal", "title": _t(title, lang), **kw}


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------

MEMORY_PARTS = ("weights", "gradients", "optimizer", "activations", "other")


def training_memory_chart(data: dict[str, Any], lang: str = "en") -> dict[str, Any]:
    """Per-device memory as one stacked bar per pipeline stage shown, with the capacity line."""
    mem = data["memory_per_device"]
    label = _t("per device", lang)
    values = [{"device": label, "part": _t(part, lang), "GiB": mem[part] / GIB}
              for part in MEMORY_PARTS if mem.get(part)]
    capacity = data["capacity_bytes"] / GIB
    return _spec("Memory per device", [
        {"data": {"values": values}, "mark": {"type": "bar"},
         "encoding": {"x": _n("device", "", lang), "y": _q("GiB", "GiB", lang),
                      "color": _n("part", "part", lang, sort=None)}},
        {"data": {"values": [{"GiB": capacity, "label": _t("capacity", lang)}]},
         "mark": {"type": "rule", "strokeDash": [6, 3], "color": "#c0392b"},
         "encoding": {"y": _q("GiB", "GiB", lang)}},
    ], lang, width=260)


def step_time_chart(data: dict[str, Any], lang: str = "en") -> dict[str, Any]:
    """The step time's parts (compute, bubble, exposed communication, optimizer), in seconds."""
    parts = data["step_time_breakdown_s"]
    from llmsizer.i18n import pgettext

    # "optimizer" here is the optimizer's update, not its states (the memory chart's part)
    values = [{"part": pgettext("step time", k.replace("_", " "), lang), "seconds": v}
              for k, v in parts.items() if isinstance(v, (int, float)) and v > 0]
    return _spec("Step time breakdown", [
        {"data": {"values": values}, "mark": {"type": "bar"},
         "encoding": {"x": _n("part", "", lang, sort=None), "y": _q("seconds", "seconds", lang),
                      "color": _n("part", "part", lang, sort=None, legend=None)}},
    ], lang)


TIMELINE_MAX_EVENTS = 4096  # passes drawn; a longer step shows its first micro-batches


def pipeline_pass_times(data: dict[str, Any]) -> tuple[float, float, str]:
    """(forward_s, backward_s, how) of one micro-batch on one stage, read off a train result.

    The result gives the step's parts, not each stage's: `compute` is m times the slowest stage's
    forward + backward (+ recomputation) of one micro-batch and the tensor/expert/context-parallel
    communication is (m + bubble) times its per-micro-batch share (llmsizer.analysis.step), so
    one micro-batch's slot on a stage is compute/m + comm/(m + bubble). The step model times every
    stage as the slowest one, and so does the timeline; the slot is split 1:2 between forward
    and backward (backward is two matrix products per forward one, as the step model's "last
    backward = 2/3 of a micro-batch" has it), 1:3 with full recomputation (the forward again
    before the backward)."""
    par, parts = data["parallelism"], data["step_time_breakdown_s"]
    m, pp, v = par["grad_accum"], par["pp"], par["virtual_stages"]
    bubble_mb = (pp - 1) / v if par["schedule"] == "interleaved" else pp - 1.0
    comm = sum(parts.get(k, 0.0) for k in ("tp_comm", "ep_comm", "cp_comm"))
    slot = parts["compute"] / m + comm / (m + bubble_mb)
    backward_share = 3 if par["recompute"] == "full" else 2
    forward = slot / (1 + backward_share)
    return forward, slot - forward, f"1:{backward_share}"


def pipeline_timeline(data: dict[str, Any], lang: str = "en") -> dict[str, Any] | None:
    """The pipeline schedule as a timeline: one bar per forward or backward pass, one row per
    stage, simulated pass by pass (llmsizer.analysis.pipeline_schedule); None without pipelining
    or where the schedule cannot run (interleaved with m not a multiple of pp)."""
    from llmsizer.analysis.pipeline_schedule import simulate

    par = data["parallelism"]
    pp, m, schedule = par["pp"], par["grad_accum"], par["schedule"]
    v = par["virtual_stages"] if schedule == "interleaved" else 1
    if pp < 2 or (v > 1 and m % pp):
        return None
    forward_s, backward_s, ratio = pipeline_pass_times(data)
    shown = m
    if 2 * pp * v * m > TIMELINE_MAX_EVENTS:
        group = pp if v > 1 else 1
        shown = max(group, TIMELINE_MAX_EVENTS // (2 * pp * v) // group * group)
    timeline = simulate(schedule, pp, shown, [forward_s] * pp, [backward_s] * pp, v)
    names = {"F": _t("forward pass", lang), "B": _t("backward pass", lang)}
    chunked = {"F": _t("forward, chunk {c}", lang), "B": _t("backward, chunk {c}", lang)}
    what = _t("micro-batch", lang)
    values = [{"stage": e.stage, "start": e.start_s, "end": e.end_s,
               "pass": chunked[e.kind].format(c=e.chunk) if v > 1 else names[e.kind],
               "label": f"{names[e.kind]}, {what} {e.micro_batch}"
               + (f", {_t('model chunk', lang)} {e.chunk}" if v > 1 else "")}
              for e in timeline.events]
    name = {"gpipe": "GPipe", "1f1b": "1F1B"}.get(schedule, f"interleaved 1F1B, V={v}")
    note = _t("Every stage is timed as the slowest one, as the step model times them; the train "
              "result gives no per-stage forward/backward split, so each micro-batch's slot "
              "(compute + tensor/expert/context-parallel communication) is split {ratio} between "
              "forward and backward. Pipeline hand-offs are not drawn.", lang).format(ratio=ratio)
    if shown < m:
        note += " " + _t("The first {shown} of {m} micro-batches are shown.", lang).format(
            shown=shown, m=m)
    title = _t("Pipeline schedule", lang) + (
        f": {name}, pp={pp}, m={m}, {_t('pipeline bubble', lang)} "
        f"{100 * timeline.bubble_fraction:.1f}%")
    return _spec(title, [
        {"data": {"values": values}, "mark": {"type": "bar"},
         "encoding": {"x": _q("start", "time (s)", lang), "x2": {"field": "end"},
                      "y": _n("stage", "pipeline stage", lang, sort=None),
                      "color": _n("pass", "forward or backward", lang, sort=None),
                      "tooltip": [{"field": "label"}]}},
    ], lang, width=520, height=max(60, min(420, 26 * pp)), description=note)


# ---------------------------------------------------------------------------------------------
# infer
# ---------------------------------------------------------------------------------------------

def _ops(tree: dict[str, Any], prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
    """The leaves of an op tree: (dotted name, {flops, bytes, time_s, ...})."""
    out = []
    for name, node in tree.items():
        if isinstance(node, dict) and "flops" in node and "time_s" in node:
            out.append((prefix + name, node))
        elif isinstance(node, dict):
            out += _ops(node, prefix + name + ".")
    return out


def roofline_chart(data: dict[str, Any], lang: str = "en") -> dict[str, Any]:
    """Each op of prefill and of one decode step at (arithmetic intensity, achieved TFLOP/s),
    under the device's roof min(peak, bandwidth · intensity) (Williams et al. 2009)."""
    points = []
    for phase in ("prefill", "decode"):
        for name, op in _ops(data[phase].get("ops", {})):
            if op["time_s"] > 0 and op["flops"] > 0 and op.get("bytes"):
                points.append({"op": name, "phase": _t(phase, lang),
                               "intensity": op["intensity_flops_per_byte"],
                               "TFLOP/s": op["achieved_flops_per_s"] / 1e12})
    ridge = data["ridge_point_flops_per_byte"]
    bandwidth = data["memory_bandwidth_bytes_s"]
    peak = ridge * bandwidth / 1e12
    xs = [p["intensity"] for p in points] or [1.0]
    lo, hi = min(min(xs), ridge) / 2, max(max(xs), ridge) * 2
    roof = [{"intensity": x, "TFLOP/s": min(peak, bandwidth * x / 1e12), "phase": _t("roof", lang)}
            for x in (lo, ridge, hi)]
    return _spec("Roofline: ops of prefill and decode", [
        {"data": {"values": roof}, "mark": {"type": "line", "color": "#555"},
         "encoding": {"x": _q("intensity", "FLOPs per byte", lang, log=True),
                      "y": _q("TFLOP/s", "TFLOP/s", lang, log=True)}},
        {"data": {"values": points}, "mark": {"type": "point", "filled": True},
         "encoding": {"x": _q("intensity", "FLOPs per byte", lang, log=True),
                      "y": _q("TFLOP/s", "TFLOP/s", lang, log=True),
                      "color": _n("phase", "phase", lang), "tooltip": [{"field": "op"}]}},
    ], lang)


def batch_sweep_chart(data: dict[str, Any], lang: str = "en") -> dict[str, Any]:
    """Throughput against time per output token, one point per batch size (--sweep)."""
    values = [{"batch": r["batch"], "tokens/s": r["throughput_tokens_per_s"],
               "TPOT ms": r["tpot_s"] * 1e3} for r in data.get("sweep", [])]
    enc = {"x": _q("tokens/s", "throughput (output tokens/s)", lang),
           "y": _q("TPOT ms", "time per output token (ms)", lang)}
    return _spec("Batch sweep: throughput against latency", [
        {"data": {"values": values}, "mark": {"type": "line"}, "encoding": enc},
        {"data": {"values": values}, "mark": {"type": "point", "filled": True},
         "encoding": {**enc, "tooltip": [{"field": "batch"}]}},
    ], lang)


# ---------------------------------------------------------------------------------------------
# plan, simulate
# ---------------------------------------------------------------------------------------------

def pareto_chart(data: dict[str, Any], lang: str = "en") -> dict[str, Any]:
    """The layouts shown, step time against peak memory per device; the Pareto front joined."""
    plans = data.get("plans", [])
    values = [{"layout": p["summary"], "GiB": p["peak_memory_bytes"] / GIB,
               "seconds": p["step_time_s"]} for p in plans]
    front, best = [], float("inf")
    for v in sorted(values, key=lambda v: (v["GiB"], v["seconds"])):
        if v["seconds"] < best:
            front.append(v)
            best = v["seconds"]
    enc = {"x": _q("GiB", "peak memory per device (GiB)", lang),
           "y": _q("seconds", "step time (s)", lang)}
    return _spec("Layouts: step time against memory (Pareto front)", [
        {"data": {"values": front}, "mark": {"type": "line", "color": "#c0392b"},
         "encoding": enc},
        {"data": {"values": values}, "mark": {"type": "point", "filled": True},
         "encoding": {**enc, "tooltip": [{"field": "layout"}]}},
        {"data": {"values": [{"GiB": data["capacity_bytes"] / GIB}]},
         "mark": {"type": "rule", "strokeDash": [6, 3], "color": "#c0392b"},
         "encoding": {"x": _q("GiB", "", lang)}},
    ], lang)


PERCENTILES = (("p50", 50), ("p90", 90), ("p99", 99))


def latency_chart(data: dict[str, Any], lang: str = "en") -> dict[str, Any]:
    """Latency percentiles as points of each metric's CDF (fraction of requests at or below)."""
    values = []
    for key, label in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("itl_s", "ITL"),
                       ("e2e_latency_s", "E2E")):
        dist = data.get(key) or {}
        for p, q in PERCENTILES:
            if dist.get(p) and dist[p] > 0:
                values.append({"metric": label, "ms": dist[p] * 1e3, "percentile": q})
    enc = {"x": _q("ms", "latency (ms)", lang, log=True),
           "y": _q("percentile", "percentile", lang), "color": _n("metric", "metric", lang)}
    return _spec("Latency percentiles (CDF points)", [
        {"data": {"values": values}, "mark": {"type": "line"}, "encoding": enc},
        {"data": {"values": values}, "mark": {"type": "point", "filled": True}, "encoding": enc},
    ], lang)


def kv_usage_chart(data: dict[str, Any], lang: str = "en") -> dict[str, Any]:
    series = data.get("kv_cache_utilization", {}).get("series", {})
    values = [{"s": t, "percent": f * 100} for t, f in zip(series.get("t_s", []),
                                                            series.get("fraction", []),
                                                            strict=False)]
    return _spec("KV cache in use over time", [
        {"data": {"values": values}, "mark": {"type": "line"},
         "encoding": {"x": _q("s", "time (s)", lang), "y": _q("percent", "% of KV pool", lang)}},
    ], lang)


def charts_for(command: str, data: dict[str, Any], lang: str = "en") -> list[dict[str, Any]]:
    """The charts of one command's JSON result (none for commands without charts)."""
    if command in ("train", "finetune"):  # the same memory and step-time keys
        out = [training_memory_chart(data, lang), step_time_chart(data, lang)]
        if command == "train" and (timeline := pipeline_timeline(data, lang)) is not None:
            out.append(timeline)
        return out
    if command == "infer":
        out = [roofline_chart(data, lang)]
        if data.get("sweep"):
            out.append(batch_sweep_chart(data, lang))
        return out
    if command == "plan":
        return [pareto_chart(data, lang)] if data.get("plans") else []
    if command == "simulate":
        return [latency_chart(data, lang), kv_usage_chart(data, lang)]
    return []


# ---------------------------------------------------------------------------------------------
# --plot FILE
# ---------------------------------------------------------------------------------------------

PLOT_SUFFIXES = (".svg", ".html", ".png")


def add_plot_argument(parser: Any) -> None:
    parser.add_argument("--plot", metavar="FILE",
                        help="write the charts to FILE: .svg, .html, or .png (needs cairosvg: "
                        "pip install 'llmsizer[plot]')")


def maybe_plot(args: argparse.Namespace, data: dict[str, Any]) -> None:
    """Write `--plot FILE` when it was given; a refusal is one line naming --plot."""
    if getattr(args, "plot", None):
        write_plot(args.plot, charts_for(args.command, data, getattr(args, "lang", "en")))


def write_plot(path: str, specs: list[dict[str, Any]]) -> None:
    from llmsizer.errors import SpecError

    suffix = os.path.splitext(path)[1].lower()
    if suffix not in PLOT_SUFFIXES:
        raise SpecError("plot", path, "a file name ending in .svg, .html or .png")
    if suffix == ".html":
        payload: bytes = plot_html(specs).encode("utf-8")
    else:
        from llmsizer.chart_svg import render_many

        svg = render_many(specs)
        if suffix == ".png":
            try:
                import cairosvg  # type: ignore[import-not-found]
            except ImportError:
                raise SpecError("plot", path, "a .svg or .html file; .png needs cairosvg "
                                "(pip install 'llmsizer[plot]')") from None
            payload = cairosvg.svg2png(bytestring=svg.encode("utf-8"))
        else:
            payload = svg.encode("utf-8")
    try:
        with open(path, "wb") as f:
            f.write(payload)
    except OSError as e:
        raise SpecError("plot", path, f"a writable path ({e.strerror})") from None


def plot_html(specs: list[dict[str, Any]]) -> str:
    """A standalone page: the page's own renderer (static/chart.js) and the specs, inline."""
    import json
    from importlib import resources

    renderer = resources.files("llmsizer.web").joinpath("static", "chart.js").read_text("utf-8")
    blob = json.dumps(specs, ensure_ascii=False).replace("</", "<\\/")
    return ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>llmsizer charts</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:2em}</style></head><body>\n"
            f"<div id=\"charts\"></div>\n<script>{renderer}</script>\n<script>\n"
            f"const specs = {blob};\nfor (const s of specs) "
            "document.getElementById('charts').appendChild(LlmsizerChart.render(s));\n"
            "</script></body></html>\n")
