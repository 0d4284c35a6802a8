"""Training memory per device: model states under any sharding, activations, buffers, overhead.

Model states follow the ZeRO paper (Rajbhandari et al. 2020, sec. 5, Figure 1): with Ψ parameters
per model-parallel rank, a data-parallel group of N_d and K bytes of optimizer state per parameter,
stage 0 keeps (2 + 2 + K)·Ψ, stage 1 2Ψ + 2Ψ + K·Ψ/N_d, stage 2 2Ψ + (2 + K)·Ψ/N_d and stage 3
(2 + 2 + K)·Ψ/N_d. Tensor, pipeline and expert parallelism set Ψ (llmsizer.analysis.params);
expert parameters shard over the expert-data-parallel group dp·cp/ep. Activations follow the
named conventions of llmsizer.analysis.activations, times the micro-batches a pipeline schedule
keeps in flight. The arithmetic lives in llmsizer.analysis.step, shared with the planner.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from llmsizer.analysis import frameworks, step
from llmsizer.analysis.cluster import Cluster
from llmsizer.analysis.efficiency import Efficiency
from llmsizer.analysis.params import stage_held, stage_layers
from llmsizer.specs.hardware import Accelerator
from llmsizer.specs.model import ModelSpec
from llmsizer.specs.parallel import Parallelism
from llmsizer.specs.precision import Optimizer, TrainingPrecision

GiB = 2**30
DEFAULT_FRAMEWORK_OVERHEAD = step.DEFAULT_FRAMEWORK_OVERHEAD


@dataclass(frozen=True)
class StageMemory:
    stage: int
    layers: int
    params: int  # held by one device of the stage (after TP/PP/EP, before ZeRO)
    weights: float
    gradients: float
    optimizer: float  # optimizer moments + fp32 master weights (ZeRO's K)
    activations: float
    other: float
    other_parts: dict[str, float]
    in_flight_microbatches: float
    host_bytes: float
    nvme_bytes: float
    # of the parts above, what is never allocated at the same moment as the rest: without
    # accumulation PyTorch allocates gradients during the backward as activations are freed
    # (zero_grad(set_to_none=True)), so the peak is the larger of the two moments
    not_at_peak: float = 0.0

    @property
    def total(self) -> float:
        return (self.weights + self.gradients + self.optimizer + self.activations + self.other
                - self.not_at_peak)


@dataclass(frozen=True)
class TrainingMemory:
    stages: tuple[StageMemory, ...]
    activation_convention: str
    assumptions: dict[str, str] = field(default_factory=dict)

    @property
    def peak(self) -> StageMemory:
        """The most loaded device (pipeline stage)."""
        return max(self.stages, key=lambda s: s.total)


def group_and_variants(par: Parallelism) -> tuple[step.Group, step.Variants]:
    g = step.Group(par.dp, par.tp, par.pp, par.cp, par.ep, par.micro_batch, par.grad_accum,
                   par.recompute, par.sequence_parallel, par.stage_split)
    v = step.Variants(
        zero=np.array([par.zero]),
        offload_optimizer=np.array(["optimizer" in par.offload]),
        offload_params=np.array(["params" in par.offload]),
        nvme=np.array([par.offload_device == "nvme"]),
        schedule=np.array([step.SCHEDULE_CODE[par.schedule]]),
        virtual_stages=np.array([par.virtual_stages]))
    return g, v


def memory_from_result(st: step.Setting, g: step.Group, r: step.GroupResult, i: int = 0
                       ) -> TrainingMemory:
    layers = stage_layers(st.spec.num_layers, g.pp, g.split)
    held = stage_held(st.spec, g.tp, g.pp, g.ep, g.split)
    stages = []
    for s in range(g.pp):
        other = {"framework overhead": float(st.framework_overhead)}
        if r.recompute_ws[i, s]:
            other["recompute working set"] = float(r.recompute_ws[i, s])
        if r.buckets[i, s]:
            other["gradient buckets"] = float(r.buckets[i, s])
        root = float(r.root_gather[i, s])
        if r.zero3_gather[i, s] - root:
            other["ZeRO-3 gathered weights"] = float(r.zero3_gather[i, s]) - root
        if root:
            other["FSDP root unit gathered"] = root
        if r.loss_transient[i, s]:
            other["loss backward (logits' gradient)" if frameworks.profile(
                st.framework).compiled_loss else "loss backward (fp32, logits' size)"] = \
                float(r.loss_transient[i, s])
        stages.append(StageMemory(
            stage=s, layers=len(layers[s]), params=held[s].held,
            weights=float(r.weights[i, s]), gradients=float(r.gradients[i, s]),
            optimizer=float(r.optimizer[i, s]), activations=float(r.activations[i, s]),
            other=float(r.other[i, s]), other_parts=other,
            in_flight_microbatches=float(r.in_flight[i, s]), host_bytes=float(r.host[i, s]),
            nvme_bytes=float(r.nvme[i, s]),
            not_at_peak=max(0.0, float(r.weights[i, s] + r.gradients[i, s] + r.optimizer[i, s]
                                       + r.activations[i, s] + r.other[i, s] - r.total[i, s]))))
    flash = st.attention == "flash"
    return TrainingMemory(tuple(stages), st.activations, {
        "framework overhead": f"{st.framework_overhead / GiB:.2f} GiB (override with --overhead)",
        "activations": st.activations + (" with flash attention" if flash else
                                         " with eager attention (a·s² softmax kept)"),
    })


def _memory_only_cluster() -> Cluster:
    # Memory does not depend on the accelerator; the step model wants one to exist.
    acc = Accelerator(name="memory-only", display_name="memory-only", vendor="",
                      peak_flops={"bf16": 1e15, "fp16": 1e15, "fp32": 1e14},
                      memory_bytes=1, memory_bandwidth_bytes_s=1e12)
    return Cluster(acc)


def training_memory(spec: ModelSpec, par: Parallelism, precision: TrainingPrecision,
                    opt: Optimizer, seq: int, *, activations: str = "megatron",
                    framework_overhead: float = DEFAULT_FRAMEWORK_OVERHEAD,
                    flash_attention: bool = True, cluster: Cluster | None = None,
                    eff: Efficiency | None = None) -> TrainingMemory:
    st = step.Setting(spec, seq, precision, opt, cluster or _memory_only_cluster(),
                      eff or Efficiency(), activations, "flash" if flash_attention else "eager",
                      framework_overhead)
    g, v = group_and_variants(par)
    return memory_from_result(st, g, step.evaluate(st, g, v))


def in_flight_microbatches(par: Parallelism, stage: int) -> float:
    """Micro-batches whose activations pipeline stage `stage` holds at its peak."""
    flight = step.in_flight(par.pp, par.grad_accum,
                            np.array([step.SCHEDULE_CODE[par.schedule]]),
                            np.array([par.virtual_stages]))
    return float(flight[0, stage])
