"""How much of an accelerator's peak real kernels reach: named, sourced, overridable factors.

Matrix products: a per-device ceiling (seed 003 sec. 1.3: an A800 reaches at most about 80 % of
its 312 TFLOP/s) times tile and wave quantization (a GEMM is cut into tm×tn output tiles; the SMs
run them in waves, and a last partial wave or a padded edge tile wastes the rest; NVIDIA's "Matrix
Multiplication Background User's Guide"). Memory streams reach a fraction of peak bandwidth. These
are the calibration knobs of issue 5; until then the defaults below are stated assumptions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

from llmsizer.errors import SpecError
from llmsizer.graph import Gemm
from llmsizer.specs.hardware import Accelerator


@dataclass(frozen=True)
class Efficiency:
    matmul_ceiling: float = 0.80  # seed 003: "A800 reaches at most ~80% of 312 TFLOPS"
    attention_efficiency: float = 0.60  # fused (flash) attention kernels: of peak
    memory_ceiling: float = 0.85  # STREAM-like copy kernels on HBM reach 80-90 % of peak
    comm_efficiency: float = 0.80  # NCCL bus bandwidth over link peak (nccl-tests on NVLink)
    inter_node_efficiency: float = 0.80  # the same across nodes (InfiniBand/RoCE NICs)
    tile_m: int = 128
    tile_n: int = 128
    collective_latency_s: float = 5e-6  # per hop of a collective (NVLink; 2x across nodes)
    kernel_overhead_s: float = 4e-6  # launch + tail per kernel in a decode step
    source: str = "defaults (uncalibrated): see llmsizer.analysis.efficiency"

    def __post_init__(self) -> None:
        for name in ("matmul_ceiling", "attention_efficiency", "memory_ceiling",
                     "comm_efficiency", "inter_node_efficiency"):
            v = getattr(self, name)
            if not 0 < v <= 1:
                raise SpecError(name, v, "a fraction in (0, 1]")

    def describe(self) -> dict[str, str]:
        """The factors in words (a new dict each call; built once per set of factors)."""
        return dict(_describe(self))

    def _words(self) -> dict[str, str]:
        return {
            "matmul_ceiling": f"{self.matmul_ceiling:.0%} of peak at best",
            "attention_efficiency": f"{self.attention_efficiency:.0%} of peak in attention kernels",
            "memory_ceiling": f"{self.memory_ceiling:.0%} of peak memory bandwidth",
            "comm_efficiency": f"{self.comm_efficiency:.0%} of intra-node link bandwidth",
            "inter_node_efficiency": f"{self.inter_node_efficiency:.0%} of the network's bandwidth",
            "kernel_overhead": f"{self.kernel_overhead_s * 1e6:g} µs per kernel in decode steps",
            "tiles": f"{self.tile_m}x{self.tile_n} output tiles, waves over the SMs",
            "efficiency source": self.source,
        }

    @classmethod
    def for_accelerator(cls, acc: Accelerator | None, calibration: str | None = None,
                        workload: str = "training") -> Efficiency:
        """The efficiency factors for `acc`: from a calibration file if given, else from the
        calibrated values in catalog/data/efficiency.json for the workload ("training" or
        "serving": fitted apart, because training and serving frameworks differ), per
        accelerator where fitted, else the workload's default."""
        if calibration is None:
            return _packaged_efficiency(acc, workload)
        packaged = _workload_entry(_packaged_table(), acc, workload)
        from llmsizer.files import FileInputError, read_json

        try:
            data = read_json(calibration, "calibration")
        except FileInputError as e:
            raise SpecError("calibration", str(calibration), e.reason) from None
        # What the file does not set keeps the packaged value of this workload and accelerator:
        # a GEMM benchmark moves the matrix ceiling, not serving's kernel overhead.
        layers = [data, _workload_entry(data, acc, workload, flat=False)]
        merged = dict(packaged)
        for layer in layers:
            merged |= {k: v for k, v in layer.items() if k not in ("training", "serving")}
        merged["source"] = str(layers[1].get("source") or data.get("source") or calibration)
        return cls.from_dict(merged, str(calibration))

    @classmethod
    def from_dict(cls, data: dict[str, object], origin: str) -> Efficiency:
        """Factors from a JSON object, checked against llmsizer.files.EFFICIENCY_FIELDS."""
        from llmsizer.files import EFFICIENCY_FIELDS, check_object

        check_object(data, EFFICIENCY_FIELDS, origin)
        known = set(EFFICIENCY_FIELDS) - {"source", "gpu", "fitted_on", "notes"}
        values = {k: data[k] for k in known if k in data}
        return cls(**values, source=str(data.get("source", origin)))  # type: ignore[arg-type]


@cache
def _packaged_efficiency(acc: Accelerator | None, workload: str) -> Efficiency:
    """The packaged factors of one accelerator and workload (read and checked once)."""
    return Efficiency.from_dict(_workload_entry(_packaged_table(), acc, workload),
                                f"catalog/data/efficiency.json ({workload})")


def _workload_entry(data: dict[str, Any], acc: Accelerator | None, workload: str,
                    flat: bool = True) -> dict[str, Any]:
    """The factors for `workload` and `acc` from a table: {"training": {"default",
    "accelerators"}, "serving": ...} (what `llmsizer calibrate` writes) gives each workload its
    own, per accelerator where fitted; a table without sections is one set for every workload
    (`flat`), or nothing to add (not `flat`)."""
    if "training" not in data and "serving" not in data:
        return data if flat else {}
    table = data.get(workload) or {}
    per = table.get("accelerators") or {}
    entry = per.get(acc.name) if acc is not None else None
    return dict(table.get("default") or {}) | dict(entry or {})


def matmul_efficiency(m: int, n: int, eff: Efficiency, acc: Accelerator, batch: int = 1,
                      k: int | None = None) -> float:
    """Fraction of peak an (m×k)·(k×n) product reaches: ceiling × padding × wave quantization.

    Skinny products (decode: m = batch) use the smallest tile height that holds m (16 to tile_m,
    as CUTLASS/cuBLAS kernels offer), and when the output tiles cannot fill the SMs the reduction
    dimension is split across them (split-K, up to k/512 ways) as cuBLAS does.
    """
    tm = min(eff.tile_m, max(16, 1 << max(0, (m - 1).bit_length())))
    tn = eff.tile_n
    tiles_m, tiles_n = math.ceil(m / tm), math.ceil(n / tn)
    padding = (m * n) / (tiles_m * tm * tiles_n * tn)
    tiles = tiles_m * tiles_n * batch
    sms = acc.sm_count or 0
    if sms:
        if k and tiles < sms:
            tiles *= min(math.ceil(sms / tiles), max(1, k // 512))
        waves = math.ceil(tiles / sms)
        wave = tiles / (waves * sms)
    else:
        wave = 1.0
    return eff.matmul_ceiling * padding * wave


@cache
def _describe(eff: Efficiency) -> dict[str, str]:
    return eff._words()


def roofline(flops: float, bytes_moved: float, peak_flops: float, bandwidth: float,
             matmul_eff: float, eff: Efficiency) -> tuple[float, str]:
    """Roofline time of one op (Williams et al. 2009): the slower of its compute and its memory
    traffic, and which of the two bounds it ("compute" or "memory")."""
    compute = flops / (peak_flops * matmul_eff) if flops else 0.0
    memory = bytes_moved / (bandwidth * eff.memory_ceiling) if bytes_moved else 0.0
    return (compute, "compute") if compute >= memory else (memory, "memory")


def op_time(flops: float, bytes_moved: float, peak_flops: float, bandwidth: float,
            matmul_eff: float, eff: Efficiency) -> float:
    """Roofline time of one op: the slower of its compute and its memory traffic."""
    return roofline(flops, bytes_moved, peak_flops, bandwidth, matmul_eff, eff)[0]


# Where a datasheet gives no fp32 (CUDA-core / vector) rate, it is taken as H100 SXM's ratio of
# fp32 to dense bf16 tensor throughput: 67 / 989.4 TFLOP/s (NVIDIA H100 Tensor Core GPU datasheet).
VECTOR_TO_TENSOR_RATIO = 67 / 989.4


def vector_peak(acc: Accelerator) -> float:
    """FLOP/s of element-wise work off the tensor cores (recurrent scans, convolutions): the fp32
    rate, or the tensor peak scaled by VECTOR_TO_TENSOR_RATIO where no fp32 rate is stated."""
    if "fp32" in acc.peak_flops:
        return acc.peak_flops["fp32"]
    tensor = acc.peak_flops.get("bf16") or acc.peak_flops.get("fp16") or max(
        acc.peak_flops.values())
    return tensor * VECTOR_TO_TENSOR_RATIO


def gemm_efficiency(g: Gemm, eff: Efficiency, acc: Accelerator) -> float:
    """`matmul_efficiency` of one op's product on one device (see `graph.Op.rank_gemm`)."""
    return matmul_efficiency(max(1, math.ceil(g.rows)), g.n, eff, acc,
                             batch=max(1, math.ceil(g.instances)), k=g.k)


@cache
def _packaged_table() -> dict[str, Any]:
    """catalog/data/efficiency.json, read once per process (the validation runner asks per case)."""
    import json
    from importlib import resources

    text = resources.files("llmsizer.catalog").joinpath("data", "efficiency.json").read_text(
        "utf-8")
    return json.loads(text)  # type: ignore[no-any-return]
