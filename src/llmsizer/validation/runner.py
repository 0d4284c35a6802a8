"""Predict every validation case and compare with what was measured.

Training cases are compared on step time. A source that reports TFLOP/s or MFU instead is turned
into the step time it implies with that source's own FLOPs convention (Narayanan et al.'s
96·B·s·l·h²·(1 + s/6h + V/16lh) for "hardware" figures; llmsizer's model FLOPs for "model"
figures) so that like is compared with like; the conversion used is recorded per row.
Inference cases are compared on throughput, TTFT, TPOT and end-to-end latency where published.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmsizer.analysis.efficiency import Efficiency
from llmsizer.errors import LlmsizerError
from llmsizer.validation.cases import Case, load_cases


@dataclass(frozen=True)
class Row:
    case: str
    kind: str
    split: str
    metric: str
    measured: float
    predicted: float | None  # None: not predicted (e.g. does not fit)
    source: str
    how: str = ""

    @property
    def error(self) -> float | None:
        if self.predicted is None:
            return None
        return (self.predicted - self.measured) / self.measured


@dataclass
class Report:
    rows: list[Row]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (case, why)

    def summary(self) -> list[dict[str, Any]]:
        out = []
        metrics = sorted({r.metric for r in self.rows})
        for metric in metrics:
            for split in ("fit", "holdout"):
                errs = [abs(r.error) for r in self.rows
                        if r.metric == metric and r.split == split and r.error is not None]
                missing = sum(1 for r in self.rows
                              if r.metric == metric and r.split == split and r.error is None)
                if not errs and not missing:
                    continue
                out.append({
                    "metric": metric, "split": split, "n": len(errs), "not_predicted": missing,
                    "mean_abs_error": statistics.fmean(errs) if errs else None,
                    "median_abs_error": statistics.median(errs) if errs else None,
                    "max_abs_error": max(errs) if errs else None,
                })
        return out


def _model(case: Case) -> Any:
    from llmsizer.catalog import get_model

    m = case.data["model"]
    if "catalog" in m:
        return get_model(m["catalog"])
    return get_model(dict(m["config"]), origin=f"{case.origin}: case {case.id}: model.config")


def _training_rows(case: Case, eff_for: Callable[[Any, str], Efficiency]) -> list[Row]:
    from llmsizer.analysis.cluster import Cluster
    from llmsizer.analysis.training import train_step
    from llmsizer.catalog import get_accelerator
    from llmsizer.formulas import flops_megatron
    from llmsizer.specs.parallel import Parallelism, parse_schedule
    from llmsizer.specs.precision import optimizer, training_precision

    d = case.data
    spec, acc = _model(case), get_accelerator(d["gpu"])
    schedule, v = parse_schedule(d.get("schedule") or "1f1b")
    gb, mb, dp = d["global_batch"], d["micro_batch"], d["dp"]
    par = Parallelism(dp=dp, tp=d["tp"], pp=d["pp"], cp=d.get("cp", 1), ep=d.get("ep", 1),
                      sequence_parallel=bool(d.get("sequence_parallel")) and d["tp"] > 1,
                      zero=d.get("zero", 0) if dp * d.get("cp", 1) > 1 else 0,
                      recompute=d.get("recompute", "none"), micro_batch=mb,
                      grad_accum=max(1, gb // (mb * dp)), schedule=schedule, virtual_stages=v,
                      stage_split=(tuple(d["stage_split"])  # type: ignore[arg-type]
                                   if d.get("stage_split") else None))
    precision = training_precision(d.get("precision", "mixed"))
    r = train_step(spec, par, precision, optimizer("adam"), d["seq"],
                   Cluster(acc, gpus_per_node=d.get("gpus_per_node", 8)),
                   eff_for(acc, "training"),
                   # published MFU figures count attention dense (PaLM, Megatron-LM)
                   mfu_attention="dense", framework=d.get("framework") or "megatron",
                   fp8_recipe=d.get("fp8_recipe") or "delayed",
                   moe_dispatcher=d.get("moe_dispatcher") or "alltoall",
                   moe_a2a_overlap=bool(d.get("moe_a2a_overlap")),
                   attention_backward=d.get("attention") or "flash",
                   cuda_graphs=d.get("cuda_graphs") or "none")
    m, gpus, tokens = d["measured"], d["gpus"], par.global_batch * d["seq"]
    rows = []
    measured_step, how = None, ""
    if m.get("step_time_s"):
        measured_step, how = m["step_time_s"], "step time as published"
    elif m.get("tokens_per_s_per_gpu"):
        measured_step = tokens / (m["tokens_per_s_per_gpu"] * gpus)
        how = "tokens/s/GPU → step time"
    elif m.get("tflops_per_gpu"):
        if m.get("flops_convention") == "hardware":
            f = flops_megatron(spec, par.global_batch, d["seq"],
                               recompute=par.recompute == "full").value
            how = "TFLOP/s with Narayanan et al.'s formula → step time"
        else:
            f = r.step_flops.model_flops
            how = "TFLOP/s with model FLOPs → step time"
        measured_step = f / (m["tflops_per_gpu"] * 1e12 * gpus)
    elif m.get("mfu"):
        peak = acc.peak("bf16")
        measured_step = r.step_flops.model_flops / (m["mfu"] * peak * gpus)
        how = "MFU with model FLOPs and the bf16 peak → step time"
    if measured_step:
        rows.append(Row(case.id, "training", case.split, "training step time", measured_step,
                        r.time.total_s, case.source, how))
    if m.get("peak_memory_bytes"):
        rows.append(Row(case.id, "training", case.split, "training peak memory",
                        m["peak_memory_bytes"], r.memory.peak.total, case.source,
                        "peak memory as published"))
    return rows


def _inference_rows(case: Case, eff_for: Callable[[Any, str], Efficiency]) -> list[Row]:
    from llmsizer.analysis.inference import ServingConfig, max_concurrency, serve
    from llmsizer.catalog import get_accelerator
    from llmsizer.specs.precision import kv_dtype_bytes, weight_format

    d = case.data
    if not d.get("prompt") or not d.get("output"):
        raise _Skip("prompt or output length not published")
    spec, acc = _model(case), get_accelerator(d["gpu"])
    weights = weight_format(d.get("weights") or "bf16")
    kv = kv_dtype_bytes(d.get("kv_dtype") or "bf16")
    cfg = ServingConfig(tp=d["tp"], pp=d.get("pp", 1), weights=weights, kv_dtype_bytes=kv)
    eff = eff_for(acc, "serving")
    prompt, output = d["prompt"], d["output"]
    batch = d.get("batch") or d.get("concurrency")
    how = f"batch {batch} as published"
    if not batch:
        limit = max_concurrency(spec, acc, cfg, prompt + output)
        if limit < 1:
            raise _Skip("does not fit in llmsizer's memory model")
        batch = min(limit, 1024)
        how = f"offline: batch {batch} = what fits (capped at 1024)"
    r = serve(spec, acc, cfg, batch=batch, prompt=prompt, output=output, eff=eff)
    m = d["measured"]
    rows = []
    if m.get("throughput_tokens_per_s"):
        definition = (m.get("throughput_definition") or "").lower()
        measured = m["throughput_tokens_per_s"]
        if "per gpu" in definition:
            measured *= cfg.tp * cfg.pp
        elif d.get("data_parallel"):
            measured /= d["data_parallel"]
        predicted = r.throughput_tokens_per_s
        if "input+output" in definition or "total" in definition and "output" not in definition:
            predicted *= (prompt + output) / output
        rows.append(Row(case.id, "inference", case.split, "inference throughput", measured,
                        predicted, case.source, how))
    for key, metric, value in (("ttft_s", "inference TTFT", r.ttft_s),
                               ("tpot_s", "inference TPOT", r.tpot_s),
                               ("e2e_latency_s", "inference e2e latency", r.e2e_latency_s)):
        if m.get(key) and (d.get("batch") or d.get("concurrency")):
            rows.append(Row(case.id, "inference", case.split, metric, m[key], value,
                            case.source, how))
    return rows


class _Skip(Exception):
    pass


def run(eff_for: Callable[[Any, str], Efficiency] | None = None,
        cases: list[Case] | None = None) -> Report:
    """Predict all cases (default: the packaged ones) with the efficiency
    `eff_for(accelerator, workload)` (workload: "training" or "serving")."""
    if eff_for is None:
        def eff_for(acc: Any, workload: str) -> Efficiency:
            return Efficiency.for_accelerator(acc, workload=workload)
    if cases is None:
        cases = load_cases("training") + load_cases("inference")
    report = Report([])
    for case in cases:
        try:
            rows = (_training_rows if case.kind == "training" else _inference_rows)(case, eff_for)
        except _Skip as why:
            report.skipped.append((case.id, str(why)))
            continue
        except LlmsizerError as e:
            report.skipped.append((case.id, f"not predictable: {e}"))
            continue
        if not rows:
            report.skipped.append((case.id, "no comparable measurement"))
        report.rows += rows
    return report
