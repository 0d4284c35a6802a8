"""Fit the efficiency model on the fitting split of the validation cases.

Coordinate descent over a few named factors, each on a grid of physically plausible values,
minimising the mean over metrics of the mean of min(|log(predicted/measured)|, 1) on the
*fitting* cases only (capped, so that one case whose published configuration was partly inferred
cannot drag the fit, yet every case counts); the held-out cases are never looked at here. A
global fit comes first; then, for each accelerator with enough fitting rows, its matrix and
memory efficiencies are refined on its own rows. The result is written to
catalog/data/efficiency.json with what it was fitted on.
"""

from __future__ import annotations

import datetime
import math
import statistics
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from llmsizer.analysis.efficiency import Efficiency
from llmsizer.validation.cases import Case, load_cases
from llmsizer.validation.runner import Report, run

# Plausible ranges: a large GEMM reaches 50-90 % of the dense peak, fused attention 30-80 %,
# a memory stream 60-95 % of HBM bandwidth, NCCL 50-95 % of link bandwidth; a decode kernel's
# launch and tail cost 1-30 µs.
GRIDS: dict[str, list[float]] = {
    "matmul_ceiling": [round(float(x), 3) for x in np.arange(0.50, 0.901, 0.025)],
    "attention_efficiency": [round(float(x), 3) for x in np.arange(0.30, 0.801, 0.05)],
    "memory_ceiling": [round(float(x), 3) for x in np.arange(0.60, 0.951, 0.05)],
    "comm_efficiency": [round(float(x), 3) for x in np.arange(0.50, 0.951, 0.05)],
    "inter_node_efficiency": [round(float(x), 3) for x in np.arange(0.50, 0.951, 0.05)],
    "kernel_overhead_s": [x * 1e-6 for x in (1, 2, 4, 6, 8, 12, 16, 24, 30)],
}
PER_ACCELERATOR = ("matmul_ceiling", "memory_ceiling")
MIN_ROWS_PER_ACCELERATOR = 4


def objective(report: Report) -> float:
    """Mean over metrics of the mean capped absolute log error (each metric weighs the same)."""
    by_metric: dict[str, list[float]] = {}
    for row in report.rows:
        if row.predicted and row.measured:
            err = min(1.0, abs(math.log(row.predicted / row.measured)))
            by_metric.setdefault(row.metric, []).append(err)
    return statistics.fmean(statistics.fmean(v) for v in by_metric.values())


def _descend(eff: Efficiency, names: tuple[str, ...], score: Callable[[Efficiency], float],
             rounds: int, progress: Callable[[str], None] | None, label: str
             ) -> tuple[Efficiency, float]:
    best = score(eff)
    for r in range(rounds):
        changed = False
        for name in names:
            for value in GRIDS[name]:
                trial = replace(eff, **{name: value})  # type: ignore[arg-type]
                s = score(trial)
                if s < best - 1e-9:
                    best, eff, changed = s, trial, True
            if progress:
                progress(f"{label} round {r + 1}: {name} = {getattr(eff, name):g} "
                         f"(objective {best:.4f})")
        if not changed:
            break
    return eff, best


# What each workload's fit may move: training has no decode kernels; serving within a node
# seldom crosses the network.
WORKLOAD_FACTORS = {
    "training": ("matmul_ceiling", "attention_efficiency", "memory_ceiling", "comm_efficiency",
                 "inter_node_efficiency"),
    "serving": ("matmul_ceiling", "attention_efficiency", "memory_ceiling", "comm_efficiency",
                "kernel_overhead_s"),
}


def fit_workload(cases: list[Case], workload: str, rounds: int = 3,
                 progress: Callable[[str], None] | None = None
                 ) -> tuple[Efficiency, dict[str, Efficiency], float]:
    """Fit one workload's factors on its fitting cases: (default, per accelerator, objective)."""

    def scorer(subset: list[Case], per: dict[str, Efficiency] | None = None
               ) -> Callable[[Efficiency], float]:
        def score(e: Efficiency) -> float:
            return objective(run(lambda acc, _w: (per or {}).get(acc.name, e), subset))
        return score

    # Coordinate descent finds local optima: start from the defaults and from the lower and upper
    # quartiles of every grid, keep the start whose fit is best on the fitting cases.
    names = WORKLOAD_FACTORS[workload]
    starts = [Efficiency()] + [
        replace(Efficiency(),
                **{n: GRIDS[n][int(q * (len(GRIDS[n]) - 1))] for n in names})  # type: ignore[arg-type]
        for q in (0.25, 0.75)]
    fits = [_descend(s, names, scorer(cases), rounds, progress, f"{workload} start {k}")
            for k, s in enumerate(starts)]
    eff, _ = min(fits, key=lambda f: f[1])
    per: dict[str, Efficiency] = {}
    by_gpu: dict[str, list[Case]] = {}
    for c in cases:
        by_gpu.setdefault(c.data["gpu"], []).append(c)
    for gpu, subset in sorted(by_gpu.items()):
        if len(run(lambda acc, _w: eff, subset).rows) < MIN_ROWS_PER_ACCELERATOR:
            continue
        refined, _ = _descend(eff, PER_ACCELERATOR, scorer(subset), rounds, progress,
                              f"{workload} {gpu}")
        if refined != eff:
            per[gpu] = refined
    return eff, per, scorer(cases, per)(eff)


def fit(cases: list[Case] | None = None, rounds: int = 3,
        progress: Callable[[str], None] | None = None) -> tuple[dict[str, Any], str]:
    """Fit training and serving apart on the fitting split: (efficiency table, summary)."""
    cases = cases if cases is not None else load_cases("training") + load_cases("inference")
    today = datetime.date.today().isoformat()
    table: dict[str, Any] = {}
    summary = []
    for workload, kind in (("training", "training"), ("serving", "inference")):
        fitting = [c for c in cases if c.split == "fit" and c.kind == kind]
        eff, per, score = fit_workload(fitting, workload, rounds, progress)
        note = (f"fitted by `llmsizer calibrate --from-validation` on the {len(fitting)} fitting "
                f"{kind} cases ({today}); objective (mean over metrics of mean capped "
                f"|log error|) {score:.3f}")
        table[workload] = {
            "default": to_json(replace(eff, source=note)),
            "accelerators": {g: to_json(replace(e, source=note + f"; refined on the {g} cases"))
                             for g, e in per.items()},
        }
        summary.append(f"{workload}: objective {score:.3f} on {len(fitting)} fitting cases")
    return table, "; ".join(summary)


def to_json(eff: Efficiency) -> dict[str, Any]:
    return {"matmul_ceiling": float(eff.matmul_ceiling),
            "attention_efficiency": float(eff.attention_efficiency),
            "memory_ceiling": float(eff.memory_ceiling),
            "comm_efficiency": float(eff.comm_efficiency),
            "inter_node_efficiency": float(eff.inter_node_efficiency),
            "kernel_overhead_s": float(eff.kernel_overhead_s), "source": eff.source}
