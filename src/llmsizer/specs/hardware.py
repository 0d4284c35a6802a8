"""Accelerators: peak throughput per dtype, memory, bandwidth, links; with their sources."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmsizer.errors import SpecError

DTYPES = ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8", "fp4")


@dataclass(frozen=True)
class Accelerator:
    """One device. Peak figures are dense (no 2:4 sparsity), in FLOP/s (int8: OP/s)."""

    name: str
    display_name: str
    vendor: str
    peak_flops: dict[str, float] = field(hash=False)  # dtype -> FLOP/s, dense
    memory_bytes: int
    memory_bandwidth_bytes_s: float
    memory_stated: str = ""  # as the datasheet states it, e.g. "80 GB (HBM2e)"
    intra_node_link_bytes_s: float | None = None  # per GPU, bidirectional total as datasheets state
    intra_node_link_name: str = ""
    sm_count: int | None = None
    tensor_cores_per_sm: int | None = None
    fp16_flops_per_tensor_core_per_clock: int | None = None
    boost_clock_mhz: float | None = None
    tdp_w: float | None = None  # the rated board power the peaks are stated at
    power_limit_w: float | None = None  # a lower power limit the part runs under, if any
    aliases: tuple[str, ...] = ()
    sources: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    notes: str = ""
    extras: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise SpecError("name", self.name, "a non-empty string")
        if self.memory_bytes <= 0:
            raise SpecError(f"{self.name}.memory", self.memory_bytes, "a positive size")
        if self.memory_bandwidth_bytes_s <= 0:
            raise SpecError(f"{self.name}.memory_bandwidth_gb_s", self.memory_bandwidth_bytes_s,
                            "a positive bandwidth")
        for dtype, v in self.peak_flops.items():
            if dtype not in DTYPES:
                raise SpecError(f"{self.name}.peak_tflops", dtype, "dtypes " + ", ".join(DTYPES))
            if v <= 0:
                raise SpecError(f"{self.name}.peak_tflops.{dtype}", v, "a positive number")
        if self.power_limit_w is not None and not self.power_limit_w > 0:
            raise SpecError(f"{self.name}.power_limit_w", self.power_limit_w, "a positive power")

    @property
    def clock_ratio(self) -> float:
        """Sustained tensor clock under `power_limit_w` as a fraction of the rated one: dynamic
        power goes as C·V²·f and the voltage rises with the clock along the DVFS curve, so at a
        power limit the clock settles near (P_limit/P_rated)^(1/3). Check: H100 NVL (400 W,
        835 dense bf16 TFLOP/s) against H100 SXM (700 W, 989): 0.844 stated, (4/7)^(1/3) = 0.830
        predicted. 1 without a limit below the rated power."""
        if not self.power_limit_w or not self.tdp_w or self.power_limit_w >= self.tdp_w:
            return 1.0
        return (self.power_limit_w / self.tdp_w) ** (1 / 3)

    def sustained_peak(self, dtype: str) -> float:
        """The dense peak the time model runs compute at: `peak` at the clock the power limit
        allows (`clock_ratio`). MFU stays against the stated `peak`, as sources report it."""
        return self.peak(dtype) * self.clock_ratio

    @property
    def nvlink_domain(self) -> int:
        """GPUs one NVLink domain connects: the catalog's figure, else an 8-GPU node."""
        return int(self.extras.get("nvlink_domain") or 8)

    def peak(self, dtype: str) -> float:
        """Dense peak FLOP/s for `dtype`; an error naming the dtypes this device has otherwise."""
        key = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}.get(dtype, dtype)
        if key not in self.peak_flops:
            raise SpecError("dtype", dtype, f"{self.display_name} has peak figures for "
                            + ", ".join(self.peak_flops))
        return self.peak_flops[key]

    @property
    def ridge_point_flops_per_byte(self) -> float:
        """The roofline ridge for bf16 (fp16 if no bf16): peak FLOP/s over memory bytes/s."""
        key = "bf16" if "bf16" in self.peak_flops else "fp16"
        return self.peak_flops[key] / self.memory_bandwidth_bytes_s

    @property
    def derived_peak_flops(self) -> float | None:
        """Tensor-core peak from the microarchitecture: SMs × TCs/SM × FLOPs/TC/clock × clock."""
        parts = (self.sm_count, self.tensor_cores_per_sm, self.fp16_flops_per_tensor_core_per_clock,
                 self.boost_clock_mhz)
        if any(p is None for p in parts):
            return None
        sm, tc, per_clock, mhz = (float(p) for p in parts)  # type: ignore[arg-type]
        return sm * tc * per_clock * mhz * 1e6
