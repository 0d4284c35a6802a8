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


def fit(cases: list[Case] | None = None, start: Efficiency | None = None, rounds: int = 3,
        progress: Callable[[str], None] | None = None
        ) -> tuple[Efficiency, dict[str, Efficiency], float, int]:
    """(global efficiency, per-accelerator refinements, objective on the fitting cases, number
    of fitting cases)."""
    cases = cases if cases is not None else load_cases("training") + load_cases("inference")
    fitting = [c for c in cases if c.split == "fit"]

    def scorer(subset: list[Case], per: dict[str, Efficiency] | None = None
               ) -> Callable[[Efficiency], float]:
        def score(e: Efficiency) -> float:
            return objective(run(lambda acc: (per or {}).get(acc.name, e), subset))
        return score

    eff, best = _descend(start or Efficiency(), tuple(GRIDS), scorer(fitting), rounds, progress,
                         "global")
    per: dict[str, Efficiency] = {}
    by_gpu: dict[str, list[Case]] = {}
    for c in fitting:
        by_gpu.setdefault(c.data["gpu"], []).append(c)
    for gpu, subset in sorted(by_gpu.items()):
        if len(run(lambda acc: eff, subset).rows) < MIN_ROWS_PER_ACCELERATOR:
            continue
        refined, _ = _descend(eff, PER_ACCELERATOR, scorer(subset), rounds, progress, gpu)
        if refined != eff:
            per[gpu] = refined
    total = scorer(fitting, per)(eff)
    today = datetime.date.today().isoformat()
    note = (f"fitted by `llmsizer calibrate --from-validation` on the {len(fitting)} fitting "
            f"cases ({today}); objective (mean over metrics of mean capped |log error|) {total:.3f}")
    eff = replace(eff, source=note)
    per = {g: replace(e, source=note + f"; refined on the {g} cases") for g, e in per.items()}
    return eff, per, total, len(fitting)


def to_json(eff: Efficiency) -> dict[str, Any]:
    return {"matmul_ceiling": float(eff.matmul_ceiling),
            "attention_efficiency": float(eff.attention_efficiency),
            "memory_ceiling": float(eff.memory_ceiling),
            "comm_efficiency": float(eff.comm_efficiency),
            "inter_node_efficiency": float(eff.inter_node_efficiency),
            "kernel_overhead_s": float(eff.kernel_overhead_s), "source": eff.source}


def efficiency_table(eff: Efficiency, per: dict[str, Efficiency]) -> dict[str, Any]:
    return {"default": to_json(eff), "accelerators": {g: to_json(e) for g, e in per.items()}}
