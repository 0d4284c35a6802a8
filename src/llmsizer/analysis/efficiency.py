"""How much of an accelerator's peak real kernels reach: named, sourced parameters per chip
*generation*, never per SKU.

Every factor is physical and measured by someone for the architecture (catalog/data/
generations.json, each with its citation): the maximum achievable matmul throughput (MAMF) as a
fraction of the dense peak, fused attention efficiency as a function of sequence length, the
achieved HBM stream bandwidth, NCCL's bus bandwidth over NVLink and the NICs. Training and serving
runs may then scale the compute factors by a *fitted* fraction (catalog/data/efficiency.json:
how much of the microbenchmark a framework reaches in a whole step), fitted per workload and, where
the validation set allows, per generation; a SKU never gets a factor of its own, so a part with more
of everything (H200 over H100, A100 over A800) is never predicted slower.

Matrix products additionally lose to tile and wave quantization (a GEMM is cut into tm×tn output
tiles; the SMs run them in waves, and a last partial wave or a padded edge tile wastes the rest;
NVIDIA's "Matrix Multiplication Background User's Guide").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from llmsizer.errors import SpecError
from llmsizer.graph import Gemm
from llmsizer.specs.hardware import Accelerator

# Kernels a transformer layer launches beside the op graph's own (norms' and residual adds'
# element-wise kernels, the activation, rotary embedding), forward; as many again in backward
KERNELS_PER_LAYER_EXTRA = 4

# What a fitted table may scale (each a fraction of the generation's measured value) and what it
# may set outright.
SCALED = ("matmul_ceiling", "fp8_matmul_ceiling", "attention_efficiency", "memory_ceiling",
          "comm_efficiency", "inter_node_efficiency")


@dataclass(frozen=True)
class Efficiency:
    matmul_ceiling: float = 0.80  # seed 003: "A800 reaches at most ~80% of 312 TFLOPS"
    attention_efficiency: float = 0.60  # fused (flash) attention kernels: of peak
    memory_ceiling: float = 0.85  # STREAM-like copy kernels on HBM reach 80-90 % of peak
    comm_efficiency: float = 0.80  # NCCL bus bandwidth over link peak (nccl-tests on NVLink)
    inter_node_efficiency: float = 0.80  # the same across nodes (InfiniBand/RoCE NICs)
    tile_m: int = 128
    tile_n: int = 128
    # FP8 GEMMs reach a lower fraction of their (twice as high) peak than bf16 ones; None: the
    # bf16 fraction
    fp8_matmul_ceiling: float | None = None
    # fused attention reaches attention_efficiency · s/(s + s0) at s tokens of context
    # (0: no dependence on length)
    attention_half_seq: float = 0.0
    attention_backward_ratio: float = 1.0  # backward kernels' efficiency over the forward's
    # FlashAttention-2's efficiency over the generation's measured kernel (1: the measurement is
    # FlashAttention-2's, or none other is known), for frameworks that run it (Profile.attention)
    fa2_attention_ratio: float = 1.0
    # fused attention at head dimension d reaches head_dim_factor(d) of its efficiency at
    # d = 128, the dimension the sequence sweeps are measured at: d/(d + d0) normalised to 1 at
    # 128 and capped there (narrow heads do less matrix work per softmax element and per tile
    # loaded; FlashAttention-3 gains only 4 % from 128 to 256); d0 for the generation's measured
    # kernel and for FlashAttention-2 (0: no dependence)
    attention_half_head_dim: float = 0.0
    fa2_attention_half_head_dim: float = 0.0
    # A product's output tile carries a fixed cost beside its main loop over the reduction
    # dimension (filling the operand pipeline, writing the tile): with reduction depth k it
    # reaches k/(k + k0) of what a deep one does. k0 in elements of a 2-byte type (a 1-byte FP8
    # product's main-loop step spans twice the elements: 2·k0), and the depth the generation's
    # ceiling was measured at (the ceiling is reached there; 0: no dependence on depth)
    matmul_half_k: float = 0.0
    matmul_ceiling_k: float = 0.0
    fp8_matmul_ceiling_k: float = 0.0
    generation: str = ""
    collective_latency_s: float = 5e-6  # per hop of a collective (NVLink; 2x across nodes)
    # launch + tail of one kernel (the gap the GPU spends between kernels, and in eager training
    # the host's time to issue it where the host cannot run ahead): every kernel of a decode step
    # and of a training micro-batch (op_costs.layer_kernels)
    kernel_overhead_s: float = 4e-6
    # The share of compute speed lost while an NCCL collective runs beside it: its kernels hold
    # SMs (one CTA per channel: an all-gather's 24 CTAs of H100's 132 SMs, NVIDIA developer
    # forum thread 337991) and memory bandwidth. Lee et al. 2025 (arXiv:2507.03114, A100, H100,
    # MI250, MI210; GPT and Llama training) measure overlapped computation 18.9 % slower on
    # average than alone: 0.189/1.189 of its speed lost while the collective runs.
    overlap_slowdown: float = 0.189 / 1.189
    source: str = "defaults (uncalibrated): see llmsizer.analysis.efficiency"

    def __post_init__(self) -> None:
        for name in ("matmul_ceiling", "attention_efficiency", "memory_ceiling",
                     "comm_efficiency", "inter_node_efficiency", "fp8_matmul_ceiling",
                     "attention_backward_ratio", "fa2_attention_ratio"):
            v = getattr(self, name)
            if v is not None and not 0 < v <= 1:
                raise SpecError(name, v, "a fraction in (0, 1]")
        if not 0 <= self.attention_half_seq < 1e9:
            raise SpecError("attention_half_seq", self.attention_half_seq, "tokens, >= 0")
        for name in ("attention_half_head_dim", "fa2_attention_half_head_dim"):
            if not 0 <= getattr(self, name) < 1e6:
                raise SpecError(name, getattr(self, name), "head dimensions, >= 0")
        if not 0 <= self.overlap_slowdown < 1:
            raise SpecError("overlap_slowdown", self.overlap_slowdown, "a fraction in [0, 1)")
        for name in ("matmul_half_k", "matmul_ceiling_k", "fp8_matmul_ceiling_k"):
            if not 0 <= getattr(self, name) < 1e9:
                raise SpecError(name, getattr(self, name), "reduction elements, >= 0")

    def matmul_for(self, dtype: str) -> float:
        """The matrix-product ceiling for products run in `dtype`."""
        if dtype == "fp8" and self.fp8_matmul_ceiling is not None:
            return self.fp8_matmul_ceiling
        return self.matmul_ceiling

    def depth_factor(self, k: float, dtype: str = "bf16") -> float:
        """A product's efficiency at reduction depth `k` over the ceiling's, measured at depth
        K: (k/(k + k0))·((K + k0)/K), at most 1 (the ceiling is the best any shape reached);
        k0 doubles for 1-byte FP8 elements."""
        if self.matmul_half_k <= 0:
            return 1.0
        fp8 = dtype == "fp8"
        k0 = self.matmul_half_k * (2.0 if fp8 else 1.0)
        ref = (self.fp8_matmul_ceiling_k if fp8 else 0.0) or self.matmul_ceiling_k
        if ref <= 0:
            return k / (k + k0)
        return min(1.0, k / (k + k0) * (ref + k0) / ref)

    def attention_at(self, context: float, backward: bool = False, head_dim: float = 128,
                     fa2: bool = False) -> float:
        """Fused attention efficiency at `context` tokens per sequence and `head_dim`: short
        sequences leave the kernel's pipeline half empty, narrow heads do less matrix work per
        tile (FlashAttention-2/3/4 sweeps, see generations.json); `fa2`: FlashAttention-2 run
        where the generation's measurement is of a faster kernel (fa2_attention_ratio)."""
        e = self.attention_efficiency * self.head_dim_factor(head_dim, fa2)
        if fa2:
            e *= self.fa2_attention_ratio
        if self.attention_half_seq > 0:
            e *= context / (context + self.attention_half_seq)
        return e * (self.attention_backward_ratio if backward else 1.0)

    def head_dim_factor(self, head_dim: float, fa2: bool = False) -> float:
        """Attention efficiency at `head_dim` over that at 128: (d/(d + d0))·((128 + d0)/128),
        at most 1."""
        d0 = self.fa2_attention_half_head_dim if fa2 else self.attention_half_head_dim
        if d0 <= 0:
            return 1.0
        return min(1.0, head_dim / (head_dim + d0) * (128 + d0) / 128)

    def describe(self) -> dict[str, str]:
        """The factors in words (a new dict each call; built once per set of factors)."""
        return dict(_describe(self))

    def _words(self) -> dict[str, str]:
        return {
            "matmul_ceiling": f"{self.matmul_ceiling:.0%} of peak at best",
            "attention_efficiency": (
                f"{self.attention_efficiency:.0%} of peak in attention kernels"
                + (f" at long context, ·s/(s+{self.attention_half_seq:g})"
                   if self.attention_half_seq else "")),
            "memory_ceiling": f"{self.memory_ceiling:.0%} of peak memory bandwidth",
            "comm_efficiency": f"{self.comm_efficiency:.0%} of intra-node link bandwidth",
            "inter_node_efficiency": f"{self.inter_node_efficiency:.0%} of the network's bandwidth",
            "kernel_overhead": f"{self.kernel_overhead_s * 1e6:g} µs per kernel launched",
            "overlap_slowdown": f"compute loses {self.overlap_slowdown:.0%} of its speed while a "
                                "hidden NCCL collective runs beside it",
            "tiles": f"{self.tile_m}x{self.tile_n} output tiles, waves over the SMs" + (
                f"; a product of reduction depth k at k/(k+{self.matmul_half_k:g}) of a deep one "
                f"(2x that for FP8), normalised at the ceiling's depth "
                f"{self.matmul_ceiling_k:g}" if self.matmul_half_k else ""),
            "generation": self.generation or "(none: explicit factors)",
            "efficiency source": self.source,
        }

    @classmethod
    def for_accelerator(cls, acc: Accelerator | None, calibration: str | None = None,
                        workload: str = "training") -> Efficiency:
        """The factors for `acc` and `workload` ("training" or "serving"): its generation's
        measured values (generations.json), scaled by the packaged fit for the workload
        (efficiency.json), then whatever a calibration file sets (a user's own measurement may
        name its accelerator)."""
        packaged = _packaged_efficiency(acc, workload)
        if calibration is None:
            return packaged
        from llmsizer.files import FileInputError, read_json

        try:
            data = read_json(calibration, "calibration")
        except FileInputError as e:
            raise SpecError("calibration", str(calibration), e.reason) from None
        if "training" not in data and "serving" not in data:
            return apply_table(packaged, data, acc, workload, str(calibration))
        # a fitted table's scales replace the packaged ones (they multiply the generation's
        # measured values, never each other); what the file leaves out stays packaged
        merged = _merge(_packaged_table(), data)
        return apply_table(measured_efficiency(acc), merged, acc, workload, str(calibration))

    @classmethod
    def from_dict(cls, data: dict[str, object], origin: str) -> Efficiency:
        """Factors from a JSON object, checked against llmsizer.files.EFFICIENCY_FIELDS."""
        from llmsizer.files import EFFICIENCY_FIELDS, check_object

        check_object(data, EFFICIENCY_FIELDS, origin)
        known = set(EFFICIENCY_FIELDS) - {"source", "gpu", "fitted_on", "notes"}
        values = {k: data[k] for k in known if k in data}
        return cls(**values, source=str(data.get("source", origin)))  # type: ignore[arg-type]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` laid on `base`, object by object (a nested key replaces only itself)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@cache
def generation_table() -> dict[str, dict[str, Any]]:
    """catalog/data/generations.json by generation name (read once)."""
    import json
    from importlib import resources

    text = resources.files("llmsizer.catalog").joinpath("data", "generations.json").read_text(
        "utf-8")
    return {g["name"]: g for g in json.loads(text)}


def generation_of(acc: Accelerator | None) -> str:
    """The generation an accelerator belongs to, from its catalog `architecture`."""
    arch = str((acc.extras.get("architecture") if acc is not None else "") or "")
    for name, g in generation_table().items():
        if any(arch == a or arch.startswith(a + " (") for a in g["architectures"]):
            return name
    return "other"


@cache
def generation_efficiency(generation: str) -> Efficiency:
    """The generation's measured factors, unscaled."""
    g = generation_table()[generation]
    return Efficiency.from_dict(dict(g["efficiency"]) | {
        "source": f"catalog/data/generations.json ({generation}: measured)",
        "generation": generation}, f"catalog/data/generations.json ({generation})")


def measured_efficiency(acc: Accelerator | None) -> Efficiency:
    """The generation's measured factors, with the matrix-product ceilings of `acc` itself
    where the catalog has them measured (`measured_matmul`: a part of the generation whose
    clocks under load differ from the reference part's, e.g. GB200 against B200), unscaled."""
    base = generation_efficiency(generation_of(acc))
    own = acc.extras.get("measured_matmul") if acc is not None else None
    if acc is None or not own:
        return base
    values: dict[str, Any] = {}
    for dtype, ceiling, depth in (("bf16", "matmul_ceiling", "matmul_ceiling_k"),
                                  ("fp8", "fp8_matmul_ceiling", "fp8_matmul_ceiling_k")):
        m = own.get(dtype)
        if not m or dtype not in acc.peak_flops:
            continue
        values[ceiling] = min(1.0, m["tflops"] * 1e12 / acc.peak(dtype))
        if m.get("depth"):
            values[depth] = float(m["depth"])
    if not values:
        return base
    values["source"] = (base.source + f"; {acc.name}'s own measured matmul ceilings "
                        "(catalog/data/accelerators.json measured_matmul)")
    return replace(base, **values)


def nic_bytes_s(acc: Accelerator | None) -> float:
    """The generation's usual network bandwidth per GPU and direction (one NIC per GPU)."""
    return float(generation_table()[generation_of(acc)]["nic_gbps"]) * 1e9 / 8


@cache
def _packaged_efficiency(acc: Accelerator | None, workload: str) -> Efficiency:
    """The generation's measured factors scaled by the packaged fit of `workload`."""
    return apply_table(measured_efficiency(acc), _packaged_table(), acc, workload,
                       "catalog/data/efficiency.json")


def apply_table(base: Efficiency, data: dict[str, Any], acc: Accelerator | None, workload: str,
                origin: str) -> Efficiency:
    """`base` with a table applied: {"training": {"scale": {...}, "default": {...},
    "generations": {g: {"scale", "default"}}, "accelerators": {name: {...}}}, "serving": ...}
    (what `llmsizer calibrate` writes), or flat factors for every workload. "scale" multiplies the
    generation's measured values; "default"/flat values set a factor outright."""
    from llmsizer.files import EFFICIENCY_FIELDS, check_object

    layers: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (scale, set)
    if "training" not in data and "serving" not in data:
        layers.append(({}, data))
    else:
        table = data.get(workload) or {}
        layers.append((table.get("scale") or {}, table.get("default") or {}))
        gen = (table.get("generations") or {}).get(base.generation or generation_of(acc)) or {}
        layers.append((gen.get("scale") or {}, gen.get("default") or {}))
        if acc is not None:
            layers.append(({}, (table.get("accelerators") or {}).get(acc.name) or {}))
    # Scales first (the generation's replaces the workload's: each multiplies the measured
    # value), then what a table sets outright, in order: a value set outright always wins.
    scales: dict[str, float] = {}
    for scale, _ in layers:
        scales |= {k: float(f) for k, f in scale.items() if k in SCALED}
        # the fraction of the measured matmul ceiling a whole step reaches applies to the FP8
        # ceiling too, unless a table scales that one apart
        if "matmul_ceiling" in scale and "fp8_matmul_ceiling" not in scale:
            scales["fp8_matmul_ceiling"] = float(scale["matmul_ceiling"])
    values: dict[str, Any] = {k: min(1.0, v * f) for k, f in scales.items()
                              if (v := getattr(base, k, None)) is not None}
    source = base.source + (f"; scaled by {origin} ({workload})" if scales else "")
    for _, setting in layers:
        check_object(setting, EFFICIENCY_FIELDS, origin)
        values |= {k: v for k, v in setting.items()
                   if k not in ("source", "gpu", "fitted_on", "notes")}
        source = str(setting.get("source") or source)
    if not values:
        return base
    return replace(base, **values, source=source)


def matmul_efficiency(m: int, n: int, eff: Efficiency, acc: Accelerator, batch: int = 1,
                      k: int | None = None, dtype: str = "bf16") -> float:
    """Fraction of peak an (m×k)·(k×n) product reaches: ceiling × padding × wave quantization.

    Skinny products (decode: m = batch) use the smallest tile height that holds m (16 to tile_m,
    as CUTLASS/cuBLAS kernels offer), and when the output tiles cannot fill the SMs the reduction
    dimension is split across them (split-K, up to k/512 ways) as cuBLAS does. Shallow products
    (small k, e.g. a tensor-parallel shard's output projection) spend more of each tile on its
    fixed cost (`Efficiency.depth_factor`).
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
    depth = eff.depth_factor(k, dtype) if k else 1.0
    return eff.matmul_for(dtype) * padding * wave * depth


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


def gemm_efficiency(g: Gemm, eff: Efficiency, acc: Accelerator, dtype: str = "bf16") -> float:
    """`matmul_efficiency` of one op's product on one device (see `graph.Op.rank_gemm`), with
    the ceiling of products in `dtype`."""
    return matmul_efficiency(max(1, math.ceil(g.rows)), g.n, eff, acc,
                             batch=max(1, math.ceil(g.instances)), k=g.k, dtype=dtype)


@cache
def _packaged_table() -> dict[str, Any]:
    """catalog/data/efficiency.json, read once per process (the validation runner asks per case)."""
    import json
    from importlib import resources

    text = resources.files("llmsizer.catalog").joinpath("data", "efficiency.json").read_text(
        "utf-8")
    return json.loads(text)  # type: ignore[no-any-return]
