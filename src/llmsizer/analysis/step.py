"""One training step, evaluated for many parallel layouts at once.

The per-layer costs of a micro-batch (activation bytes kept, forward/backward/recompute seconds,
tensor/expert/context-parallel communication) depend only on (tp, cp, ep, micro-batch,
recomputation, sequence parallelism); they are computed once per such key from the op graph and
cached. Everything that combines them (ZeRO sharding, offload, pipeline schedules and bubbles,
data-parallel communication, the optimizer step) is written once, here, in numpy over arrays of
layouts: `train_step` evaluates one layout, the planner thousands. Formulas and sources are in the
docstrings of memory.py and training.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property, lru_cache

import numpy as np

from llmsizer.analysis import comm
from llmsizer.analysis.activations import layer_activations, output_activations
from llmsizer.analysis.cluster import Cluster
from llmsizer.analysis.efficiency import Efficiency, matmul_efficiency, op_time
from llmsizer.analysis.flops import ATTENTION_BACKWARD_FACTOR, attention_pairs
from llmsizer.analysis.params import (
    layer_representative,
    stage_held,
    stage_layers,
    validate_parallel,
)
from llmsizer.errors import SpecError
from llmsizer.graph import Op, build_graph
from llmsizer.specs.hardware import Accelerator
from llmsizer.specs.model import ModelSpec
from llmsizer.specs.precision import Optimizer, TrainingPrecision

GiB = 2**30
DEFAULT_FRAMEWORK_OVERHEAD = 1 * GiB  # CUDA context, cuBLAS workspaces, NCCL buffers: 0.5-2 GiB
DDP_BUCKET_BYTES = 25 * 2**20  # torch DDP bucket_cap_mb default (25 MiB), two in flight
DEEPSPEED_REDUCE_BUCKET = 5e8  # elements: DeepSpeed reduce_bucket_size default
DEEPSPEED_PREFETCH = 5e7  # elements: stage3_prefetch_bucket_size default
SCHEDULE_CODE = {"gpipe": 0, "1f1b": 1, "interleaved": 2}


@dataclass(frozen=True, eq=False)
class Setting:
    """What stays fixed across a search: the model, the run and the cost model.

    Compared by identity: it is the key of the caches below, and one search builds one.
    """

    spec: ModelSpec
    seq: int
    precision: TrainingPrecision
    opt: Optimizer
    cluster: Cluster
    eff: Efficiency
    activations: str = "megatron"
    attention: str = "flash"  # kernels: "flash" or "eager"
    framework_overhead: float = DEFAULT_FRAMEWORK_OVERHEAD
    dp_overlap: bool = True

    @property
    def act_bytes(self) -> int:
        return 4 if self.precision.compute_dtype == "fp32" else 2

    @cached_property
    def topology(self) -> comm.Topology:
        return self.cluster.topology(self.eff)


@dataclass(frozen=True)
class Group:
    """Layouts sharing everything that shapes a micro-batch on one device."""

    dp: int
    tp: int
    pp: int
    cp: int
    ep: int
    micro_batch: int
    grad_accum: int
    recompute: str
    sequence_parallel: bool


# ---------------------------------------------------------------------------------------------
# Per-layer costs (scalar, from the op graph; cached)
# ---------------------------------------------------------------------------------------------

def _linear_time(op: Op, tokens: int, tp: int, ep: int, acc: Accelerator, peak: float,
                 e: float, eff: Efficiency) -> float:
    """Forward time of one linear op's share on one device."""
    k, n = op.in_features, op.out_features
    shard = op.weights[0].shard if op.weights else "column"
    if shard in ("column", "vocab"):
        n = max(1, n // tp)
    elif shard == "row":
        k = max(1, k // tp)
    instances = op.instances // ep if op.expert_parallel else op.instances
    if op.instances > 1 or op.active > 1:
        # Balanced routing: this device's experts together see tokens·top_k rows.
        rows = max(1, round(tokens * op.active * (ep if op.expert_parallel else 1) / op.instances))
    else:
        rows = tokens
    flops = 2 * rows * k * n * instances
    nbytes = e * (rows * k + k * n + rows * n) * instances
    return op_time(flops, nbytes, peak, acc.memory_bandwidth_bytes_s,
                   matmul_efficiency(rows, n, eff, acc, batch=instances, k=k), eff)


@dataclass(frozen=True)
class LayerCost:
    act_bytes: float  # kept for backward, one micro-batch
    act_bytes_no_recompute: float  # the working set while a fully recomputed layer is rebuilt
    forward_s: float
    backward_s: float
    recompute_s: float
    ep_comm_s: float
    cp_comm_s: float


@lru_cache(maxsize=4096)
def _layer_cost(st: Setting, layer_index: int, tp: int, cp: int, ep: int, mb: int,
                recompute: str, sp: bool) -> LayerCost:
    spec, acc, eff = st.spec, st.cluster.accelerator, st.eff
    e = st.act_bytes
    peak = acc.peak(st.precision.compute_dtype)
    seq_local = st.seq // cp
    tokens = mb * seq_local
    layer = build_graph(spec).layers[layer_index]
    moe = spec.is_moe_layer(layer_index)
    flash = st.attention == "flash"
    fwd_mm = attn = 0.0
    for op in layer.ops:
        if op.kind in ("linear", "router"):
            fwd_mm += _linear_time(op, tokens, tp, ep, acc, peak, e, eff)
        elif op.kind == "attention":
            # Flash kernels skip masked tiles (causal pairs); eager computes the full square.
            heads = max(1, spec.num_heads // tp)
            context = seq_local * cp
            pairs: float
            if cp == 1:
                pairs = attention_pairs(seq_local, context, layer.sliding_window,
                                        "causal" if flash else "dense")
            else:
                pairs = seq_local * context / 2
            flops = 4 * mb * heads * spec.head_size * pairs
            qkvo = e * tokens * (2 * spec.q_dim + 2 * spec.kv_dim) / tp
            scores = 0 if flash else 4 * e * mb * heads * seq_local * context
            attn = op_time(flops, qkvo + scores, peak, acc.memory_bandwidth_bytes_s,
                           eff.attention_efficiency, eff)
    # Element-wise work (norms, residual adds, activation, rotary): memory-bound streams.
    rep = tp if sp else 1
    h, f = spec.hidden_size, spec.ffn_size
    if moe and spec.moe:
        f = spec.moe.top_k * spec.moe.expert_ffn_size
    elementwise = e * tokens * (10 * h / rep + 3 * f / tp + 2 * (spec.q_dim + spec.kv_dim) / tp)
    ew = elementwise / (acc.memory_bandwidth_bytes_s * eff.memory_ceiling)
    forward = fwd_mm + attn + ew
    backward = 2 * fwd_mm + ATTENTION_BACKWARD_FACTOR[st.attention] * attn + 2 * ew
    recompute_s = {"full": forward, "selective": attn}.get(recompute, 0.0)

    act, act_full = (layer_activations(spec, mb, seq_local, convention=st.activations,
                                       act_bytes=e, tp=tp, sequence_parallel=sp,
                                       recompute=rc, moe_layer=moe, flash=flash).bytes
                     for rc in (recompute, "none"))

    topo = st.topology
    ep_s = cp_s = 0.0
    if moe and spec.moe and ep > 1:
        a2a = e * tokens * spec.moe.top_k * h
        ep_s = 4 * comm.all_to_all_s(a2a, ep, topo.link_for(ep, tp), eff)
    if cp > 1:
        kv = e * tokens * 2 * spec.kv_dim / tp
        ring = (cp - 1) * comm.p2p_s(kv, topo.link_for(cp, tp), eff) * 3  # fwd + 2× bwd
        cp_s = max(0.0, ring - forward)  # overlapped with the attention compute
    return LayerCost(act, act_full, forward, backward, recompute_s, ep_s, cp_s)


@cache
def _stage_rep_counts(spec: ModelSpec, pp: int) -> dict[int, tuple[int, ...]]:
    """For each representative layer r: how many layers like r each pipeline stage holds."""
    rep = layer_representative(spec)
    out: dict[int, list[int]] = {}
    for s, idx in enumerate(stage_layers(spec.num_layers, pp)):
        for i in idx:
            out.setdefault(rep[i], [0] * pp)[s] += 1
    return {r: tuple(c) for r, c in out.items()}


@cache
def layer_params(spec: ModelSpec, index: int) -> int:
    """All parameters of layer `index` (every expert, every TP shard)."""
    return sum(op.params for op in build_graph(spec).layers[index].ops)


Floats = tuple[float, ...]


@dataclass(frozen=True)
class StageCosts:
    """Per pipeline stage (tuples of length pp) for one Group; plain tuples, because thousands
    of groups are built per search and numpy's per-array overhead would dominate."""

    layers: tuple[tuple[int, ...], ...]
    dense_params: Floats
    expert_params: Floats
    largest_layer_params: Floats  # per TP rank
    act_bytes: Floats  # one micro-batch, all the stage's layers
    output_act_bytes: Floats  # the output head's (last stage only), one micro-batch at a time
    recompute_working_set: Floats
    compute_s: Floats  # forward + backward + recompute of one micro-batch
    comm_s: Floats  # tp + ep + cp communication of one micro-batch
    tp_comm_s: Floats
    ep_comm_s: Floats
    cp_comm_s: Floats


@dataclass(frozen=True)
class MicroBatchCosts:
    """Costs of one micro-batch that do not depend on the pipeline split."""

    layers: dict[int, LayerCost]  # by representative layer
    tp_layer_s: float
    head_s: float
    output_act_bytes: float


@lru_cache(maxsize=4096)
def _micro_batch_costs(st: Setting, tp: int, cp: int, ep: int, micro_batch: int, recompute: str,
                       sp: bool) -> MicroBatchCosts:
    spec = st.spec
    costs = {i: _layer_cost(st, i, tp, cp, ep, micro_batch, recompute, sp)
             for i in set(layer_representative(spec))}
    e, acc, eff = st.act_bytes, st.cluster.accelerator, st.eff
    seq_local = st.seq // cp
    tokens = micro_batch * seq_local
    topo = st.topology
    # Megatron-LM: 2 all-reduces per layer forward and 2 backward (with sequence parallelism a
    # reduce-scatter + all-gather of the same cost); full recomputation repeats the forward ones.
    tp_layer = comm.all_reduce_s(e * tokens * spec.hidden_size, tp, topo.link_for(tp, 1),
                                 eff) * (4 + (2 if recompute == "full" else 0))
    peak = acc.peak(st.precision.compute_dtype)
    head_op = build_graph(spec).head[-1]
    head_s = 3 * _linear_time(head_op, tokens, tp, 1, acc, peak, e, eff) + 3 * 4 * tokens * \
        spec.vocab_size / tp / (acc.memory_bandwidth_bytes_s * eff.memory_ceiling)
    out_act = output_activations(spec, micro_batch, seq_local, convention=st.activations,
                                 act_bytes=e, tp=tp, sequence_parallel=sp,
                                 recompute=recompute).bytes
    return MicroBatchCosts(costs, tp_layer, head_s, out_act)


@lru_cache(maxsize=4096)
def stage_costs(st: Setting, g: Group) -> StageCosts:
    spec = st.spec
    validate_parallel(spec, g.tp, g.pp, g.ep)
    if st.seq % g.cp:
        raise SpecError("cp", g.cp, f"a divisor of the sequence length ({st.seq})")
    if g.sequence_parallel and st.seq % g.tp:
        raise SpecError("sequence_parallel", True, f"a sequence length divisible by tp ({g.tp})")
    held = stage_held(spec, g.tp, g.pp, g.ep)
    layers = stage_layers(spec.num_layers, g.pp)
    mb = _micro_batch_costs(st, g.tp, g.cp, g.ep, g.micro_batch, g.recompute, g.sequence_parallel)
    costs, tp_layer, head_s, out_act = mb.layers, mb.tp_layer_s, mb.head_s, mb.output_act_bytes
    n = g.pp
    act, comp, ep_s, cp_s = [0.0] * n, [0.0] * n, [0.0] * n, [0.0] * n
    ws, largest = [0.0] * n, [0.0] * n
    for r, counts in _stage_rep_counts(spec, n).items():
        c = costs[r]
        per_layer_compute = c.forward_s + c.backward_s + c.recompute_s
        size = layer_params(spec, r) / g.tp
        for s_, k in enumerate(counts):  # layers like r in stage s_
            if not k:
                continue
            act[s_] += k * c.act_bytes
            comp[s_] += k * per_layer_compute
            ep_s[s_] += k * c.ep_comm_s
            cp_s[s_] += k * c.cp_comm_s
            largest[s_] = max(largest[s_], size)
            if g.recompute == "full":
                ws[s_] = max(ws[s_], c.act_bytes_no_recompute)
    comp[-1] += head_s
    tp_s = tuple(len(idx) * tp_layer for idx in layers)
    out = (0.0,) * (n - 1) + (out_act,)
    return StageCosts(
        layers=layers,
        dense_params=tuple(float(h.held - h.expert) for h in held),
        expert_params=tuple(float(h.expert) for h in held),
        largest_layer_params=tuple(largest), act_bytes=tuple(act), output_act_bytes=out,
        recompute_working_set=tuple(ws), compute_s=tuple(comp),
        comm_s=tuple(a + b + c for a, b, c in zip(tp_s, ep_s, cp_s, strict=True)),
        tp_comm_s=tp_s, ep_comm_s=tuple(ep_s), cp_comm_s=tuple(cp_s))


# ---------------------------------------------------------------------------------------------
# Combining them: vectorized over layouts of one group
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Variants:
    """Arrays (one entry per layout) of what varies inside a group."""

    zero: np.ndarray
    offload_optimizer: np.ndarray  # bool
    offload_params: np.ndarray  # bool
    nvme: np.ndarray  # bool: offload to NVMe instead of host memory
    schedule: np.ndarray  # SCHEDULE_CODE
    virtual_stages: np.ndarray

    def __len__(self) -> int:
        return len(self.zero)


@dataclass(frozen=True)
class GroupResult:
    # per layout × stage
    weights: np.ndarray
    gradients: np.ndarray
    optimizer: np.ndarray
    activations: np.ndarray
    other: np.ndarray
    total: np.ndarray
    host: np.ndarray
    nvme: np.ndarray
    in_flight: np.ndarray
    zero3_gather: np.ndarray
    buckets: np.ndarray
    recompute_ws: np.ndarray
    # per layout
    peak_stage: np.ndarray
    peak_total: np.ndarray
    compute_s: np.ndarray
    bubble_s: np.ndarray
    tp_comm_s: np.ndarray
    ep_comm_s: np.ndarray
    cp_comm_s: np.ndarray
    pp_comm_s: np.ndarray
    dp_comm_exposed_s: np.ndarray
    dp_comm_total_s: np.ndarray
    optimizer_s: np.ndarray
    step_s: np.ndarray


def in_flight(pp: int, accum: np.ndarray | int, schedule: np.ndarray, v: np.ndarray
              ) -> np.ndarray:
    """Micro-batches whose activations each stage holds at its peak: layouts × stages.

    GPipe keeps all m; 1F1B keeps at most pp - stage (Narayanan et al. 2021, sec. 2.2.1);
    interleaved 1F1B with V chunks keeps (1 + (pp-1)/(pp·V)) times as many (Korthikanti et al.
    2022, sec. 4.2.3).
    """
    stages = np.arange(pp)[None, :]
    m = np.broadcast_to(np.asarray(accum, dtype=float), schedule.shape)[:, None]
    if pp == 1:
        return np.ones((len(schedule), 1))
    one_f_one_b = np.minimum(m, (pp - stages).astype(float))
    interleaved = np.minimum(m, one_f_one_b * (1 + (pp - 1) / (pp * v[:, None])))
    sched = schedule[:, None]
    return np.where(sched == 0, m, np.where(sched == 2, interleaved, one_f_one_b))


@dataclass(frozen=True)
class GroupCosts:
    """Everything about a group that does not vary with ZeRO, offload or schedule."""

    stages: StageCosts
    t_mb: float  # the slowest stage's compute for one micro-batch
    tp_s: float  # its tensor/expert/context-parallel communication per micro-batch
    ep_s: float
    cp_s: float
    p2p_s: float  # pipeline hand-offs per micro-batch (forward and backward)
    all_reduce_s: float  # gradients over the data-parallel group(s)
    reduce_scatter_s: float
    gather_s: float  # ZeRO-3 parameter all-gathers of one micro-batch (forward + backward)
    params_worst: float  # parameters held by the time-critical stage


@lru_cache(maxsize=8192)
def group_costs(st: Setting, g: Group) -> GroupCosts:
    sc = stage_costs(st, g)
    worst = max(range(g.pp), key=lambda s: sc.compute_s[s] + sc.comm_s[s])
    eff, topo, p = st.eff, st.topology, st.precision
    act_msg = st.act_bytes * g.micro_batch * (st.seq // g.cp) * st.spec.hidden_size
    p2p = 2 * comm.p2p_s(act_msg / (g.tp if g.sequence_parallel else 1),
                         topo.link_for(g.pp, g.tp * g.cp * g.dp), eff) if g.pp > 1 else 0.0
    dp_link = topo.link_for(g.dp, g.tp * g.cp)
    n_d, n_e = g.dp * g.cp, g.dp * g.cp // g.ep
    d_w, x_w = float(sc.dense_params[worst]), float(sc.expert_params[worst])
    grad_b = 2 if p.gradient_bytes == 2 else 4
    ar = comm.all_reduce_s(grad_b * d_w, n_d, dp_link, eff) + comm.all_reduce_s(
        grad_b * x_w, n_e, dp_link, eff)
    rs = comm.reduce_scatter_s(grad_b * d_w, n_d, dp_link, eff) + comm.reduce_scatter_s(
        grad_b * x_w, n_e, dp_link, eff)
    gather = 2 * (comm.all_gather_s(p.weight_bytes * d_w, n_d, dp_link, eff)
                  + comm.all_gather_s(p.weight_bytes * x_w, n_e, dp_link, eff))
    return GroupCosts(sc, float(sc.compute_s[worst]), float(sc.tp_comm_s[worst]),
                      float(sc.ep_comm_s[worst]), float(sc.cp_comm_s[worst]), p2p, ar, rs,
                      gather, d_w + x_w)


def evaluate(st: Setting, gs: list[Group] | Group, vs: list[Variants] | Variants
             ) -> GroupResult:
    """All layouts of groups `gs` (which share one pipeline depth) with their variants `vs`,
    as arrays: one row per layout (per stage where it applies)."""
    if isinstance(gs, Group):
        gs, vs = [gs], [vs]  # type: ignore[list-item]
    assert isinstance(vs, list)
    pp = gs[0].pp
    if any(g.pp != pp for g in gs):
        raise ValueError("evaluate: groups must share one pipeline depth")
    costs = [group_costs(st, g) for g in gs]
    row_group = np.repeat(np.arange(len(gs)), [len(v) for v in vs])

    def per_row(values: list[float]) -> np.ndarray:
        return np.asarray(values, dtype=float)[row_group]

    def per_stage(attr: str) -> np.ndarray:
        return np.array([getattr(c.stages, attr) for c in costs], dtype=float)[row_group]

    def cat(attr: str) -> np.ndarray:
        return np.concatenate([getattr(v, attr) for v in vs])

    zero_r, sched, vstages = cat("zero"), cat("schedule"), cat("virtual_stages")
    off_o_r, off_p_r, nvme_r = cat("offload_optimizer"), cat("offload_params"), cat("nvme")
    n_d = per_row([g.dp * g.cp for g in gs])[:, None]
    n_e = per_row([g.dp * g.cp // g.ep for g in gs])[:, None]
    accum = per_row([g.grad_accum for g in gs])

    p = st.precision
    K = p.master_bytes + st.opt.state_bytes(p)
    zero = zero_r[:, None]
    dense, expert = per_stage("dense_params"), per_stage("expert_params")
    full = dense + expert
    sharded = dense / n_d + expert / n_e
    weights = p.weight_bytes * np.where(zero >= 3, sharded, full)
    grads = p.gradient_bytes * np.where(zero >= 2, sharded, full)
    optim = K * np.where(zero >= 1, sharded, full)
    off_o, off_p = off_o_r[:, None], off_p_r[:, None]
    # ZeRO-Offload keeps optimizer states, fp32 master weights and the gradient partition in host
    # memory and runs the update on the CPU (Ren et al. 2021); ZeRO-Infinity adds the weights.
    offloaded = np.where(off_o, optim + grads, 0.0) + np.where(off_p, weights, 0.0)
    optim = np.where(off_o, 0.0, optim)
    grads = np.where(off_o, 0.0, grads)
    weights = np.where(off_p, 0.0, weights)
    host = np.where(nvme_r[:, None], 0.0, offloaded)
    nvme = np.where(nvme_r[:, None], offloaded, 0.0)

    flight = in_flight(pp, accum, sched, vstages)
    act = per_stage("act_bytes") * flight + per_stage("output_act_bytes")
    buckets = np.where(n_d > 1, np.where(zero > 0, np.minimum(DEEPSPEED_REDUCE_BUCKET, full)
                                         * p.gradient_bytes, 2.0 * DDP_BUCKET_BYTES), 0.0)
    gather_b = np.where(zero == 3, p.weight_bytes * np.maximum(
        2 * per_stage("largest_layer_params"), DEEPSPEED_PREFETCH), 0.0)
    ws = per_stage("recompute_working_set")
    other = st.framework_overhead + buckets + gather_b + ws
    total = weights + grads + optim + act + other
    peak_stage = np.argmax(total, axis=1)
    peak_total = total[np.arange(len(total)), peak_stage]

    # ---- time ----
    t_mb = per_row([c.t_mb for c in costs])
    bubble_mb = np.where(sched == 2, (pp - 1) / vstages, pp - 1.0)
    z3 = zero_r == 3
    grad_sync = np.where(z3, per_row([c.reduce_scatter_s for c in costs]),
                         per_row([c.all_reduce_s for c in costs]))
    gather_s = per_row([c.gather_s for c in costs])
    exposed_gather = np.maximum(0.0, gather_s - t_mb) if st.dp_overlap else gather_s
    gather_exposed = np.where(z3, accum * exposed_gather, 0.0)
    dp_total = grad_sync + np.where(z3, accum * gather_s, 0.0)
    # Only the last micro-batch's backward can hide the gradient reduction.
    last_backward = t_mb * 2 / 3
    dp_exposed = (np.maximum(0.0, grad_sync - last_backward) if st.dp_overlap else grad_sync) + \
        gather_exposed

    shard = per_row([c.params_worst for c in costs]) / np.where(zero_r >= 1, n_d[:, 0], 1)
    traffic = shard * (2 * K + p.gradient_bytes + p.weight_bytes)
    acc, eff = st.cluster.accelerator, st.eff
    on_device = traffic / (acc.memory_bandwidth_bytes_s * eff.memory_ceiling)
    on_host = traffic / st.cluster.host_update_bytes_s + shard * (
        p.gradient_bytes + p.weight_bytes) / st.cluster.pcie_bytes_s
    optimizer_s = np.where(off_o_r, on_host, on_device)

    compute_s = accum * t_mb
    bubble_s = bubble_mb * t_mb
    tp_s = (accum + bubble_mb) * per_row([c.tp_s for c in costs])
    ep_s = (accum + bubble_mb) * per_row([c.ep_s for c in costs])
    cp_s = (accum + bubble_mb) * per_row([c.cp_s for c in costs])
    pp_s = (accum + pp - 1) * per_row([c.p2p_s for c in costs])
    step_s = compute_s + bubble_s + tp_s + ep_s + cp_s + pp_s + dp_exposed + optimizer_s
    return GroupResult(
        weights=weights, gradients=grads, optimizer=optim, activations=act, other=other,
        total=total, host=host, nvme=nvme, in_flight=flight, zero3_gather=gather_b,
        buckets=buckets, recompute_ws=ws, peak_stage=peak_stage, peak_total=peak_total,
        compute_s=compute_s, bubble_s=bubble_s, tp_comm_s=tp_s, ep_comm_s=ep_s, cp_comm_s=cp_s,
        pp_comm_s=pp_s, dp_comm_exposed_s=dp_exposed, dp_comm_total_s=dp_total,
        optimizer_s=optimizer_s, step_s=step_s)
