"""From kernel timings to the files llmsizer reads: a calibration (`--calibration`) and, on a
CPU, a device description (`--gpu FILE`, the catalog/data/accelerators.json format).

Each factor is a measured fraction of a peak: on a GPU of the datasheet's peak; on a CPU, where
no datasheet peak applies to a share of cores, of the peak measured here (the best GEMM, the
best STREAM kernel, the best collective bus bandwidth), written into the device file with it.
"""

from __future__ import annotations

import datetime
import math
import re
from dataclasses import dataclass
from typing import Any

from llmsizer.specs.hardware import Accelerator

FLOOR = 1e-3  # a fraction is kept in (0, 1]: the schema's range for every factor


@dataclass(frozen=True)
class Calibration:
    factors: dict[str, Any]  # the calibration file's content
    device: dict[str, Any] | None  # a device file (CPU), or None (a catalog GPU)
    peaks: dict[str, float]  # what the fractions are relative to: FLOP/s, bytes/s


def _fraction(x: float) -> float:
    return float(min(1.0, max(FLOOR, x))) if math.isfinite(x) else 1.0


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "cpu"


def gemm_throughput(gemms: list[dict[str, Any]]) -> float:
    """FLOP/s over the step's products: all their FLOPs over all their time (each weighted by
    how often the step runs it), the rate the step's GEMMs would run at together."""
    flops = sum(g["count"] * g["flops"] for g in gemms)
    seconds = sum(g["count"] * g["flops"] / g["flops_per_s"] for g in gemms)
    return flops / seconds


def _hops(n: int) -> int:
    return max(1, math.ceil(math.log2(n)))


def comm_factors(rows: list[dict[str, Any]], world: int) -> dict[str, float]:
    """Bus bandwidth of the large all-reduce, the best large collective's bus bandwidth, and the
    per-hop latency of the tiny all-reduce (llmsizer's model: 2·⌈log2 n⌉ hops per all-reduce)."""
    ok = [r for r in rows if "seconds" in r]
    big = max(r["bytes"] for r in ok if r["op"] == "all_reduce")
    small = min(r["bytes"] for r in ok if r["op"] == "all_reduce")
    ar = next(r for r in ok if r["op"] == "all_reduce" and r["bytes"] == big)
    best = max(r["bus_bytes_s"] for r in ok if r["bytes"] >= big // world)
    lat = next(r["seconds"] for r in ok if r["op"] == "all_reduce" and r["bytes"] == small)
    return {"all_reduce_bus_bytes_s": ar["bus_bytes_s"], "best_bus_bytes_s": best,
            "latency_s": lat / (2 * _hops(world))}


def _structural(gemms: list[dict[str, Any]], acc: Accelerator) -> float:
    """The flop-weighted padding × wave factor llmsizer applies to these shapes on `acc` (so that
    the ceiling written, times that factor, gives back the measured rate)."""
    try:
        from llmsizer.analysis.efficiency import Efficiency, matmul_efficiency

        one = Efficiency(matmul_ceiling=1.0)
        total = sum(g["count"] * g["flops"] for g in gemms)
        return sum(g["count"] * g["flops"] * matmul_efficiency(g["m"], g["n"], one, acc, k=g["k"])
                   for g in gemms) / total
    except (ImportError, TypeError):  # the efficiency model changed shape: no correction
        return 1.0


def _attention_factors(a: dict[str, Any], peak: float) -> dict[str, float]:
    """Fused attention at the measured length: the forward's fraction of peak and the backward's
    relative to it (backward FLOPs = 2.5× forward, FlashAttention-2 sec. 4.1), with no length
    correction (attention_half_seq 0: this is the efficiency at this length). A backward faster
    than its forward cannot be written as a ratio ≤ 1: then one fraction for both passes."""
    fwd = a["forward_flops"] / a["forward_s"] / peak
    bwd_s = a["forward_backward_s"] - a["forward_s"]
    bwd = a["training_flops"] - a["forward_flops"]
    ratio = (bwd / bwd_s / peak) / fwd if bwd_s > 0 else math.inf
    if ratio <= 1:
        return {"attention_efficiency": _fraction(fwd), "attention_backward_ratio":
                _fraction(ratio), "attention_half_seq": 0.0}
    both = a["training_flops"] / a["forward_backward_s"] / peak
    return {"attention_efficiency": _fraction(both), "attention_backward_ratio": 1.0,
            "attention_half_seq": 0.0}


def build(r: dict[str, Any], *, device: str, dtype: str, world: int, what: str,
          cpu_name: str, host_memory_bytes: int, acc: Accelerator | None) -> Calibration:
    """The calibration (and CPU device file) from rank 0's kernel timings `r`."""
    stamp = datetime.date.today().isoformat()
    gemm = gemm_throughput(r["gemms"])
    stream_bw = max(r["stream"].values())
    elementwise_bw = r["elementwise"]["model_bytes"] / r["elementwise"]["seconds"]
    attn = r["attention"]["training_flops"] / r["attention"]["forward_backward_s"]
    comm = comm_factors(r["collectives"], world) if r.get("collectives") else None
    device_json = None
    if acc is None:  # a CPU: the peaks are the best measured here
        peaks = dict(r["peak_flops"])
        peaks[dtype] = max(peaks.get(dtype, 0.0), gemm,
                           max(g["flops_per_s"] for g in r["gemms"]))
        bandwidth = max(stream_bw, elementwise_bw)
        link = 2 * comm["best_bus_bytes_s"] if comm else None
        name = f"cpu-measured-{_slug(cpu_name)}-{r['threads']}t"
        device_json = _cpu_device(name, cpu_name, r["threads"], world, peaks, bandwidth, link,
                                  host_memory_bytes, stamp)
        structural = 1.0
    else:
        peaks = {k: acc.peak_flops[k] for k in acc.peak_flops}
        bandwidth = acc.memory_bandwidth_bytes_s
        link = acc.intra_node_link_bytes_s
        structural = _structural(r["gemms"], acc)
    if dtype not in peaks:
        from llmsizer.measure import MeasureError

        raise MeasureError(f"--dtype={dtype!r} is not allowed: {acc.name if acc else 'this device'}"
                           f" has peak figures for {', '.join(peaks)}")
    peak = peaks[dtype]
    measured_on = str(device_json["name"]) if device_json else acc.name  # type: ignore[union-attr]
    factors: dict[str, Any] = {
        "source": f"llmsizer measure kernels on {measured_on} ({stamp})",
        "gpu": measured_on,
        "fitted_on": what,
        "matmul_ceiling": _fraction(gemm / peak / structural),
        **_attention_factors(r["attention"], peak),
        "memory_ceiling": _fraction(elementwise_bw / bandwidth),
        "kernel_overhead_s": float(min(1.0, r["kernel_overhead_s"])),
        "notes": "matmul: the step's products (forward, input and weight gradients of every "
                 "projection and the head) over their time; attention: SDPA forward and "
                 "backward at the model's length, FLOPs as FlashAttention-2 counts them; "
                 "memory: one layer's unfused element-wise kernels, bytes as llmsizer counts "
                 "them, over the device's memory bandwidth",
    }
    if acc is None:
        factors |= {"tile_m": 1, "tile_n": 1}  # a CPU has no tensor-core output tiles to pad
    if comm and link:
        factors["comm_efficiency"] = _fraction(comm["all_reduce_bus_bytes_s"] / (link / 2))
        factors["inter_node_efficiency"] = factors["comm_efficiency"]
        factors["collective_latency_s"] = float(min(1.0, comm["latency_s"]))
    return Calibration(factors, device_json, {
        "peak_flops": peak, "memory_bandwidth_bytes_s": bandwidth,
        "link_bytes_s_one_direction": (link or 0) / 2, "gemm_flops_per_s": gemm,
        "attention_flops_per_s": attn, "elementwise_bytes_s": elementwise_bw,
        "stream_bytes_s": stream_bw})


def _cpu_device(name: str, cpu_name: str, threads: int, world: int, peaks: dict[str, float],
                bandwidth: float, link: float | None, host_memory_bytes: int,
                stamp: str) -> dict[str, Any]:
    """A device file for one process's share of this CPU, in the accelerators.json format."""
    measured = f"measured by llmsizer measure kernels on {cpu_name}, {stamp}"
    out: dict[str, Any] = {
        "name": name,
        "display_name": f"{cpu_name} ({threads} thread{'s' * (threads > 1)} per process, "
                        f"{world} process{'es' * (world > 1)}; measured)",
        "vendor": "measured",
        "peak_tflops": {k: v / 1e12 for k, v in peaks.items() if k in ("fp32", "bf16", "fp16")},
        "memory": {"value": round(host_memory_bytes / world / 2**30, 3), "unit": "GiB"},
        "memory_note": f"host RAM ({host_memory_bytes / 2**30:.1f} GiB) shared by {world} "
                       "process(es): each one's share",
        "memory_bandwidth_gb_s": bandwidth / 1e9,
        "notes": "peak_tflops: the best GEMM measured per dtype; memory bandwidth: the best of "
                 "STREAM copy/triad measured with every process running at once; link: twice "
                 "the best collective bus bandwidth measured (bidirectional total, as datasheets "
                 "state links)",
        "sources": {"peak_tflops": measured, "memory": "os.sysconf(SC_PHYS_PAGES)",
                    "bandwidth": measured},
    }
    if link:
        out["intra_node_link"] = {"name": "gloo (measured)", "bandwidth_gb_s": link / 1e9,
                                  "direction": "bidirectional total (2 x measured bus bandwidth)"}
        out["sources"]["link"] = measured
    return out
