"""Single-layout analysis through the Python API: layouts per second on one core.

Run: python benchmarks/bench_api.py [--baseline REV] [--seconds 3]
Each measurement runs in a fresh process: the first call of each layout (per-layer costs built
from the op graph) and the repeats are timed together, cycling over 14 different layouts of
Llama-2-7B on 8 H100s (tp 1-8, ZeRO 0/1, micro-batch 1/2), as a user scripting the API would.
With --baseline, the same program runs on another revision checked out into a temporary git
worktree, and the ratio is printed. Target (issue 9): >= 5,000 layouts/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROGRAM = """
import json, sys, time
from llmsizer import get_model, get_accelerator
from llmsizer.analysis.training import Cluster, train_step
from llmsizer.specs.parallel import Parallelism
from llmsizer.specs.precision import training_precision, optimizer
spec, c = get_model("llama-2-7b"), Cluster(get_accelerator("h100"))
prec, opt = training_precision("mixed"), optimizer("adam")
layouts = [Parallelism(dp=8 // tp, tp=tp, zero=z, micro_batch=mb, grad_accum=4)
           for tp in (1, 2, 4, 8) for z in (0, 1) for mb in (1, 2) if not (z and tp == 8)]
seconds = float(sys.argv[1])
n, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < seconds:
    for p in layouts:
        train_step(spec, p, prec, opt, 4096, c)
        n += 1
print(json.dumps({"per_s": n / (time.perf_counter() - t0)}))
"""


def measure(src: Path, seconds: float, repeat: int) -> float:
    env = dict(os.environ, PYTHONPATH=str(src / "src"))
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", PROGRAM, str(seconds)], capture_output=True,
                             text=True, check=True, env=env, cwd=src)
        runs.append(json.loads(out.stdout)["per_s"])
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", help="a git revision to compare against (e.g. 8c9dbcb)")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    now = measure(ROOT, args.seconds, args.repeat)
    print(f"this tree:        {now:8,.0f} layouts/s  (target >= 5,000)")
    if args.baseline:
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp) / "base"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base),
                            args.baseline], check=True, capture_output=True)
            try:
                then = measure(base, args.seconds, args.repeat)
            finally:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                str(base)], check=True, capture_output=True)
        print(f"{args.baseline}:  {then:8,.0f} layouts/s")
        print(f"ratio:            {now / then:8.1f}x")


if __name__ == "__main__":
    main()
