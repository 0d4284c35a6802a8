"""The page in a real browser: Debian's chromium driven by Playwright for Python (no browser
download). Loads the page, sets inputs, checks the numbers shown equal the CLI's JSON, that the
charts rendered and that nothing was logged as an error. Skipped when playwright or chromium is
absent. Saves the README's screenshot to docs/screenshot.png."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("LLMSIZER_CHROMIUM", "/usr/bin/chromium")
sync_api = pytest.importorskip("playwright.sync_api")
if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
    pytest.skip(f"no chromium at {CHROMIUM}", allow_module_level=True)

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
# the README's screenshot is refreshed only on request (LLMSIZER_SCREENSHOT=docs/screenshot.png):
# a test run leaves the tracked files as they were
SCREENSHOT = os.environ.get("LLMSIZER_SCREENSHOT")


@pytest.fixture(scope="module")
def base_url():
    from llmsizer.web.server import make_server

    srv, app = make_server("127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()
    app.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM,
            args=ARGS, headless=True, viewport={"width": 1280, "height": 1100})
        yield context
        context.close()


@pytest.fixture
def page(browser):
    page = browser.new_page()
    page.console_errors = []
    page.on("console", lambda m: page.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.console_errors.append(str(e)))
    yield page
    page.close()


def cli_json(*argv):
    out = subprocess.run([sys.executable, "-m", "llmsizer", *argv, "--json"],
                         capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout)


def load(page, url):
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=15000)


def shown(page):
    """data-key -> (value, text) of the summary table's first column."""
    cells = page.eval_on_selector_all(
        "#summary td[data-key]", "cs => cs.map(c => [c.dataset.key, c.dataset.value, c.textContent])")
    return {k: (json.loads(v) if v else None, text) for k, v, text in cells}


def test_training_view_shows_the_cli_numbers_and_its_charts(page, base_url, tmp_path):
    load(page, base_url + "/?view=train&model=llama-2-7b&gpu=a100&gpus=8&zero=1&global-batch=64")
    expected = cli_json("train", "llama-2-7b", "--gpu", "a100", "--gpus", "8", "--zero", "1",
                        "--global-batch", "64")
    numbers = shown(page)
    total = expected["memory_per_device"]["total"]
    assert numbers["memory_per_device.total"] == (total, f"{total / 2**30:.2f} GiB")
    assert numbers["step_time_s"] == (expected["step_time_s"], f"{expected['step_time_s']:.2f} s")
    assert numbers["mfu"] == (expected["mfu"], f"{expected['mfu'] * 100:.1f}%")
    assert numbers["tokens_per_s"][0] == expected["tokens_per_s"]
    assert page.locator("svg.llmsizer-chart").count() == 2
    assert page.locator("svg.llmsizer-chart rect.mark-bar").count() >= 5
    assert page.locator("svg.llmsizer-chart line.mark-rule").count() == 1
    shot = Path(SCREENSHOT) if SCREENSHOT else tmp_path / "screenshot.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert page.console_errors == []


def test_pipeline_timeline_draws_every_pass_as_the_svg_writer_does(page, base_url):
    import xml.etree.ElementTree as ET

    from llmsizer.chart_svg import render_many
    from llmsizer.charts import charts_for

    argv = ["train", "llama-2-7b", "--gpu", "a100", "--gpus", "8", "--tp", "2", "--pp", "4",
            "--schedule", "interleaved:2", "--global-batch", "8"]
    load(page, base_url + "/?view=train&model=llama-2-7b&gpu=a100&gpus=8&tp=2&pp=4"
         "&schedule=interleaved:2&global-batch=8")
    charts = page.locator("svg.llmsizer-chart")
    assert charts.count() == 3
    timeline = charts.nth(2)
    assert "Pipeline schedule" in timeline.locator(".chart-title").text_content()
    drawn = timeline.locator("rect.mark-bar").evaluate_all(
        "rs => rs.map(r => ['x', 'y', 'width', 'height'].map(k => +r.getAttribute(k)))")
    assert len(drawn) == 2 * 4 * 2 * 8  # F and B, 4 stages, 2 chunks, 8 micro-batches
    assert timeline.locator(".chart-note").count() >= 2
    # the same spec through the Python SVG writer: the same bars, to the tenth of a pixel
    spec = charts_for("train", cli_json(*argv))[2]
    svg = "{http://www.w3.org/2000/svg}"
    written = [[float(r.get(k)) for k in ("x", "y", "width", "height")]
               for r in ET.fromstring(render_many([spec])).iter(svg + "rect")
               if r.get("class") == "mark-bar"]
    flat = [v for r in drawn for v in r]
    assert flat == pytest.approx([v for r in written for v in r], abs=0.06)
    assert page.console_errors == []


def test_inputs_set_on_the_page_give_the_cli_answer_and_the_url(page, base_url):
    load(page, base_url + "/")
    page.click("nav button[data-view='infer']")
    page.wait_for_selector("#f-batch")
    page.fill("#f-batch", "16")
    page.fill("#f-prompt", "2k")
    page.select_option("#f-gpu", "h100-sxm-80gb")
    page.evaluate("document.body.dataset.ready = ''")
    page.click("#compute")
    page.wait_for_selector("body[data-ready='1']")
    expected = cli_json("infer", "llama-2-7b", "--gpu", "h100-sxm-80gb", "--batch", "16",
                        "--prompt", "2k", "--sweep")
    numbers = shown(page)
    for key in ("ttft_s", "tpot_s", "max_concurrency", "throughput_tokens_per_s",
                "weights_bytes_per_device"):
        assert numbers[key][0] == expected[key], key
    assert "view=infer" in page.url and "batch=16" in page.url and "prompt=2k" in page.url
    assert page.locator("svg.llmsizer-chart circle.mark-point").count() > 10  # ops + sweep
    assert page.console_errors == []


def test_plan_and_simulate_views_render_their_charts(page, base_url):
    load(page, base_url + "/?view=plan&model=llama-2-7b&gpu=a100&gpus=16&seq=4096"
         "&global-batch=256")
    assert page.locator("#plans tr").count() == 11  # header + --top 10
    assert page.locator("svg.llmsizer-chart path.mark-line").count() == 1
    load(page, base_url + "/?view=simulate&model=llama-2-7b&gpu=a100&requests=100&qps=5")
    expected = cli_json("simulate", "llama-2-7b", "--gpu", "a100", "--requests", "100",
                        "--qps", "5")
    assert shown(page)["ttft_s.p99"][0] == expected["ttft_s"]["p99"]
    assert page.locator("svg.llmsizer-chart").count() == 2
    assert page.console_errors == []


def test_bad_input_shows_the_cli_one_line_error(page, base_url):
    load(page, base_url + "/?view=train&model=llama-2-7b&gpu=a100&tp=x")
    error = page.inner_text("#error")
    assert error == "--tp=x is not allowed: a positive integer up to 65,536"


def test_language_switch_gives_chinese_labels(page, base_url):
    load(page, base_url + "/?view=train&model=llama-2-7b&gpu=a100")
    page.evaluate("document.body.dataset.ready = ''")
    page.select_option("#lang", "zh")
    page.wait_for_selector("body[data-ready='1']")
    assert page.inner_text("#results h2") == "结果"
    assert "每设备显存" in page.text_content("svg.llmsizer-chart .chart-title")
    assert "lang=zh" in page.url
    assert page.console_errors == []


def test_compare_mode_puts_two_gpus_side_by_side(page, base_url):
    load(page, base_url + "/?view=infer&model=llama-2-7b&gpu=a100&compare=h100-sxm")
    columns = page.eval_on_selector_all("#summary tr:first-child th", "t => t.map(x => x.textContent)")
    assert columns[1:] == ["a100", "h100-sxm"]
    assert page.locator(".charts").count() == 2


def test_page_is_interactive_within_a_second(page, base_url):
    load(page, base_url + "/?view=train&model=llama-2-7b&gpu=a100")
    assert int(page.evaluate("document.body.dataset.interactive")) <= 1000


def test_finetune_view_shows_the_cli_numbers(page, base_url):
    load(page, base_url + "/?view=finetune&model=llama-2-7b&gpu=a100&method=lora")
    expected = cli_json("finetune", "llama-2-7b", "--gpu", "a100", "--method", "lora")
    numbers = shown(page)
    assert numbers["trainable_params"][0] == expected["trainable_params"]
    assert numbers["memory_per_device.total"][0] == expected["memory_per_device"]["total"]
    assert page.locator("svg.llmsizer-chart rect.mark-bar").count() >= 5
    assert page.console_errors == []


def test_a_pasted_config_is_uploaded_and_sized(page, base_url):
    from llmsizer.catalog import model_entry

    config = dict(model_entry("llama-2-7b").config, num_hidden_layers=8)
    load(page, base_url + "/?view=params&model=llama-2-7b")
    page.click("#paste summary")
    page.fill("#config-text", json.dumps(config))
    page.evaluate("document.body.dataset.ready = ''")
    page.click("#config-use")
    page.wait_for_selector("body[data-ready='1']")
    assert page.input_value("#f-model").startswith("upload:")
    total = shown(page)["total"][0]
    assert total < cli_json("params", "llama-2-7b")["total"] / 3  # 8 of 32 layers, plus embeddings
    assert page.console_errors == []
