"""Charts from one source (Vega-Lite-shaped dicts), the SVG writer, --plot FILE and --lang zh."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from llmsizer.chart_svg import Scale, nice_step, render_many
from llmsizer.charts import charts_for
from llmsizer.cli import main
from llmsizer.i18n import catalog, gettext, parse_po, translate_text

SVG = "{http://www.w3.org/2000/svg}"
TRAIN = ["train", "llama-2-7b", "--gpu", "a100", "--gpus", "8", "--zero", "1",
         "--global-batch", "64"]
INFER = ["infer", "llama-2-7b", "--gpu", "a100", "--batch", "8", "--sweep"]
PLAN = ["plan", "llama-2-7b", "--gpu", "a100", "--gpus", "16", "--seq", "4k",
        "--global-batch", "256"]
SIMULATE = ["simulate", "llama-2-7b", "--gpu", "a100", "--requests", "100", "--qps", "5"]


def run_json(argv, capsys):
    code = main([*argv, "--json"])
    assert code in (0, 3)
    return json.loads(capsys.readouterr().out)


def marks(spec):
    return [layer["mark"]["type"] for layer in spec["layer"]]


def test_training_memory_bar_stacks_the_parts_to_the_total(capsys):
    data = run_json(TRAIN, capsys)
    memory, step = charts_for("train", data)
    assert marks(memory) == ["bar", "rule"]
    bars = memory["layer"][0]["data"]["values"]
    # weights + gradients + optimizer + activations + other = total, in GiB
    assert sum(b["GiB"] for b in bars) == pytest.approx(data["memory_per_device"]["total"] / 2**30)
    assert memory["layer"][1]["data"]["values"][0]["GiB"] == data["capacity_bytes"] / 2**30
    assert sum(v["seconds"] for v in step["layer"][0]["data"]["values"]) == pytest.approx(
        sum(v for v in data["step_time_breakdown_s"].values()))


def test_roofline_points_sit_on_or_under_the_roof(capsys):
    data = run_json(INFER, capsys)
    roofline, sweep = charts_for("infer", data)
    roof = roofline["layer"][0]["data"]["values"]
    peak = max(r["TFLOP/s"] for r in roof)
    points = roofline["layer"][1]["data"]["values"]
    assert {p["phase"] for p in points} == {"prefill", "decode"}
    assert all(p["TFLOP/s"] <= peak * 1.0001 for p in points)
    assert [v["batch"] for v in sweep["layer"][0]["data"]["values"]] == \
        [r["batch"] for r in data["sweep"]]


def test_pareto_front_has_no_point_both_smaller_and_faster(capsys):
    data = run_json(PLAN, capsys)
    (pareto,) = charts_for("plan", data)
    front = pareto["layer"][0]["data"]["values"]
    every = pareto["layer"][1]["data"]["values"]
    assert len(every) == len(data["plans"])
    for f in front:
        assert not any(p["GiB"] < f["GiB"] and p["seconds"] < f["seconds"] for p in every)


def test_latency_chart_shows_each_percentile_of_the_json(capsys):
    data = run_json(SIMULATE, capsys)
    latency, kv = charts_for("simulate", data)
    ttft = {v["percentile"]: v["ms"] for v in latency["layer"][0]["data"]["values"]
            if v["metric"] == "TTFT"}
    assert ttft == {50: data["ttft_s"]["p50"] * 1e3, 90: data["ttft_s"]["p90"] * 1e3,
                    99: data["ttft_s"]["p99"] * 1e3}
    assert marks(kv) == ["line"]


def test_specs_are_plain_json_vega_lite(capsys):
    spec = charts_for("train", run_json(TRAIN, capsys))[0]
    assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite/v5")
    assert json.loads(json.dumps(spec)) == spec


def test_svg_writer_draws_one_rect_per_part_and_a_point_per_op(capsys):
    data = run_json(TRAIN, capsys)
    root = ET.fromstring(render_many(charts_for("train", data)))
    bars = [e for e in root.iter(SVG + "rect") if e.get("class") == "mark-bar"]
    parts = [k for k in ("weights", "gradients", "optimizer", "activations", "other")
             if data["memory_per_device"][k]]
    nonzero = [v for v in data["step_time_breakdown_s"].values() if v > 0]
    assert len(bars) == len(parts) + len(nonzero)
    assert len([e for e in root.iter(SVG + "line") if e.get("class") == "mark-rule"]) == 1


def test_nice_ticks_are_round_and_cover_the_data():
    assert nice_step(7.8) == 2 and nice_step(54) == 20 and nice_step(0.003) == 0.001
    s = Scale([3.2, 57.0], 100, log=False, zero=True)
    assert s.ticks[0] == 0 and s.ticks[-1] >= 57 and s(0) == 0 and s(s.ticks[-1]) == 100
    log = Scale([0.5, 1700.0], 100, log=True, zero=False)
    assert log.ticks == [0.1, 1, 10, 100, 1000, 10000]


@pytest.mark.parametrize("argv", [TRAIN, INFER, PLAN, SIMULATE])
def test_plot_writes_an_svg_for_each_charted_command(argv, tmp_path, capsys):
    out = tmp_path / "chart.svg"
    assert main([*argv, "--plot", str(out)]) == 0
    root = ET.fromstring(out.read_text("utf-8"))
    assert root.tag == SVG + "svg" and len(root.findall(SVG + "g")) >= 1


def test_plot_html_embeds_the_page_renderer_and_the_specs(tmp_path, capsys):
    out = tmp_path / "chart.html"
    assert main([*TRAIN, "--plot", str(out)]) == 0
    html = out.read_text("utf-8")
    assert "LlmsizerChart" in html and "Memory per device" in html and "<script src" not in html


def test_plot_png_without_cairosvg_is_one_line_saying_how(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "cairosvg", None)
    assert main([*TRAIN, "--plot", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pip install 'llmsizer[plot]'" in err


def test_plot_png_is_a_png_of_the_svgs_size(tmp_path, capsys):
    pytest.importorskip("cairosvg")
    import struct

    svg, png = tmp_path / "c.svg", tmp_path / "c.png"
    assert main([*TRAIN, "--plot", str(svg)]) == 0
    assert main([*TRAIN, "--plot", str(png)]) == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"  # PNG signature, header
    width, height = struct.unpack(">II", data[16:24])
    root = ET.fromstring(svg.read_text("utf-8"))
    assert (width, height) == (round(float(root.get("width"))), round(float(root.get("height"))))
    assert len(data) > 10_000  # drawn, not blank


def test_plot_refuses_other_suffixes_and_unwritable_paths(tmp_path, capsys):
    assert main([*TRAIN, "--plot", str(tmp_path / "c.pdf")]) == 2
    assert main([*TRAIN, "--plot", str(tmp_path / "no" / "c.svg")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("--plot" in line for line in err)


# -- languages ------------------------------------------------------------------------------------

def test_po_reader_reads_multiline_entries_and_skips_fuzzy_ones():
    po = ('msgid ""\nmsgstr "Language: zh\\n"\n\nmsgid "a "\n"b"\nmsgstr "甲"\n"乙"\n\n'
          '#, fuzzy\nmsgid "c"\nmsgstr "丙"\n')
    assert parse_po(po) == {"a b": "甲乙"}


def test_chinese_catalog_translates_labels_and_english_is_the_default():
    assert gettext("Memory per device", "zh") == "每设备显存"
    assert gettext("Memory per device") == "Memory per device"
    assert len(catalog("zh")) > 100 and catalog("en") == {}


def test_translation_replaces_whole_phrases_only():
    assert translate_text("memory per device: 5 GiB", "zh") == "每设备显存: 5 GiB"
    assert translate_text("weights_bytes totally", "zh") == "weights_bytes totally"


def test_lang_zh_gives_chinese_labels_and_the_same_numbers(capsys):
    assert main(["params", "llama-2-7b"]) == 0
    english = capsys.readouterr().out
    assert main(["params", "llama-2-7b", "--lang", "zh"]) == 0
    chinese = capsys.readouterr().out
    assert "层" in chinese and "layers" in english
    digits = [c for c in english if c.isdigit()]
    assert [c for c in chinese if c.isdigit()] == digits


def test_lang_zh_error_is_one_chinese_line(capsys):
    assert main(["infer", "llama-2-7b", "--gpu", "h101", "--lang", "zh"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("llmsizer: 错误") and "未知 GPU" in err


def test_lang_never_changes_json(capsys):
    assert run_json(TRAIN, capsys) == run_json([*TRAIN, "--lang", "zh"], capsys)


def test_chart_titles_follow_the_language(capsys):
    data = run_json(TRAIN, capsys)
    assert charts_for("train", data, "zh")[0]["title"] == "每设备显存"


def page_and_chart_labels():
    """Every English label the page and the charts show, read off their sources."""
    import re
    from importlib import resources

    static = resources.files("llmsizer").joinpath("web", "static")
    js = static.joinpath("app.js").read_text("utf-8")
    html = static.joinpath("index.html").read_text("utf-8")
    charts_py = resources.files("llmsizer").joinpath("charts.py").read_text("utf-8")
    found = set(re.findall(r'\bt\("([^"]+)"\)', js))
    found |= {label for _, label in re.findall(r'\["([a-z]+)", "([A-Z][^"]+)"\]', js)}  # VIEWS
    found |= set(re.findall(r'\["([A-Z][^"]+)", "[\w.]+", "\w+"\]', js))  # SUMMARY rows
    found |= set(re.findall(r'data-t="([^"]+)"', html))
    for pieces in re.findall(r'_(?:t|spec)\(((?:\s*"[^"]*")+)', charts_py):  # "a " "b" = "a b"
        found.add("".join(re.findall(r'"([^"]*)"', pieces)))
    found |= set(re.findall(r'_[qn]\("[^"]*", "([^"]+)"', charts_py))
    return found


def test_every_page_and_chart_label_has_a_chinese_translation(capsys):
    from llmsizer.charts import MEMORY_PARTS
    from llmsizer.i18n import labels, pgettext

    kept = {"MFU", "GiB", ".", "lang", "view"}  # terms and units that read the same in Chinese
    wanted = page_and_chart_labels() | set(MEMORY_PARTS) | {"yes", "no"}
    assert {"Training", "Memory per device", "Pipeline schedule", "Results"} <= wanted
    missing = sorted(w for w in wanted - kept if w not in labels("zh"))
    assert not missing, missing
    # the step-time chart's parts, from a real answer
    data = run_json(TRAIN, capsys)
    steps = [k.replace("_", " ") for k in data["step_time_breakdown_s"]]
    assert all(pgettext("step time", s, "zh") != s for s in steps), steps
