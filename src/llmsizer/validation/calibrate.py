"""Fit how much of each generation's microbenchmarks whole steps reach, and judge the fit on
sources it never saw (leave-one-source-out).

What is fitted is small and physical: per workload, the fraction of the measured matmul and
attention ceilings (generations.json) that a framework's whole step reaches (and for serving the
fraction of the STREAM bandwidth; for both the overhead of one kernel launch), one set for all
generations, refined per generation where the validation set has at least two source families of
that generation. Search: golden-section over each fraction in turn (the objective is one-dimensional
and unimodal along each), minimising the mean over metrics of the mean of min(|log(predicted/
measured)|, 1) (capped, so that one case whose configuration was partly inferred cannot drag the
fit). A fraction that ends on its bound is reported as a missing term, not shipped silently.

Leave-one-source-out: for each source family, fit on every other family and predict it; the
per-family errors are what a user meets on a source the model never saw.
"""

from __future__ import annotations

import datetime
import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmsizer.analysis.efficiency import Efficiency, apply_table, generation_of, measured_efficiency
from llmsizer.validation.cases import Case, load_cases
from llmsizer.validation.runner import Report, Row, run

# Fractions of the measured ceilings: 1.0 is the microbenchmark itself (a step cannot beat it);
# below 0.4 a term is missing, not an efficiency.
BOUNDS = (0.4, 1.0)
# what each workload's fit may scale; both also fit the overhead of a kernel launch (seconds:
# decode steps' kernels, training micro-batches' kernels)
SCALED = {"training": ("matmul_ceiling", "attention_efficiency"),
          "serving": ("matmul_ceiling", "attention_efficiency", "memory_ceiling")}
OVERHEAD_BOUNDS = (1e-6, 30e-6)
MIN_FAMILIES_PER_GENERATION = 2
KIND = {"training": "training", "serving": "inference"}


def objective(report: Report) -> float:
    """Mean over metrics of the mean capped absolute log error (each metric weighs the same)."""
    by_metric: dict[str, list[float]] = {}
    for row in report.rows:
        if row.predicted and row.measured:
            err = min(1.0, abs(math.log(row.predicted / row.measured)))
            by_metric.setdefault(row.metric, []).append(err)
    if not by_metric:
        return 0.0
    return statistics.fmean(statistics.fmean(v) for v in by_metric.values())


def family_of(case: Case) -> str:
    """The case's source family (its `family`, else the id up to the first dash)."""
    return str(case.data.get("family") or case.id.split("-")[0])


def generation_of_case(case: Case) -> str:
    from llmsizer.catalog import get_accelerator

    return generation_of(get_accelerator(case.data["gpu"]))


def eff_from_table(table: dict[str, Any]) -> Callable[[Any, str], Efficiency]:
    """What the runner asks: the factors of (accelerator, workload) under a fitted table."""
    def eff_for(acc: Any, workload: str) -> Efficiency:
        return apply_table(measured_efficiency(acc), table, acc, workload, "fit")
    return eff_for


def _golden(f: Callable[[float], float], lo: float, hi: float, steps: int = 7
            ) -> tuple[float, float]:
    """Minimum of a unimodal f on [lo, hi] by golden-section search: (x, f(x)); the bounds
    themselves are tried too, so a minimum on a bound is found (and reported as such)."""
    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(steps):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    x, fx = (c, fc) if fc <= fd else (d, fd)
    for edge in (lo, hi):
        fe = f(edge)
        if fe < fx - 1e-12:
            x, fx = edge, fe
    return float(f"{x:.3g}"), fx


@dataclass
class WorkloadFit:
    scale: dict[str, float]
    overhead_s: float | None
    generations: dict[str, dict[str, float]] = field(default_factory=dict)
    objective: float = 0.0
    bounds_hit: list[str] = field(default_factory=list)
    cases: int = 0

    def table(self, workload: str, note: str = "") -> dict[str, Any]:
        entry: dict[str, Any] = {"scale": dict(self.scale), "cases": self.cases,
                                 "bounds_hit": list(self.bounds_hit)}
        if note:
            entry["source"] = note
        if self.overhead_s is not None:
            entry["default"] = {"kernel_overhead_s": self.overhead_s}
        if self.generations:
            entry["generations"] = {g: {"scale": s} for g, s in self.generations.items()}
        return {workload: entry}


def fit_workload(cases: list[Case], workload: str, rounds: int = 2,
                 progress: Callable[[str], None] | None = None) -> WorkloadFit:
    """Fit one workload's fractions on `cases` (all of its kind)."""
    cases = [c for c in cases if c.kind == KIND[workload]]
    names = SCALED[workload]
    fit = WorkloadFit({n: 1.0 for n in names}, 8e-6, cases=len(cases))

    def score(subset: list[Case], trial: WorkloadFit) -> float:
        return objective(run(eff_from_table(trial.table(workload)), subset))

    def descend(subset: list[Case], label: str, target: dict[str, float],
                keys: tuple[str, ...]) -> float:
        best = score(subset, fit)
        for r in range(rounds):
            for name in keys:
                def f(x: float, name: str = name) -> float:
                    target[name] = x
                    return score(subset, fit)
                old = target[name]
                x, fx = _golden(f, *BOUNDS)
                target[name] = x if fx < best - 1e-12 else old
                best = min(best, fx)
                if progress:
                    progress(f"{workload} {label} round {r + 1}: {name} × {target[name]:.3f} "
                             f"(objective {best:.4f})")
            if fit.overhead_s is not None and label == "all":
                def h(x: float) -> float:
                    fit.overhead_s = x
                    return score(subset, fit)
                old_h = fit.overhead_s
                x, fx = _golden(h, *OVERHEAD_BOUNDS, steps=6)
                fit.overhead_s = x if fx < best - 1e-12 else old_h
                best = min(best, fx)
        return best

    fit.objective = descend(cases, "all", fit.scale, names)
    # per generation: the matmul fraction only, where two source families or more say so
    by_gen: dict[str, list[Case]] = {}
    for c in cases:
        by_gen.setdefault(generation_of_case(c), []).append(c)
    for gen, subset in sorted(by_gen.items()):
        if len({family_of(c) for c in subset}) < MIN_FAMILIES_PER_GENERATION:
            continue
        fit.generations[gen] = {"matmul_ceiling": fit.scale["matmul_ceiling"]}
        descend(subset, gen, fit.generations[gen], ("matmul_ceiling",))
    fit.objective = score(cases, fit)
    for where, scales in [("all generations", fit.scale)] + [
            (g, s) for g, s in fit.generations.items()]:
        for name, v in scales.items():
            if v <= BOUNDS[0] + 1e-9 or v >= BOUNDS[1] - 1e-9:
                fit.bounds_hit.append(
                    f"{workload} {name} × {v:g} ({where}) sits on its bound {BOUNDS}: a term is "
                    + ("missing that makes predictions too slow" if v >= BOUNDS[1] - 1e-9 else
                       "missing that makes predictions too fast"))
    if fit.overhead_s is not None and not (
            OVERHEAD_BOUNDS[0] * 1.001 < fit.overhead_s < OVERHEAD_BOUNDS[1] * 0.999):
        fit.bounds_hit.append(
            f"{workload} kernel_overhead_s {fit.overhead_s:g} s sits on its bound "
            f"{OVERHEAD_BOUNDS}: a term is missing that makes predictions too "
            + ("fast" if fit.overhead_s >= OVERHEAD_BOUNDS[1] * 0.999 else "slow"))
    return fit


def fit(cases: list[Case] | None = None, rounds: int = 2,
        progress: Callable[[str], None] | None = None) -> tuple[dict[str, Any], str]:
    """Fit training and serving apart on the fitting split: (efficiency table, summary)."""
    cases = cases if cases is not None else load_cases("training") + load_cases("inference")
    today = datetime.date.today().isoformat()
    table: dict[str, Any] = {}
    summary = []
    for workload in ("training", "serving"):
        fitting = [c for c in cases if c.split == "fit" and c.kind == KIND[workload]]
        f = fit_workload(fitting, workload, rounds, progress)
        note = (f"fitted by `llmsizer calibrate --from-validation` on the {len(fitting)} fitting "
                f"{KIND[workload]} cases ({today}): fractions of the generations' measured "
                f"ceilings; objective (mean over metrics of mean capped |log error|) "
                f"{f.objective:.3f}")
        table |= f.table(workload, note)
        summary.append(f"{workload}: objective {f.objective:.3f} on {len(fitting)} fitting cases"
                       + (f"; on a bound: {'; '.join(f.bounds_hit)}" if f.bounds_hit else ""))
    return table, "; ".join(summary)


@dataclass
class Loso:
    """Leave-one-source-out rows (each predicted by a fit that never saw its family)."""

    rows: list[tuple[str, Row]]  # (family, row)

    def by_family(self, metric: str) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for fam, r in self.rows:
            if r.metric == metric and r.error is not None:
                out.setdefault(fam, []).append(abs(r.error))
        return out

    def summary(self, metric: str) -> dict[str, Any]:
        """Median over families of each family's median error, the 90th percentile over all
        cases, the worst family's median."""
        fams = self.by_family(metric)
        if not fams:
            return {"metric": metric, "families": 0, "cases": 0}
        medians = {f: statistics.median(v) for f, v in fams.items()}
        errs = sorted(e for v in fams.values() for e in v)
        worst = max(medians, key=lambda f: medians[f])
        return {"metric": metric, "families": len(fams), "cases": len(errs),
                "median_of_family_medians": statistics.median(medians.values()),
                "p90_all_cases": errs[min(len(errs) - 1, math.ceil(0.9 * len(errs)) - 1)],
                "worst_family": worst, "worst_family_median": medians[worst],
                "per_family": {f: {"cases": len(fams[f]), "median_abs_error": medians[f],
                                   "max_abs_error": max(fams[f])} for f in sorted(fams)}}


# Leave-one-source-out results of this process by (workload, rounds, the cases' ids and data):
# the model, its catalog and the packaged fitting procedure do not change while a process runs,
# so the same cases give the same table (a `validate` and the accuracy gate in one test run
# compute it once; each takes minutes)
_LOSO_DONE: dict[tuple[str, int, tuple[tuple[str, str], ...]], Loso] = {}


def leave_one_source_out(cases: list[Case], workload: str, rounds: int = 1,
                         progress: Callable[[str], None] | None = None) -> Loso:
    """For each source family of `workload`'s cases: fit on the others, predict it (once per
    process for the same cases: _LOSO_DONE)."""
    cases = [c for c in cases if c.kind == KIND[workload]]
    key = (workload, rounds, tuple((c.id, json.dumps(c.data, sort_keys=True, default=str))
                                   for c in cases))
    if key in _LOSO_DONE:
        return _LOSO_DONE[key]
    families = sorted({family_of(c) for c in cases})
    rows: list[tuple[str, Row]] = []
    for k, fam in enumerate(families):
        if progress:
            progress(f"leave-one-source-out {workload}: {k + 1}/{len(families)} ({fam})")
        held = [c for c in cases if family_of(c) == fam]
        rest = [c for c in cases if family_of(c) != fam]
        f = fit_workload(rest, workload, rounds)
        report = run(eff_from_table(f.table(workload)), held)
        rows += [(fam, r) for r in report.rows]
    _LOSO_DONE[key] = Loso(rows)
    return _LOSO_DONE[key]
