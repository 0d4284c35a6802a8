"""Start-up cost of `llmsizer params MODEL`, as a ratio to a bare Python start.

Run: python benchmarks/bench_cli.py [--runs 20]
The target (issue 2): under 0.3 s wall time. The ratio to `python -c pass` is printed too, since it
carries over between machines better than seconds do.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def wall(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    bare = wall([sys.executable, "-c", "pass"], args.runs)
    rows = []
    for argv in (["params", "llama-2-7b"], ["params", "llama-3.1-405b", "--json"],
                 ["params", "mixtral-8x22b", "--explain"], ["models"]):
        t = wall([sys.executable, "-m", "llmsizer", *argv], args.runs)
        rows.append((" ".join(argv), t))
    print(f"bare python start: {bare * 1e3:.0f} ms (median of {args.runs})")
    for name, t in rows:
        print(f"llmsizer {name:35s} {t * 1e3:6.0f} ms  ratio to bare start {t / bare:4.1f}x"
              f"  {'OK' if t < 0.3 else 'OVER'} (< 300 ms)")


if __name__ == "__main__":
    main()
