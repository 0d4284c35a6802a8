"""Planner speed: layouts evaluated per second and the time of a full search.

Run: python benchmarks/bench_planner.py [--repeat 3]
Each search runs in a fresh process, so nothing is cached from a previous one ("cold"); the same
search repeated in one process ("warm") shows the cost without the per-layer set-up.
Targets: >= 300,000 layouts/s cold on one core (issue 9; issue 6 asked for 100,000); 175B on
512 GPUs in <= 5 s (issue 6).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CASES = [
    ("gpt-3-175b", "a100", 512, 2048, 1536),
    ("llama-3.1-70b", "h100", 1024, 8192, 1024),
    ("mixtral-8x22b", "h100", 256, 4096, 512),
]

PROGRAM = """
import json, sys, time
t0 = time.perf_counter()
from llmsizer import get_model, get_accelerator
from llmsizer.analysis import step
from llmsizer.analysis.cluster import Cluster
from llmsizer.analysis.efficiency import Efficiency
from llmsizer.analysis.planner import SearchSpace, search
from llmsizer.specs.precision import optimizer, training_precision
model, gpu, gpus, seq, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
def once():
    st = step.Setting(get_model(model), seq, training_precision("mixed"), optimizer("adam"),
                      Cluster(get_accelerator(gpu)), Efficiency())
    return search(st, SearchSpace(gpus=gpus, global_batch=batch))
cold = once()
warm = once()
print(json.dumps({"evaluated": cold.evaluated, "cold_s": cold.seconds, "warm_s": warm.seconds,
                  "process_s": time.perf_counter() - t0}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"{'search':38s} {'layouts':>8s} {'cold s':>7s} {'cold/s':>9s} {'warm/s':>9s}")
    for model, gpu, gpus, seq, batch in CASES:
        runs = []
        for _ in range(args.repeat):
            out = subprocess.run([sys.executable, "-c", PROGRAM, model, gpu, str(gpus), str(seq),
                                  str(batch)], capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout))
        n = runs[0]["evaluated"]
        cold = statistics.median(r["cold_s"] for r in runs)
        warm = statistics.median(r["warm_s"] for r in runs)
        name = f"{model} on {gpus}x {gpu}, seq {seq}"
        print(f"{name:38s} {n:8,d} {cold:7.3f} {n / cold:9,.0f} {n / warm:9,.0f}")


if __name__ == "__main__":
    main()
