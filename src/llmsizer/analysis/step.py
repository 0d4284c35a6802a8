"""One training step, evaluated for many parallel layouts at once.

Per-layer costs come from llmsizer.analysis.layer_costs (computed once per key, cached).
Everything that combines them (ZeRO sharding, offload, pipeline schedules and bubbles,
data-parallel communication, the optimizer step) is written once, here, in numpy over arrays of
layouts: `train_step` evaluates one layout, the planner thousands. Formulas and sources are in the
docstrings of memory.py and training.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from llmsizer.analysis import comm, frameworks
from llmsizer.analysis.frameworks import (
    DDP_BUCKET_BYTES,
    DEEPSPEED_PREFETCH,
    DEEPSPEED_REDUCE_BUCKET,
    FSDP_REDUCE_BYTES,
)
from llmsizer.analysis.layer_costs import (
    DEFAULT_FRAMEWORK_OVERHEAD,
    Group,
    Setting,
    StageCosts,
    stage_costs,
    tp_pass_parts,
)

__all__ = ["DEFAULT_FRAMEWORK_OVERHEAD", "Group", "GroupResult", "Setting", "Variants",
           "evaluate", "group_costs", "in_flight", "stage_costs"]

SCHEDULE_CODE = {"gpipe": 0, "1f1b": 1, "interleaved": 2}


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
    # per layout × stage (of `stages`)
    weights: np.ndarray
    gradients: np.ndarray
    optimizer: np.ndarray
    activations: np.ndarray
    other: np.ndarray
    total: np.ndarray
    host: np.ndarray
    nvme: np.ndarray
    in_flight: np.ndarray
    zero3_gather: np.ndarray  # all ZeRO-3 gathered weights, the root unit's included
    root_gather: np.ndarray  # FSDP's root unit kept gathered (Profile.root_gathered)
    loss_transient: np.ndarray
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
    tp_comm_total_s: np.ndarray  # before overlap (tp_comm_s: what shows)
    pp_comm_total_s: np.ndarray
    ep_comm_total_s: np.ndarray
    contention_s: np.ndarray  # compute lost to the SMs hidden collectives hold
    stages: np.ndarray  # the pipeline stage of each column of the per-stage arrays


def in_flight(pp: int, accum: np.ndarray | int, schedule: np.ndarray, v: np.ndarray,
              stages: np.ndarray | None = None) -> np.ndarray:
    """Micro-batches whose activations each stage (of `stages`; all by default) holds at its
    peak: layouts × stages.

    GPipe keeps all m; 1F1B keeps at most pp - stage (Narayanan et al. 2021, sec. 2.2.1);
    interleaved 1F1B with V chunks keeps (1 + (pp-1)/(pp·V)) times as many (Korthikanti et al.
    2022, sec. 4.2.3).
    """
    if pp == 1:
        return np.ones((len(schedule), 1))
    stages = (np.arange(pp) if stages is None else stages)[None, :]
    m = np.broadcast_to(np.asarray(accum, dtype=float), schedule.shape)[:, None]
    one_f_one_b = np.minimum(m, (pp - stages).astype(float))
    interleaved = np.minimum(m, one_f_one_b * (1 + (pp - 1) / (pp * v[:, None])))
    sched = schedule[:, None]
    return np.where(sched == 0, m, np.where(sched == 2, interleaved, one_f_one_b))


@dataclass(frozen=True)
class GroupCosts:
    """Everything about groups of one pipeline depth and split that does not vary with ZeRO,
    offload or schedule: one entry per group."""

    stages: StageCosts
    t_mb: np.ndarray  # the slowest stage's compute for one micro-batch
    t_fwd: np.ndarray  # … its forward part
    tp_s: np.ndarray  # its tensor/expert/context-parallel communication per micro-batch
    tp_linear_s: np.ndarray  # its matrix products (what TP communication overlap hides behind)
    ep_s: np.ndarray
    cp_s: np.ndarray
    p2p_s: np.ndarray  # pipeline hand-offs per micro-batch (forward and backward)
    buckets: np.ndarray  # gradient buckets (the framework's bucket size)
    all_reduce_s: np.ndarray  # gradients over the data-parallel group(s), bucketed
    reduce_scatter_s: np.ndarray  # … reduce-scattered to a sharded optimizer
    param_gather_s: np.ndarray  # the updated shards gathered back (ZeRO-1/2)
    layer_gather_s: np.ndarray  # ZeRO-3: one layer's parameters all-gathered
    layer_scatter_s: np.ndarray  # ZeRO-3: one layer's gradients reduce-scattered
    layers: np.ndarray  # layers of the slowest stage
    params_worst: np.ndarray  # parameters held by the time-critical stage
    shard_buckets: np.ndarray  # messages the sharded (ZeRO-1/2/3) reduce-scatter and gather use


def _sharded(coll: Callable[..., float], nbytes_dense: float, nbytes_expert: float, n_d: int,
             n_e: int, link: comm.Link, pieces: float = 1.0) -> float:
    """One collective over dense parameters (data-parallel group) and expert parameters
    (their smaller group), cut into `pieces` equal messages."""
    return pieces * (coll(nbytes_dense / pieces, n_d, link) + coll(nbytes_expert / pieces, n_e,
                                                                   link))


def _async_tp_share(st: Setting, g: Group) -> float:
    """The share of a layer's tensor-parallel communication PyTorch's async TP overlaps: the
    forward passes', less their all-gathers where the FP8 recipe keeps those from fusing with
    their products (frameworks.async_tp_fuses_gathers)."""
    scatters, gathers, bwd = tp_pass_parts(st, g.tp, g.sequence_parallel, g.recompute)
    fused = scatters + (gathers if frameworks.async_tp_fuses_gathers(
        st.precision.compute_dtype, st.fp8_recipe) else 0.0)
    return fused / (scatters + gathers + bwd)


@lru_cache(maxsize=8192)
def _p2p_s(st: Setting, pp: int, tp: int, cp: int, dp: int, micro_batch: int, sp: bool
           ) -> float:
    """Pipeline hand-offs of one micro-batch on the critical path, forward and backward
    (Profile.p2p_transfers; cached: shared by the recomputation settings of a layout)."""
    if pp == 1:
        return 0.0
    act_msg = st.act_bytes * micro_batch * (st.seq // cp) * st.spec.hidden_size
    prof = frameworks.profile(st.framework)
    # scatter/gather: each rank sends its share of the replicated activation and the receiving
    # stage all-gathers the whole over its TP group
    gather = not sp and prof.p2p_scatter_gather
    send = comm.p2p_s(act_msg / (tp if sp or gather else 1),
                      st.topology.link_for(pp, tp * cp * dp))
    if gather:
        send += comm.all_gather_s(act_msg, tp, st.topology.link_for(tp, 1))
    return prof.p2p_transfers * send


@lru_cache(maxsize=8192)
def _data_parallel_s(st: Setting, dp: int, tp: int, cp: int, ep: int, d_w: float, x_w: float,
                     n_layers: int) -> tuple[float, ...]:
    """Buckets and the data-parallel collectives of a stage holding d_w dense and x_w expert
    parameters in n_layers layers: (buckets, all-reduce, reduce-scatter, all-gather, one
    layer's all-gather, one layer's reduce-scatter, messages of the sharded collectives).
    Cached: every micro-batch and recomputation setting of a layout whose slowest stage is the
    same shares them."""
    p = st.precision
    dp_link = st.topology.link_for(dp, tp * cp)
    n_d, n_e = dp * cp, dp * cp // ep
    grad_b = 2 if p.gradient_bytes == 2 else 4
    prof = frameworks.profile(st.framework)
    nb = prof.buckets(d_w + x_w, n_d)
    # FSDP shards per wrapped unit (a transformer block): one collective per layer, not buckets
    nb_shard = float(n_layers) if prof.per_unit_collectives else nb
    ar = _sharded(comm.all_reduce_s, grad_b * d_w, grad_b * x_w, n_d, n_e, dp_link, nb)
    rs = _sharded(comm.reduce_scatter_s, grad_b * d_w, grad_b * x_w, n_d, n_e, dp_link, nb_shard)
    ag = _sharded(comm.all_gather_s, p.weight_bytes * d_w, p.weight_bytes * x_w, n_d, n_e,
                  dp_link, nb_shard)
    layer_ag = _sharded(comm.all_gather_s, p.weight_bytes * d_w / n_layers,
                        p.weight_bytes * x_w / n_layers, n_d, n_e, dp_link)
    layer_rs = _sharded(comm.reduce_scatter_s, grad_b * d_w / n_layers, grad_b * x_w / n_layers,
                        n_d, n_e, dp_link)
    return nb, ar, rs, ag, layer_ag, layer_rs, nb_shard


@lru_cache(maxsize=512)
def group_costs(st: Setting, gs: tuple[Group, ...]) -> GroupCosts:
    """The costs of groups `gs` (one pipeline depth and split), each taken at its slowest
    stage (the first of them on a tie)."""
    sc = stage_costs(st, gs)
    rows = np.arange(len(gs))
    worst = np.argmax(sc.compute_s + sc.comm_s, axis=1)

    def at_worst(a: np.ndarray) -> np.ndarray:
        return a[rows, worst]

    n_layers = np.maximum(1, np.array(sc.classes.layers)[worst])
    d_w, x_w = at_worst(sc.dense_params), at_worst(sc.expert_params)
    p2p = [_p2p_s(st, g.pp, g.tp, g.cp, g.dp, g.micro_batch, g.sequence_parallel) for g in gs]
    nb, ar, rs, ag, layer_ag, layer_rs, nb_shard = np.array([
        _data_parallel_s(st, g.dp, g.tp, g.cp, g.ep, d, x, n) for g, d, x, n in zip(
            gs, d_w.tolist(), x_w.tolist(), n_layers.tolist(), strict=True)]).reshape(-1, 7).T
    return GroupCosts(sc, at_worst(sc.compute_s), at_worst(sc.forward_s),
                      at_worst(sc.tp_comm_s), at_worst(sc.linear_s), at_worst(sc.ep_comm_s),
                      at_worst(sc.cp_comm_s), np.array(p2p), nb, ar, rs, ag, layer_ag, layer_rs,
                      n_layers.astype(float), d_w + x_w, nb_shard)


def evaluate(st: Setting, gs: list[Group] | Group, vs: list[Variants] | Variants, *,
             all_stages: bool = True) -> GroupResult:
    """All layouts of groups `gs` (which share one pipeline depth and split) with their
    variants `vs`, as arrays: one row per layout (per stage where it applies). Without
    `all_stages`, only the first stage of each class of identical stages (StageClasses): a
    later stage of a class holds the same but keeps no more micro-batches in flight, so the
    peak (all a search needs) is always at one of these."""
    if isinstance(gs, Group):
        gs, vs = [gs], [vs]  # type: ignore[list-item]
    assert isinstance(vs, list)
    pp, split = gs[0].pp, gs[0].split
    if any(g.pp != pp or g.split != split for g in gs):
        raise ValueError("evaluate: groups must share one pipeline depth and split")
    costs = group_costs(st, tuple(gs))
    classes = costs.stages.classes
    cols = list(classes.of_stage if all_stages else range(len(classes.first)))
    stage_of_col = np.arange(pp) if all_stages else np.array(classes.first)
    row_group = np.repeat(np.arange(len(gs)), [len(v) for v in vs])
    single = len(row_group) == 1  # a single layout (train_step): nothing to gather by row

    def per_row(values: list[float] | np.ndarray) -> np.ndarray:
        if single:
            return np.array(values, dtype=float)
        return np.asarray(values, dtype=float)[row_group]

    def per_stage(attr: str) -> np.ndarray:
        a = getattr(costs.stages, attr)[:, cols]
        return a if single else a[row_group]  # (a single layout's row broadcasts)

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

    flight = in_flight(pp, accum, sched, vstages, stage_of_col)
    act = per_stage("act_bytes") * flight + per_stage("output_act_bytes")
    prof = frameworks.profile(st.framework)
    # sharded gradients go out in buckets (DeepSpeed's reduce bucket) or, under FSDP, one wrapped
    # unit's unsharded gradients at a time; replicated ones in DDP's two 25 MiB buckets
    shard_bucket = per_stage("largest_layer_params") if prof.per_unit_collectives else \
        np.minimum(DEEPSPEED_REDUCE_BUCKET, full)
    buckets = np.where(n_d > 1, np.where(zero > 0, shard_bucket * p.gradient_bytes,
                                         2.0 * DDP_BUCKET_BYTES), 0.0)
    # ZeRO-3 gathers a layer's weights (two in flight, at least DeepSpeed's prefetch bucket) —
    # but never more than the parameters this rank does not already hold: a model smaller than
    # the bucket is gathered whole, and ZeRO-3 then holds at most what ZeRO-0 does.
    # FSDP's root unit (the embedding, final norm and head) stays gathered from its forward
    # through the backward (Profile.root_gathered), beside the blocks'.
    blocks = np.minimum(np.maximum(2 * per_stage("largest_layer_params"), DEEPSPEED_PREFETCH),
                        full - sharded)
    root = np.minimum(per_stage("outside_layers_params"), full - sharded - blocks) \
        if prof.root_gathered else np.zeros_like(blocks)
    root_b = np.where(zero == 3, p.weight_bytes * root, 0.0)
    gather_b = np.where(zero == 3, p.weight_bytes * blocks, 0.0) + root_b
    # FSDP2 under torch.distributed.pipelining (frameworks.Profile.pp_unsharded): the whole
    # stage gathered, and its gradients accumulated unsharded in fp32
    unsharded = (zero == 3) & (pp > 1 and prof.pp_unsharded)
    gather_b = np.where(unsharded, p.weight_bytes * (full - sharded), gather_b)
    root_b = np.where(unsharded, 0.0, root_b)  # the whole stage is gathered: no root apart
    grads = np.where(unsharded & ~off_o, np.maximum(grads, FSDP_REDUCE_BYTES * full), grads)
    ws = per_stage("recompute_working_set")
    loss_t = per_stage("loss_transient_bytes")
    other = st.framework_overhead + buckets + gather_b + ws + loss_t
    # Gradients allocated by the backward (PyTorch's set_to_none) meet all the activations only
    # when an earlier micro-batch left them behind (accumulation, pipelining); otherwise the
    # peak is the larger of the two moments: the loss backward, or the end of the backward
    persistent = prof.persistent_grads
    meet = (accum[:, None] > 1) | (pp > 1) | persistent
    total = weights + optim + np.where(meet, grads + act + other, np.maximum(
        grads + other - loss_t, act + other))
    peak_col = np.argmax(total, axis=1)
    peak_total = total[np.arange(len(total)), peak_col]
    peak_stage = stage_of_col[peak_col]

    # ---- time ----
    # What the framework overlaps (llmsizer.analysis.frameworks): every communication term is
    # kept whole (…_total) and as what shows on the critical path.
    overlap = st.dp_overlap
    t_mb = per_row(costs.t_mb)
    t_fwd = per_row(costs.t_fwd)
    t_bwd = t_mb - t_fwd
    nb = per_row(costs.buckets)
    nb_shard = per_row(costs.shard_buckets)
    bubble_mb = np.where(sched == 2, (pp - 1) / vstages, pp - 1.0)
    z3, z12 = zero_r == 3, (zero_r == 1) | (zero_r == 2)

    # Tensor/expert/context-parallel communication of one micro-batch: TP's hidden under the
    # linear layers' products where the framework overlaps it, the rest serial.
    tp_mb = per_row(costs.tp_s)
    tp_exp_mb = tp_mb
    if prof.tp_comm_overlap:
        # what the overlap covers (Profile.tp_overlap_backward): all of it, or the forward
        # passes' share, hidden behind the same share of the products
        share = per_row([1.0 if prof.tp_overlap_backward else _async_tp_share(st, g)
                         for g in gs])
        tp_exp_mb = frameworks.exposed(share * tp_mb, share * per_row(costs.tp_linear_s),
                                       np.maximum(1, per_row([g.tp for g in gs]))) \
            + (1 - share) * tp_mb
    ep_mb, cp_mb = per_row(costs.ep_s), per_row(costs.cp_s)
    ep_exp_mb = ep_mb
    if st.moe_a2a_overlap:
        # Megatron-Core's EP all-to-all overlap runs one micro-batch's forward with another's
        # backward, layer by layer, so the all-to-all of each hides under the other's compute:
        # a pair takes max(compute, all-to-all). Only the pipeline's warm-up forwards and
        # cool-down backwards (pp-1 micro-batches on the first stage; interleaved: 2(pp-1) +
        # (v-1)·pp chunks of 1/v each), or the first and last micro-batch without a pipeline,
        # have no partner.
        alone = np.where(sched == 2, (2 * (pp - 1) + (vstages - 1) * pp) / vstages, pp - 1.0)
        alone = np.minimum(accum, np.maximum(1.0, alone))
        overlapped = (alone * ep_mb + (accum - alone) * np.maximum(0.0, ep_mb - t_mb)) / accum
        # Megatron-Core refuses it under a non-interleaved pipeline and with full recomputation
        # (training.check_moe_runtime): a search keeps such layouts at the serial cost
        ok = ((pp == 1) | (sched == 2)) & per_row([g.recompute != "full" for g in gs]).astype(bool)
        ep_exp_mb = np.where(ok, overlapped, ep_mb)
    # A micro-batch's forward and backward as the clock sees them, stalls included (a third of
    # the serial communication in the forward, two thirds in the backward, as the products it
    # waits on split): what data-parallel traffic can hide behind. Counting the stalls once
    # here, rather than letting two kinds of traffic hide behind the same compute, keeps a
    # faster chip from ever predicting a longer step.
    stalls = tp_exp_mb + ep_exp_mb + cp_mb
    w_fwd, w_bwd = t_fwd + stalls / 3, t_bwd + 2 * stalls / 3

    # Gradients: all-reduced (ZeRO-0), reduce-scattered to the optimizer shards (ZeRO-1/2, then
    # the updated shards all-gathered), or per layer (ZeRO-3). Bucketed reduction overlaps the
    # last micro-batch's backward; the gather overlaps the next step's first forward.
    ar, rs = per_row(costs.all_reduce_s), per_row(costs.reduce_scatter_s)
    ag = per_row(costs.param_gather_s)
    grad_overlap = overlap and prof.overlap_grad_reduce
    ar_exposed = frameworks.exposed(ar, w_bwd, nb) if grad_overlap else ar
    rs_exposed = frameworks.exposed(rs, w_bwd, nb_shard) if grad_overlap else rs
    ag_exposed = frameworks.exposed(ag, w_fwd, nb_shard) if overlap and prof.overlap_param_gather \
        else ag
    # ZeRO-3 / FSDP, every micro-batch: each layer's parameters gathered before its forward and
    # again before its backward, its gradients reduce-scattered after; with prefetch the next
    # layer's gather runs under this layer's compute, so only the first gather, the last
    # scatter and whatever a layer's communication exceeds its compute show.
    layers = per_row(costs.layers)
    l_ag, l_rs = per_row(costs.layer_gather_s), per_row(costs.layer_scatter_s)
    f_l, b_l = w_fwd / layers, w_bwd / layers
    if overlap and prof.prefetch_params:
        z3_mb = (l_ag + (layers - 1) * np.maximum(0.0, l_ag - f_l)
                 + l_ag + (layers - 1) * np.maximum(0.0, l_ag + l_rs - b_l) + l_rs)
    else:
        z3_mb = layers * (2 * l_ag + l_rs)
    z3_total = accum * layers * (2 * l_ag + l_rs)
    if prof.pp_unsharded:
        # kept gathered from forward to backward, reduce-scattered once, after the last backward
        z3_once = l_ag + (layers - 1) * np.maximum(0.0, l_ag - f_l) if overlap and \
            prof.prefetch_params else layers * l_ag
        z3_last = (layers - 1) * np.maximum(0.0, l_rs - b_l) + l_rs if overlap and \
            prof.prefetch_params else layers * l_rs
        if pp > 1:
            z3_mb = z3_once + z3_last / accum
            z3_total = accum * layers * l_ag + layers * l_rs
    dp_total = np.where(z3, z3_total, np.where(z12, rs + ag, ar))
    dp_exposed = np.where(z3, accum * z3_mb, np.where(z12, rs_exposed + ag_exposed, ar_exposed))

    shard = per_row(costs.params_worst) / np.where(zero_r >= 1, n_d[:, 0], 1)
    traffic = shard * (2 * K + p.gradient_bytes + p.weight_bytes)
    acc, eff = st.cluster.accelerator, st.eff
    hbm = acc.memory_bandwidth_bytes_s * eff.memory_ceiling
    on_device = traffic / hbm
    on_host = traffic / st.cluster.host_update_bytes_s + shard * (
        p.gradient_bytes + p.weight_bytes) / st.cluster.pcie_bytes_s
    optimizer_s = np.where(off_o_r, on_host, on_device)

    compute_s = accum * t_mb
    if p.compute_dtype == "fp8":
        # FP8 weight copies (row- and column-wise) cast once per step from the bf16 weights,
        # every micro-batch under ZeRO-3 (gathered anew)
        cast = 4 * per_row(costs.params_worst) / hbm
        compute_s = compute_s + np.where(z3, accum, 1.0) * cast
    bubble_s = bubble_mb * t_mb
    passes = accum + bubble_mb  # micro-batch slots on the critical path, the bubble's included
    tp_total = passes * tp_mb
    tp_s = passes * tp_exp_mb
    ep_s = bubble_mb * ep_mb + accum * ep_exp_mb
    cp_s = passes * cp_mb
    p2p = per_row(costs.p2p_s)
    # hand-offs: one per micro-batch and chunk and the pipeline's fill; on their own stream
    # (Megatron with interleaving) only the fill shows
    pp_total = (accum * np.where(sched == 2, vstages, 1) + pp - 1) * p2p
    pp_s = np.where((sched == 2) & prof.overlap_p2p, (pp - 1) * p2p, pp_total)
    # Collectives hidden under compute still take from it: NCCL's kernels hold SMs and memory
    # bandwidth while they run (Efficiency.overlap_slowdown). Data-parallel collectives and the
    # expert all-to-all run as NCCL kernels; tensor-parallel overlap is left out (Transformer
    # Engine's ring exchange and torchtitan's async TP move data with copy engines).
    contention_s = st.eff.overlap_slowdown * (np.maximum(0.0, dp_total - dp_exposed)
                                              + accum * np.maximum(0.0, ep_mb - ep_exp_mb))
    step_s = (compute_s + bubble_s + tp_s + ep_s + cp_s + pp_s + dp_exposed + optimizer_s
              + contention_s)
    return GroupResult(
        weights=weights, gradients=grads, optimizer=optim, activations=act, other=other,
        total=total, host=host, nvme=nvme, in_flight=flight, zero3_gather=gather_b,
        root_gather=root_b,
        loss_transient=loss_t,
        buckets=buckets, recompute_ws=ws, peak_stage=peak_stage, peak_total=peak_total,
        compute_s=compute_s, bubble_s=bubble_s, tp_comm_s=tp_s, ep_comm_s=ep_s, cp_comm_s=cp_s,
        pp_comm_s=pp_s, dp_comm_exposed_s=dp_exposed, dp_comm_total_s=dp_total,
        optimizer_s=optimizer_s, step_s=step_s, tp_comm_total_s=tp_total,
        pp_comm_total_s=pp_total, ep_comm_total_s=passes * ep_mb, contention_s=contention_s,
        stages=stage_of_col)
