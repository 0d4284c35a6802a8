"""Speed of `llmsizer serve`: server-side time of API answers and how soon the page is usable.

Run: python benchmarks/bench_web.py [--runs 20]
Targets (issue 12): an answer for train/infer in <= 50 ms server-side (the Server-Timing header:
from the request line read to the answer ready, parsing and the command included; every query
differs, so no answer comes from the server's cache; `infer --sweep` with a new batch reuses the
sweep's passes the server remembers (web/memo.py), `infer --sweep, new` asks a new workload each
time so nothing is remembered); the page interactive in <= 1 s (the time,
from navigation start, at which the form is built and takes input; measured in Debian's chromium
through Playwright when both are installed). Also: the round trip of a train answer while a slow
plan request is in flight (commands run concurrently: a quick answer does not queue behind a slow
one).
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import threading
import time


def server_ms(port: int, path: str) -> tuple[float, float]:
    """(server-side ms from Server-Timing, round-trip ms) of one GET."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    t0 = time.perf_counter()
    conn.request("GET", path)
    r = conn.getresponse()
    r.read()
    wall = (time.perf_counter() - t0) * 1e3
    conn.close()
    assert r.status == 200, (path, r.status)
    timing = r.getheader("Server-Timing") or "app;dur=nan"
    return float(timing.split("dur=")[1]), wall


QUERIES = {
    "train": "/api/train?model=llama-2-7b&gpu=a100&gpus=8&zero=1&global-batch={n}",
    "train 70B tp8 pp2": "/api/train?model=llama-2-70b&gpu=h100&gpus=64&tp=8&pp=2"
                         "&sequence-parallel=1&recompute=selective&zero=1&global-batch={n}",
    "infer": "/api/infer?model=llama-3-8b&gpu=h100&batch={n}&prompt=2048&output=256",
    "infer --sweep": "/api/infer?model=llama-2-7b&gpu=a100&batch={n}&sweep=1",
    # a workload never asked before (its output length differs): nothing of the sweep is
    # remembered (web/memo.py), every pass is computed
    "infer --sweep, new": "/api/infer?model=llama-2-7b&gpu=a100&batch=16&sweep=1&prompt=1024"
                          "&output={m}",
    "plan (16 GPUs)": "/api/plan?model=llama-2-7b&gpu=a100&gpus=16&seq=4096&global-batch={n}",
}


SLOW = "/api/plan?model=llama-2-70b&gpu=h100&gpus=256&seq=4096&global-batch={n}"


def answer_during_slow_ms(port: int, runs: int) -> tuple[float, float]:
    """(alone, with a slow plan request in flight) median round-trip ms of a train answer: the
    API runs commands concurrently, so a quick answer no longer waits for a slow one."""
    alone, during = [], []
    for i in range(runs):
        alone.append(server_ms(port, QUERIES["train"].format(n=8 * (30_000 + i)))[1])
        slow = threading.Thread(target=server_ms, args=(port, SLOW.format(n=512 * (20 + i))))
        slow.start()
        time.sleep(0.03)  # the plan is running
        during.append(server_ms(port, QUERIES["train"].format(n=8 * (40_000 + i)))[1])
        slow.join()
    return statistics.median(alone), statistics.median(during)


def page_ms(base: str, runs: int) -> list[tuple[float, float]] | None:
    """(interactive ms, first answer drawn ms) per load, or None without playwright/chromium."""
    import os

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not os.path.exists("/usr/bin/chromium"):
        return None
    out = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        for i in range(runs):
            page = browser.new_page()
            page.goto(f"{base}/?view=train&model=llama-2-7b&gpu=a100&gpus=8&global-batch={8 * (i + 1)}")
            page.wait_for_selector("body[data-ready='1']", timeout=20000)
            interactive = float(page.evaluate("document.body.dataset.interactive"))
            ready = page.evaluate("performance.now()")
            out.append((interactive, ready))
            page.close()
        browser.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    from llmsizer.web.server import make_server

    srv, app = make_server("127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    for path in QUERIES.values():  # imports and catalog reads happen once per process
        server_ms(port, path.format(n=8 * 1024, m=1024))
    print(f"API, server-side ms (Server-Timing), median and max of {args.runs} distinct queries:")
    for name, path in QUERIES.items():
        times = [server_ms(port, path.format(n=8 * (i + 1), m=100 + i)) for i in range(args.runs)]
        server = [t[0] for t in times]
        wall = [t[1] for t in times]
        cached = statistics.median(server_ms(port, path.format(n=8, m=100))[0] for _ in range(5))
        target = "" if name.startswith("plan") else \
            ("  OK (<= 50 ms)" if statistics.median(server) <= 50 else "  OVER (> 50 ms)")
        print(f"  {name:20s} median {statistics.median(server):6.1f}  max {max(server):6.1f}  "
              f"round trip {statistics.median(wall):6.1f}  cached {cached:5.2f}{target}")
    server_ms(port, SLOW.format(n=512 * 10))
    alone, during = answer_during_slow_ms(port, min(args.runs, 10))
    print(f"a train answer while a 256-GPU plan is in flight: median round trip {during:.1f} ms "
          f"(alone {alone:.1f} ms; {os.cpu_count()} CPUs)")
    loads = page_ms(f"http://127.0.0.1:{port}", min(args.runs, 10))
    if loads is None:
        print("page: playwright or /usr/bin/chromium not installed; not measured")
    else:
        inter = [x[0] for x in loads]
        ready = [x[1] for x in loads]
        print(f"page interactive: median {statistics.median(inter):.0f} ms, max {max(inter):.0f} ms"
              f"  {'OK' if max(inter) <= 1000 else 'OVER'} (<= 1000 ms); first answer drawn: "
              f"median {statistics.median(ready):.0f} ms")
    srv.shutdown()
    app.close()


if __name__ == "__main__":
    main()
