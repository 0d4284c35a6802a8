"""Speed of `simulate`: 10,000 requests on one core (issue 11's target: <= 1 s).

Run: python benchmarks/bench_simulate.py [--runs 3]
Prints the one-off set-up (the step-time model: ~150 forward_pass calls per configuration) apart
from the simulation itself, for a loaded server (vLLM defaults, Llama-3-8B on one H100, Poisson
arrivals near saturation, lengths spread) and an overloaded one that preempts, plus simulated
seconds per wall second.
"""

from __future__ import annotations

import argparse
import statistics
import time

from llmsizer.analysis.efficiency import Efficiency
from llmsizer.analysis.inference import ServingConfig
from llmsizer.analysis.serving_sim import simulate, step_cost
from llmsizer.catalog import get_accelerator, get_model
from llmsizer.serving.disaggregated import Disaggregation
from llmsizer.serving.engines import engine_profile
from llmsizer.serving.speculative import Speculation
from llmsizer.serving.workload import synthetic


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    spec, acc = get_model("llama-3-8b"), get_accelerator("h100")
    cfg, eff = ServingConfig(), Efficiency.for_accelerator(acc, workload="serving")
    t0 = time.perf_counter()
    step_cost(spec, acc, cfg, eff, 8192, 8, 126e-6, 4e-6)  # what simulate builds (then cached)
    setup = time.perf_counter() - t0
    print(f"set-up (step-time model, once per configuration): {setup * 1e3:.0f} ms")
    cases = [("vllm, 15 req/s, 1024±50% in, 256±50% out", "vllm", 15.0, None),
             ("vllm, 40 req/s (overloaded, preempting)", "vllm", 40.0, None),
             ("sglang, 15 req/s", "sglang", 15.0, None),
             ("vllm + EAGLE k=3 a=0.7, 15 req/s", "vllm", 15.0, Speculation("eagle", 3, 0.7)),
             ("vllm disaggregated 1P:2D, 30 req/s", "vllm", 30.0, Disaggregation(1, 2, 1, 1))]
    for label, engine, qps, sp in cases:
        dis = sp if isinstance(sp, Disaggregation) else None
        sp = None if dis else sp
        work = synthetic(10_000, 1024, 256, qps=qps, concurrency=None, seed=0,
                         prompt_spread="uniform:0.5", output_spread="uniform:0.5")
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            r = simulate(spec, acc, cfg, engine_profile(engine, acc), work, eff=eff,
                         speculation=sp, disaggregation=dis)
            times.append(time.perf_counter() - t0)
        t = statistics.median(times)
        print(f"{label:44s} 10,000 requests in {t:5.2f} s  {'OK' if t <= 1 else 'OVER'} (<= 1 s)"
              f"  {r.steps:,} steps, {r.preemptions:,} preemptions, "
              f"{r.duration_s / t:,.0f} simulated s per s")


if __name__ == "__main__":
    main()
