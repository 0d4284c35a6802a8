"""Training memory per device: model states under any sharding, activations, buffers, overhead.

Model states follow the ZeRO paper (Rajbhandari et al. 2020, sec. 5, Figure 1): with Ψ parameters
per model-parallel rank, a data-parallel group of N_d and K bytes of optimizer state per parameter,
stage 0 keeps (2 + 2 + K)·Ψ, stage 1 2Ψ + 2Ψ + K·Ψ/N_d, stage 2 2Ψ + (2 + K)·Ψ/N_d and stage 3
(2 + 2 + K)·Ψ/N_d. Tensor, pipeline and expert parallelism set Ψ (llmsizer.analysis.params);
expert parameters shard over the expert-data-parallel group dp·cp/ep.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmsizer.analysis.activations import layer_activations, output_activations
from llmsizer.analysis.params import shard_params, validate_parallel
from llmsizer.graph import build_graph
from llmsizer.specs.model import ModelSpec
from llmsizer.specs.parallel import Parallelism
from llmsizer.specs.precision import Optimizer, TrainingPrecision

GiB = 2**30
DEFAULT_FRAMEWORK_OVERHEAD = 1 * GiB  # CUDA context, cuBLAS workspaces, NCCL buffers: 0.5-2 GiB
DDP_BUCKET_BYTES = 25 * 2**20  # torch DDP bucket_cap_mb default (25 MiB)
DEEPSPEED_REDUCE_BUCKET = 5e8  # elements: DeepSpeed reduce_bucket_size default
DEEPSPEED_PREFETCH = 5e7  # elements: stage3_prefetch_bucket_size default


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

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.other


@dataclass(frozen=True)
class TrainingMemory:
    stages: tuple[StageMemory, ...]
    activation_convention: str
    assumptions: dict[str, str] = field(default_factory=dict)

    @property
    def peak(self) -> StageMemory:
        """The most loaded device (pipeline stage)."""
        return max(self.stages, key=lambda s: s.total)


def _stage_param_split(spec: ModelSpec, par: Parallelism) -> list[tuple[int, int]]:
    """(dense params, expert params) one device of each stage holds after TP/PP/EP."""
    shards = shard_params(spec, par.tp, par.pp, par.ep)
    graph = build_graph(spec)
    out = []
    for s, layers in enumerate(shards.stage_layers):
        expert = 0
        for i in layers:
            for op in graph.layers[i].ops:
                if op.expert_parallel:
                    per_instance = sum(w.numel for w in op.weights) // par.tp
                    expert += op.instances // par.ep * per_instance
        out.append((shards.per_stage[s] - expert, expert))
    return out


def in_flight_microbatches(par: Parallelism, stage: int) -> float:
    """Micro-batches whose activations a pipeline stage holds at its peak.

    GPipe keeps all m; 1F1B keeps at most pp - stage (Narayanan et al. 2021, sec. 2.2.1);
    interleaved 1F1B with V chunks keeps (1 + (pp-1)/(pp·V)) times the 1F1B amount on the first
    stage (Korthikanti et al. 2022, sec. 4.2.3), scaled here for later stages.
    """
    m = par.grad_accum
    if par.pp == 1:
        return 1
    if par.schedule == "gpipe":
        return m
    held = min(m, par.pp - stage)
    if par.schedule == "interleaved":
        held = min(m, held * (1 + (par.pp - 1) / (par.pp * par.virtual_stages)))
    return held


def training_memory(spec: ModelSpec, par: Parallelism, precision: TrainingPrecision,
                    opt: Optimizer, seq: int, *, activations: str = "megatron",
                    framework_overhead: float = DEFAULT_FRAMEWORK_OVERHEAD,
                    use_deepspeed_buckets: bool | None = None,
                    flash_attention: bool = True) -> TrainingMemory:
    validate_parallel(spec, par.tp, par.pp, par.ep)
    from llmsizer.errors import SpecError

    if seq % par.cp:
        raise SpecError("cp", par.cp, f"a divisor of the sequence length ({seq})")
    if par.sequence_parallel and seq % par.tp:
        raise SpecError("sequence_parallel", True, f"a sequence length divisible by tp ({par.tp})")
    layers = shard_params(spec, par.tp, par.pp, par.ep).stage_layers
    splits = _stage_param_split(spec, par)
    s_local = seq // par.cp
    b = par.micro_batch
    K = precision.master_bytes + opt.state_bytes(precision)
    w_b, g_b = precision.weight_bytes, precision.gradient_bytes
    act_b = 4 if precision.compute_dtype == "fp32" else 2
    offload_opt = "optimizer" in par.offload
    offload_params = "params" in par.offload
    deepspeed = par.zero > 0 if use_deepspeed_buckets is None else use_deepspeed_buckets

    stages = []
    for s, (dense, expert) in enumerate(splits):
        n_d, n_e = par.data_shard_group, par.expert_shard_group

        def shard(nbytes_per_param: float, sharded: bool, dense: int = dense,
                  expert: int = expert, n_d: int = n_d, n_e: int = n_e) -> float:
            if not sharded:
                return nbytes_per_param * (dense + expert)
            return nbytes_per_param * (dense / n_d + expert / n_e)

        weights = shard(w_b, par.zero >= 3)
        gradients = shard(g_b, par.zero >= 2)
        optimizer = shard(K, par.zero >= 1)
        host = 0.0
        if offload_opt:
            # ZeRO-Offload: optimizer states, fp32 master weights and the gradient partition
            # live in host memory; the CPU runs the update (Ren et al. 2021).
            host += optimizer + gradients
            optimizer, gradients = 0.0, 0.0
        if offload_params:
            host += weights
            weights = 0.0
        nvme = 0.0
        if par.offload_device == "nvme" and host:
            nvme, host = host, 0.0

        # Activations: per layer per micro-batch, times micro-batches in flight.
        per_layer = [
            layer_activations(spec, b, s_local, convention=activations, act_bytes=act_b,
                              tp=par.tp, sequence_parallel=par.sequence_parallel,
                              recompute=par.recompute, moe_layer=spec.is_moe_layer(i),
                              flash=flash_attention).bytes
            for i in layers[s]
        ]
        flight = in_flight_microbatches(par, s)
        act = sum(per_layer) * flight
        if s == par.pp - 1:
            act += output_activations(spec, b, s_local, convention=activations, act_bytes=act_b,
                                      tp=par.tp, sequence_parallel=par.sequence_parallel,
                                      recompute=par.recompute).bytes

        other: dict[str, float] = {"framework overhead": framework_overhead}
        if par.recompute == "full" and layers[s]:
            # Rebuilding a layer holds one layer's full activations at a time.
            other["recompute working set"] = layer_activations(
                spec, b, s_local, convention=activations, act_bytes=act_b, tp=par.tp,
                sequence_parallel=par.sequence_parallel, recompute="none",
                moe_layer=spec.is_moe_layer(layers[s][0]), flash=flash_attention).bytes
        if par.dp > 1 or par.cp > 1:
            if deepspeed:
                other["gradient reduce bucket"] = min(DEEPSPEED_REDUCE_BUCKET, dense + expert) * g_b
            else:
                other["DDP gradient buckets"] = float(DDP_BUCKET_BYTES) * 2
        if par.zero == 3:
            largest_layer = max((_layer_params(spec, i, par) for i in layers[s]), default=0)
            # The gathered (full) weights of the layer being computed and the next prefetched.
            other["ZeRO-3 gathered weights"] = w_b * max(2 * largest_layer, DEEPSPEED_PREFETCH)
        stages.append(StageMemory(
            stage=s, layers=len(layers[s]), params=dense + expert, weights=weights,
            gradients=gradients, optimizer=optimizer, activations=act,
            other=sum(other.values()), other_parts=other, in_flight_microbatches=flight,
            host_bytes=host, nvme_bytes=nvme))
    return TrainingMemory(tuple(stages), activations, {
        "framework overhead": f"{framework_overhead / GiB:.2f} GiB (override with --overhead)",
        "activations": activations + (" with flash attention" if flash_attention else
                                      " with eager attention (a·s² softmax kept)"),
    })


def _layer_params(spec: ModelSpec, index: int, par: Parallelism) -> float:
    layer = build_graph(spec).layers[index]
    return sum(op.params for op in layer.ops) / par.tp
