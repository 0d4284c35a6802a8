"""Training step time, throughput, MFU/HFU and time-to-train.

step time = (m + (pp-1)/V) · t_microbatch                (pipeline with its bubble; Narayanan 2021)
          + exposed data-parallel communication          (what the backward cannot hide)
          + optimizer step                               (memory-bound update of the shard)
t_microbatch = the slowest stage's forward + backward (+ recomputation) of one micro-batch, each op
through the roofline and efficiency model (llmsizer.analysis.efficiency), plus its tensor-,
expert- and context-parallel communication and pipeline hand-offs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmsizer.analysis import comm
from llmsizer.analysis.efficiency import Efficiency, matmul_efficiency, op_time
from llmsizer.analysis.flops import (
    ATTENTION_BACKWARD_FACTOR,
    StepFlops,
    attention_pairs,
    training_step_flops,
)
from llmsizer.analysis.memory import TrainingMemory, training_memory
from llmsizer.analysis.params import shard_params
from llmsizer.graph import Op, build_graph
from llmsizer.specs.hardware import Accelerator
from llmsizer.specs.model import ModelSpec
from llmsizer.specs.parallel import Parallelism
from llmsizer.specs.precision import Optimizer, TrainingPrecision


@dataclass(frozen=True)
class Cluster:
    accelerator: Accelerator
    gpus_per_node: int = 8
    inter_node_bytes_s: float = 50e9  # per GPU, one direction (a 400 Gb/s NIC per GPU)
    host_update_bytes_s: float = 12.5e9  # CPU optimizer traffic per GPU when offloaded
    pcie_bytes_s: float = 25e9  # host<->device per GPU, one direction

    def topology(self, eff: Efficiency) -> comm.Topology:
        acc = self.accelerator
        intra_bw = (acc.intra_node_link_bytes_s or self.pcie_bytes_s * 2) / 2  # one direction
        return comm.Topology(
            self.gpus_per_node,
            comm.Link(acc.intra_node_link_name or "PCIe", intra_bw, eff.collective_latency_s),
            comm.Link("inter-node network", self.inter_node_bytes_s, 2 * eff.collective_latency_s))


@dataclass(frozen=True)
class StepTime:
    compute_s: float  # forward + backward + recomputation of all micro-batches, no bubble
    bubble_s: float
    tp_comm_s: float
    ep_comm_s: float
    cp_comm_s: float
    pp_comm_s: float
    dp_comm_exposed_s: float
    dp_comm_total_s: float
    optimizer_s: float

    @property
    def total_s(self) -> float:
        return (self.compute_s + self.bubble_s + self.tp_comm_s + self.ep_comm_s + self.cp_comm_s
                + self.pp_comm_s + self.dp_comm_exposed_s + self.optimizer_s)


@dataclass(frozen=True)
class TrainingResult:
    spec: ModelSpec
    par: Parallelism
    seq: int
    memory: TrainingMemory
    capacity_bytes: float
    step_flops: StepFlops  # for the global batch
    time: StepTime
    peak_flops: float
    assumptions: dict[str, str] = field(default_factory=dict)

    @property
    def fits(self) -> bool:
        return self.memory.peak.total <= self.capacity_bytes

    @property
    def shortfall_bytes(self) -> float:
        return max(0.0, self.memory.peak.total - self.capacity_bytes)

    @property
    def tokens_per_step(self) -> int:
        return self.par.global_batch * self.seq

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_step / self.time.total_s

    @property
    def mfu(self) -> float:
        return self.step_flops.model_flops / (self.time.total_s * self.par.world_size
                                              * self.peak_flops)

    @property
    def hfu(self) -> float:
        return self.step_flops.hardware_flops / (self.time.total_s * self.par.world_size
                                                 * self.peak_flops)


def _linear_time(op: Op, tokens: int, par: Parallelism, acc: Accelerator, peak: float,
                 e: float, eff: Efficiency) -> float:
    """Forward time of one linear op's share on one device."""
    k, n = op.in_features, op.out_features
    shard = op.weights[0].shard if op.weights else "column"
    if shard in ("column", "vocab"):
        n = max(1, n // par.tp)
    elif shard == "row":
        k = max(1, k // par.tp)
    instances = op.instances // par.ep if op.expert_parallel else op.instances
    if op.instances > 1 or op.active > 1:
        # Balanced routing: this device's experts together see tokens·top_k rows.
        rows = tokens * op.active * (par.ep if op.expert_parallel else 1) / op.instances
        rows = max(1, round(rows))
    else:
        rows = tokens
    flops = 2 * rows * k * n * instances
    nbytes = e * (rows * k + k * n + rows * n) * instances
    return op_time(flops, nbytes, peak, acc.memory_bandwidth_bytes_s,
                   matmul_efficiency(rows, n, eff, acc, batch=instances, k=k), eff)


def _layer_times(spec: ModelSpec, index: int, par: Parallelism, seq_local: int, acc: Accelerator,
                 peak: float, e: float, eff: Efficiency, attention_backward: str
                 ) -> tuple[float, float, float]:
    """(forward, backward, recompute) seconds of one layer for one micro-batch on one device."""
    layer = build_graph(spec).layers[index]
    b = par.micro_batch
    tokens = b * seq_local
    fwd_mm = attn = 0.0
    for op in layer.ops:
        if op.kind in ("linear", "router"):
            fwd_mm += _linear_time(op, tokens, par, acc, peak, e, eff)
        elif op.kind == "attention":
            # Flash kernels skip masked tiles (causal pairs); eager computes the full square.
            conv = "causal" if attention_backward == "flash" else "dense"
            heads = max(1, spec.num_heads // par.tp)
            context = seq_local * par.cp
            pairs = attention_pairs(seq_local, context, layer.sliding_window, conv) \
                if par.cp == 1 else seq_local * context / 2
            flops = 4 * b * heads * spec.head_size * pairs
            qkvo = e * tokens * (2 * spec.q_dim + 2 * spec.kv_dim) / par.tp
            scores = 0 if attention_backward == "flash" else 4 * e * b * heads * seq_local * context
            attn = op_time(flops, qkvo + scores, peak, acc.memory_bandwidth_bytes_s,
                           eff.matmul_ceiling, eff)
    # Element-wise work (norms, residual adds, activation, rotary): memory-bound streams.
    rep = par.tp if par.sequence_parallel else 1
    h, f = spec.hidden_size, spec.ffn_size
    if spec.is_moe_layer(index) and spec.moe:
        f = spec.moe.top_k * spec.moe.expert_ffn_size
    elementwise = e * tokens * (10 * h / rep + 3 * f / par.tp
                                + 2 * (spec.q_dim + spec.kv_dim) / par.tp)
    ew = elementwise / (acc.memory_bandwidth_bytes_s * eff.memory_ceiling)
    forward = fwd_mm + attn + ew
    backward = 2 * fwd_mm + ATTENTION_BACKWARD_FACTOR[attention_backward] * attn + 2 * ew
    if par.recompute == "full":
        recompute = forward
    elif par.recompute == "selective":
        recompute = attn
    else:
        recompute = 0.0
    return forward, backward, recompute


def train_step(spec: ModelSpec, par: Parallelism, precision: TrainingPrecision, opt: Optimizer,
               seq: int, cluster: Cluster, eff: Efficiency | None = None, *,
               activations: str = "megatron", attention_backward: str = "flash",
               mfu_attention: str = "dense", framework_overhead: float | None = None,
               dp_overlap: bool = True) -> TrainingResult:
    eff = eff or Efficiency()
    acc = cluster.accelerator
    mem_kwargs = {} if framework_overhead is None else {"framework_overhead": framework_overhead}
    memory = training_memory(spec, par, precision, opt, seq, activations=activations,
                             flash_attention=attention_backward == "flash", **mem_kwargs)
    peak = acc.peak(precision.compute_dtype)
    e = 4 if precision.compute_dtype == "fp32" else 2
    topo = cluster.topology(eff)
    seq_local = seq // par.cp
    tokens_mb = par.micro_batch * seq_local
    layers = shard_params(spec, par.tp, par.pp, par.ep).stage_layers

    tp_link = topo.link_for(par.tp, 1)
    cp_link = topo.link_for(par.cp, par.tp)
    ep_link = topo.link_for(par.ep, par.tp)
    dp_link = topo.link_for(par.dp, par.tp * par.cp)
    pp_link = topo.link_for(par.pp, par.tp * par.cp * par.dp)

    act_bytes = e * tokens_mb * spec.hidden_size
    # Megatron-LM: 2 all-reduces per layer forward (attention, MLP) and 2 backward; with sequence
    # parallelism each becomes a reduce-scatter + all-gather of the same total cost. A full
    # recomputation repeats the forward ones.
    tp_per_layer = comm.all_reduce_s(act_bytes, par.tp, tp_link, eff) * (
        4 + (2 if par.recompute == "full" else 0))

    stage_mb, stage_comm = [], []
    for s, idx in enumerate(layers):
        compute = 0.0
        comm_s = {"tp": 0.0, "ep": 0.0, "cp": 0.0}
        for i in idx:
            f, bwd, rc = _layer_times(spec, i, par, seq_local, acc, peak, e, eff,
                                      attention_backward)
            compute += f + bwd + rc
            comm_s["tp"] += tp_per_layer
            if spec.is_moe_layer(i) and spec.moe and par.ep > 1:
                a2a = e * tokens_mb * spec.moe.top_k * spec.hidden_size
                comm_s["ep"] += 4 * comm.all_to_all_s(a2a, par.ep, ep_link, eff)
            if par.cp > 1:
                kv = e * tokens_mb * 2 * spec.kv_dim / par.tp
                ring = (par.cp - 1) * comm.p2p_s(kv, cp_link, eff) * 3  # forward + 2× backward
                comm_s["cp"] += max(0.0, ring - f)  # overlapped with attention compute
        if s == par.pp - 1:
            head = build_graph(spec).head[-1]
            t = _linear_time(head, tokens_mb, par, acc, peak, e, eff)
            loss = 3 * 4 * tokens_mb * spec.vocab_size / par.tp / (
                acc.memory_bandwidth_bytes_s * eff.memory_ceiling)
            compute += 3 * t + loss
        stage_mb.append(compute)
        stage_comm.append(comm_s)

    worst = max(range(par.pp), key=lambda s: stage_mb[s] + sum(stage_comm[s].values()))
    t_mb = stage_mb[worst]
    comms = stage_comm[worst]
    m = par.grad_accum
    bubble_mb = (par.pp - 1) / par.virtual_stages
    p2p = 2 * comm.p2p_s(act_bytes / (par.tp if par.sequence_parallel else 1), pp_link, eff) \
        if par.pp > 1 else 0.0

    # Data-parallel gradient synchronisation (and ZeRO-3 parameter gathers).
    dense, expert = _dp_bytes(spec, par, precision, worst)
    grad_bytes = 2 if precision.gradient_bytes == 2 else 4
    n_d, n_e = par.data_shard_group, par.expert_shard_group
    if par.zero == 3:
        grad_sync = (comm.reduce_scatter_s(grad_bytes * dense, n_d, dp_link, eff)
                     + comm.reduce_scatter_s(grad_bytes * expert, n_e, dp_link, eff))
        gather = 2 * (comm.all_gather_s(precision.weight_bytes * dense, n_d, dp_link, eff)
                      + comm.all_gather_s(precision.weight_bytes * expert, n_e, dp_link, eff))
        gather_exposed = m * max(0.0, gather - t_mb) if dp_overlap else m * gather
        total_dp = grad_sync + m * gather
    else:
        grad_sync = (comm.all_reduce_s(grad_bytes * dense, n_d, dp_link, eff)
                     + comm.all_reduce_s(grad_bytes * expert, n_e, dp_link, eff))
        gather_exposed = 0.0
        total_dp = grad_sync
    # Only the last micro-batch's backward can hide the gradient reduction.
    last_backward = t_mb * 2 / 3
    dp_exposed = (max(0.0, grad_sync - last_backward) if dp_overlap else grad_sync) + gather_exposed

    optimizer_s = _optimizer_time(memory, par, precision, opt, acc, cluster, eff, worst)
    time = StepTime(
        compute_s=m * t_mb,
        bubble_s=bubble_mb * t_mb,
        tp_comm_s=(m + bubble_mb) * comms["tp"],
        ep_comm_s=(m + bubble_mb) * comms["ep"],
        cp_comm_s=(m + bubble_mb) * comms["cp"],
        pp_comm_s=(m + par.pp - 1) * p2p,
        dp_comm_exposed_s=dp_exposed,
        dp_comm_total_s=total_dp,
        optimizer_s=optimizer_s,
    )
    step_flops = training_step_flops(spec, par.global_batch, seq, par.recompute, mfu_attention,
                                     "flash" if attention_backward == "flash" else "eager")
    assumptions = dict(eff.describe())
    assumptions |= memory.assumptions
    assumptions["attention"] = (f"{attention_backward} kernels (time); MFU counts {mfu_attention} "
                                "attention")
    assumptions["dp overlap"] = ("gradient reduction hidden behind the last micro-batch's backward"
                                 if dp_overlap else "none")
    assumptions["inter-node"] = f"{cluster.inter_node_bytes_s / 1e9:g} GB/s per GPU per direction"
    return TrainingResult(spec, par, seq, memory, acc.memory_bytes, step_flops, time, peak,
                          assumptions)


def _dp_bytes(spec: ModelSpec, par: Parallelism, precision: TrainingPrecision,
              stage: int) -> tuple[int, int]:
    from llmsizer.analysis.memory import _stage_param_split

    return _stage_param_split(spec, par)[stage]


def _optimizer_time(memory: TrainingMemory, par: Parallelism, precision: TrainingPrecision,
                    opt: Optimizer, acc: Accelerator, cluster: Cluster, eff: Efficiency,
                    stage: int) -> float:
    st = memory.stages[stage]
    shard = st.params / (par.data_shard_group if par.zero >= 1 else 1)
    K = precision.master_bytes + opt.state_bytes(precision)
    traffic = shard * (2 * K + precision.gradient_bytes + precision.weight_bytes)
    if "optimizer" in par.offload:
        transfer = shard * (precision.gradient_bytes + precision.weight_bytes) / cluster.pcie_bytes_s
        return traffic / cluster.host_update_bytes_s + transfer
    return traffic / (acc.memory_bandwidth_bytes_s * eff.memory_ceiling)
