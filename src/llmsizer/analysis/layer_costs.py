"""Per-layer and per-stage costs of one training micro-batch, from the op graph.

What a layer costs (activation bytes kept, forward/backward/recompute seconds, tensor/expert/
context-parallel communication) depends only on (tp, cp, ep, micro-batch, recomputation, sequence
parallelism): it is computed once per such key and per kind of layer, and cached (its timing
once for all recomputation settings), from what each op's kernels cost (llmsizer.analysis.
op_costs). Stages sum them per class of identical stages
(llmsizer.analysis.params.StageClasses), in numpy over all the groups of a search at once. The
step model (llmsizer.analysis.step) combines these per pipeline stage with ZeRO, offload and
schedules.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from llmsizer.analysis import comm, frameworks
from llmsizer.analysis.activations import layer_tensors, output_activation_bytes
from llmsizer.analysis.cluster import Cluster
from llmsizer.analysis.efficiency import Efficiency
from llmsizer.analysis.flops import ATTENTION_BACKWARD_FACTOR
from llmsizer.analysis.op_costs import (
    EAGER_ELEMENTWISE,
    attention_time,
    fp8_cast_bytes,
    fp8_gathers,
    layer_kernels,
    linear_time,
    stream_time,
)
from llmsizer.analysis.params import (
    StageClasses,
    check_split,
    class_held,
    layer_held,
    layer_representative,
    stage_classes,
    validate_parallel,
)
from llmsizer.errors import SpecError
from llmsizer.graph import build_graph
from llmsizer.specs.model import ModelSpec
from llmsizer.specs.precision import Optimizer, TrainingPrecision

GiB = 2**30
DEFAULT_FRAMEWORK_OVERHEAD = 1 * GiB  # CUDA context, cuBLAS workspaces, NCCL buffers: 0.5-2 GiB

@dataclass(frozen=True)
class Setting:
    """What stays fixed across a search: the model, the run and the cost model.

    Compared by value (every field is frozen): it is the key of the caches below, so one search,
    or many single-layout calls for the same run, share the per-layer costs.
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
    framework: str = "megatron"  # a profile of llmsizer.analysis.frameworks
    fp8_recipe: str = "delayed"  # what FP8 casts cost (FP8_CAST_BYTES); only with fp8 precision
    # MoE load imbalance: tokens the busiest expert-parallel rank receives over the mean (1:
    # balanced, as the published benchmarks force it); its experts' products and its share of
    # the all-to-all gate every rank
    moe_imbalance: float = 1.0
    # MoE token dispatcher (comm.MOE_DISPATCHERS): NCCL all-to-all or a deduplicating library
    moe_dispatcher: str = "alltoall"
    # expert all-to-all of one micro-batch hidden under another's compute (Megatron-Core
    # --overlap-moe-expert-parallel-comm)
    moe_a2a_overlap: bool = False
    # what CUDA graphs capture (CUDA_GRAPHS): their kernels launch without a launch cost each
    cuda_graphs: str = "none"

    def __hash__(self) -> int:
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash((self.spec, self.seq, self.precision, self.opt, self.cluster, self.eff,
                           self.activations, self.attention, self.framework_overhead,
                           self.dp_overlap, self.framework, self.fp8_recipe,
                           self.moe_imbalance, self.moe_dispatcher, self.moe_a2a_overlap,
                           self.cuda_graphs))
            object.__setattr__(self, "_hash", cached)
        return cached

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
    split: tuple[int, int] | None = None  # layers on the first and last pipeline stage


# ---------------------------------------------------------------------------------------------
# Per-layer costs (scalar, from the op graph; cached)
# ---------------------------------------------------------------------------------------------

def setting_kernels(st: Setting, layer_index: int, ep: int) -> tuple[int, int]:
    """`layer_kernels` of one layer of the run `st` at expert-parallel size `ep`."""
    spec = st.spec
    return layer_kernels(build_graph(spec).layers[layer_index],
                         spec.moe is not None and spec.is_moe_layer(layer_index), ep,
                         st.precision.compute_dtype == "fp8",
                         frameworks.profile(st.framework).expert_gemm == "per-expert",
                         st.moe_dispatcher, st.attention != "flash", st.cuda_graphs)


@dataclass(frozen=True)
class LayerCost:
    act_bytes: float  # kept for backward, one micro-batch
    act_bytes_no_recompute: float  # the working set while a fully recomputed layer is rebuilt
    forward_s: float
    backward_s: float
    recompute_s: float
    ep_comm_s: float
    cp_comm_s: float
    linear_s: float = 0.0  # forward + backward of the matrix products (what TP overlap hides)


@lru_cache(maxsize=8192)
def _saved_bytes(spec: ModelSpec, mb: int, seq_local: int, convention: str, e: int, tp: int,
                 sp: bool, recompute: str, moe: bool, flash: bool, layer_index: int) -> float:
    """Bytes one layer keeps for backward: independent of the time model, so cached apart from
    it (a calibration fit re-times the same layers many times). Every tensor a layer keeps is
    affine in the micro-batch — per-sequence bytes times mb, plus a constant for the few that do
    not grow with it (Gemma's 1 + w) — (tests/test_memory.py holds the catalog to it), so the
    layer is walked for one and two sequences only: (mb·n + c)/split in exact integers rounds as
    the walk at `mb` does, and the sum runs in the walk's order."""
    return sum((mb * n + c) / split for n, c, split in _saved_per_sequence(
        spec, seq_local, convention, e, tp, sp, recompute, moe, flash, layer_index))


@lru_cache(maxsize=4096)
def _saved_per_sequence(spec: ModelSpec, seq_local: int, convention: str, e: int, tp: int,
                        sp: bool, recompute: str, moe: bool, flash: bool, layer_index: int
                        ) -> tuple[tuple[float, float, int], ...]:
    """Each tensor one layer keeps: (bytes per sequence before its split, bytes that do not
    grow with the micro-batch, split)."""
    one, two = (layer_tensors(spec, b, seq_local, convention=convention, act_bytes=e, tp=tp,
                              sequence_parallel=sp, recompute=recompute, moe_layer=moe,
                              flash=flash, layer_index=layer_index) for b in (1, 2))
    return tuple((t2.unsplit_bytes(e) - t1.unsplit_bytes(e),
                  2 * t1.unsplit_bytes(e) - t2.unsplit_bytes(e), t1.split)
                 for t1, t2 in zip(one, two, strict=True))


@dataclass(frozen=True)
class LayerTime:
    """What a layer's micro-batch takes whatever is recomputed (seconds)."""

    forward_s: float
    backward_s: float
    matmul_s: float  # the forward's matrix products
    attention_s: float  # the forward's attention core
    elementwise_s: float  # the forward's memory-bound element-wise streams
    ep_comm_s: float
    cp_comm_s: float


@lru_cache(maxsize=4096)
def _layer_time(st: Setting, layer_index: int, tp: int, cp: int, ep: int, mb: int,
                sp: bool) -> LayerTime:
    """Cached apart from the recomputation setting, which only adds to it: a search times each
    layer shape once for its three settings."""
    spec, acc, eff = st.spec, st.cluster.accelerator, st.eff
    e = st.act_bytes
    dtype = st.precision.compute_dtype
    # FP8 recipes run only the linear layers' products in FP8 (Transformer Engine, torchao):
    # attention, norms and the rest stay in bf16
    attn_peak = acc.sustained_peak("bf16" if dtype == "fp8" else dtype)
    seq_local = st.seq // cp
    tokens = mb * seq_local
    layer = build_graph(spec).layers[layer_index]
    moe = spec.is_moe_layer(layer_index)
    flash = st.attention == "flash"
    fwd_mm = fwd_scan = attn = attn_bwd = 0.0
    cast_f = cast_b = 0.0
    for op in layer.ops:
        if op.kind == "router":
            fwd_mm += linear_time(op, tokens, tp, ep, acc, "bf16" if dtype == "fp8" else dtype,
                                  e, eff)
        elif op.kind == "linear":
            # routed experts run on the busiest rank's tokens (st.moe_imbalance)
            skew = st.moe_imbalance if op.expert_parallel and ep > 1 else 1.0
            fwd_mm += skew * linear_time(op, tokens, tp, ep, acc, dtype, e, eff)
            if dtype == "fp8":
                f, b = fp8_cast_bytes(op, tokens, tp, ep, st.fp8_recipe, sp)
                cast_f, cast_b = cast_f + f, cast_b + b
        elif op.kind == "attention":
            # FlashAttention-2 where the framework runs it and the generation's measurement is
            # of a faster kernel
            fa2 = frameworks.profile(st.framework).attention == "fa2"
            attn, attn_bwd = attention_time(op, layer, mb, seq_local, cp, tp, flash, acc,
                                            attn_peak, e, eff, fa2)
        elif op.kind in ("scan", "conv"):
            fwd_scan += stream_time(op, tokens, tp, acc, e, eff)
    # Element-wise work (norms, residual adds, activation, rotary, MoE routing and permutation,
    # FP8 casts): memory-bound streams, fused or as unfused PyTorch ops move them.
    h = spec.hidden_size
    bw = acc.memory_bandwidth_bytes_s * eff.memory_ceiling
    gated = spec.ffn_kind == "gated"
    eager = (1.0, 1.0, 1.0) if frameworks.profile(st.framework).fused_elementwise else tuple(
        EAGER_ELEMENTWISE[k] for k in (spec.norm, "gated" if gated else "act", "rotary"))
    elementwise = e * tokens * (layer.elementwise_elements_per_token(
        h, tp, sp, gated, spec.position == "rotary", *eager)
        + layer.routing_elements_per_token(h))
    ew = elementwise / bw
    # every kernel launched costs its launch and tail beside its work (Efficiency.
    # kernel_overhead_s): what keeps many small kernels (fine-grained experts launched one by
    # one, small models, FP8 casts) from reaching the roofline
    k_fwd, k_bwd = setting_kernels(st, layer_index, ep)
    forward = fwd_mm + fwd_scan + attn + ew + cast_f / bw + k_fwd * eff.kernel_overhead_s
    backward = 2 * (fwd_mm + fwd_scan) + ATTENTION_BACKWARD_FACTOR[st.attention] * attn_bwd + \
        2 * ew + cast_b / bw + k_bwd * eff.kernel_overhead_s

    topo = st.topology
    ep_s = cp_s = 0.0
    if moe and spec.moe and ep > 1:
        # each rank dispatches its own tokens to their k experts and combines them back, forward
        # and backward; with sequence parallelism each TP rank holds its share of the micro-batch's
        # tokens (Megatron-Core's MoE layers take the sequence-parallel input)
        m = spec.moe
        ep_s = 4 * st.moe_imbalance * comm.moe_dispatch_s(
            e * h, tokens / (tp if sp else 1), m.top_k, m.num_experts, ep,
            topo.link_for(ep, tp), st.moe_dispatcher, m.n_group, m.topk_group)
    if cp > 1:
        # ring attention passes each rank's keys and values as the heads use them (MLA: the
        # up-projected per-head keys and values, not the latent)
        attn_op = layer.attention
        kv = e * tokens * (attn_op.cache_elements_per_token(tp, "expanded") if attn_op else 0)
        ring = (cp - 1) * comm.p2p_s(kv, topo.link_for(cp, tp), eff) * 3  # fwd + 2× bwd
        cp_s = max(0.0, ring - forward)  # overlapped with the attention compute
    return LayerTime(forward, backward, fwd_mm, attn, ew, ep_s, cp_s)


@lru_cache(maxsize=4096)
def _layer_cost(st: Setting, layer_index: int, tp: int, cp: int, ep: int, mb: int,
                recompute: str, sp: bool) -> LayerCost:
    t = _layer_time(st, layer_index, tp, cp, ep, mb, sp)
    selective = t.attention_s
    saving = frameworks.saving_recompute(st.framework, recompute)
    if saving == "selective-op":
        # the products it does not save (every other one) and the element-wise ops are rebuilt;
        # attention is kept
        selective = t.matmul_s / 2 + t.elementwise_s
    recompute_s = {"full": t.forward_s, "selective": selective}.get(recompute, 0.0)
    act, act_full = (_saved_bytes(st.spec, mb, st.seq // cp, st.activations, st.act_bytes, tp,
                                  sp, rc, st.spec.is_moe_layer(layer_index),
                                  st.attention == "flash", layer_index)
                     for rc in (saving, "none"))
    return LayerCost(act, act_full, t.forward_s, t.backward_s, recompute_s, t.ep_comm_s,
                     t.cp_comm_s, linear_s=3 * t.matmul_s)


@dataclass(frozen=True)
class StageCosts:
    """Per group (rows) and stage class (columns, `classes`) of groups sharing one pipeline
    depth and split: numpy arrays, built for all the groups of a search at once (thousands)."""

    classes: StageClasses
    dense_params: np.ndarray
    expert_params: np.ndarray
    largest_layer_params: np.ndarray  # per TP rank
    outside_layers_params: np.ndarray  # embedding, final norm, head on this stage, per TP rank
    act_bytes: np.ndarray  # one micro-batch, all the stage's layers
    output_act_bytes: np.ndarray  # the output head's (last stage only), one micro-batch at a time
    loss_transient_bytes: np.ndarray  # what the loss backward allocates beside it (last stage)
    recompute_working_set: np.ndarray
    compute_s: np.ndarray  # forward + backward + recompute of one micro-batch
    forward_s: np.ndarray  # its forward part
    linear_s: np.ndarray  # its matrix products (forward and backward): what TP overlap hides
    comm_s: np.ndarray  # tp + ep + cp communication of one micro-batch
    tp_comm_s: np.ndarray
    ep_comm_s: np.ndarray
    cp_comm_s: np.ndarray


@dataclass(frozen=True)
class MicroBatchCosts:
    """Costs of one micro-batch that do not depend on the pipeline split."""

    layers: dict[int, LayerCost]  # by representative layer
    tp_layer_s: float
    head_s: float
    output_act_bytes: float
    loss_transient_bytes: float


@lru_cache(maxsize=4096)
def _head_s(st: Setting, tp: int, tokens: int) -> float:
    """The output head's forward and backward for `tokens` tokens on one device (cached: the
    same for every recomputation and expert-parallel setting)."""
    acc, eff = st.cluster.accelerator, st.eff
    head_op = build_graph(st.spec).head[-1]
    # the output head's products, and the loss's passes over the logits (the rank's vocabulary
    # share) as the framework's cross entropy makes them (frameworks.LOSS_BYTES)
    # (FP8 recipes keep the output layer in bf16: Megatron's output layer is not a Transformer
    # Engine module, and torchao/torchtitan leave the LM head out of float8 conversion)
    dtype = st.precision.compute_dtype
    head_dtype = "bf16" if dtype == "fp8" else dtype
    return 3 * linear_time(head_op, tokens, tp, 1, acc, head_dtype, st.act_bytes, eff) + \
        frameworks.profile(st.framework).loss_bytes * tokens * head_op.rank_dims(tp)[1] / (
            acc.memory_bandwidth_bytes_s * eff.memory_ceiling)


@lru_cache(maxsize=4096)
def _output_bytes(spec: ModelSpec, mb: int, seq_local: int, convention: str, e: int, tp: int,
                  sp: bool, recompute: str, compiled_loss: bool = False) -> float:
    """What the embedding side and the head keep for backward (cached as `_saved_bytes`)."""
    return output_activation_bytes(spec, mb, seq_local, convention=convention, act_bytes=e,
                                   tp=tp, sequence_parallel=sp, recompute=recompute,
                                   compiled_loss=compiled_loss)


def recomputes_gathers(framework: str, tp: int, sp: bool, recompute: str) -> bool:
    """Whether the backward re-runs the forward's tensor-parallel all-gathers: torchtitan's
    per-op selective policy saves reduce-scatter outputs but not all-gather ones (torchtitan
    models/llama3/parallelize_llama.py _save_list @ 820504e)."""
    return (tp > 1 and sp
            and frameworks.saving_recompute(framework, recompute) == "selective-op")


def tp_passes(st: Setting, tp: int, sp: bool, recompute: str) -> tuple[float, float]:
    """A layer's tensor-parallel communication of one micro-batch, (forward, backward), in
    all-reduces of its activations: Megatron-LM's 2 all-reduces forward and 2 backward (with
    sequence parallelism a reduce-scatter and an all-gather of equal cost each); full
    recomputation repeats the forward ones, and torchtitan's per-op selective policy the
    forward's all-gathers (`recomputes_gathers`). FP8 runs that cast
    before gathering (fp8_gathers) move the forward all-gathers at one byte an element;
    reduce-scatters and the backward's gathers of gradients stay in bf16."""
    scatters, gathers, backward = tp_pass_parts(st, tp, sp, recompute)
    return scatters + gathers, backward


def tp_pass_parts(st: Setting, tp: int, sp: bool, recompute: str
                  ) -> tuple[float, float, float]:
    """`tp_passes` with the forward split into its reduce-scatters and its all-gathers (each
    half of an all-reduce, the gathers at one byte an element where fp8_gathers): (forward
    scatters, forward gathers, backward)."""
    fp8 = st.precision.compute_dtype == "fp8" and fp8_gathers(st.fp8_recipe, tp, sp)
    # two forward all-reduces' worth: two reduce-scatters (half each) and two all-gathers
    gathers = 1 / st.act_bytes if fp8 else 1.0
    if recompute == "full":
        return 2.0, 2 * gathers, 2.0
    if recomputes_gathers(st.framework, tp, sp, recompute):
        return 1.0, 2 * gathers, 2.0
    return 1.0, gathers, 2.0


@lru_cache(maxsize=4096)
def _micro_batch_costs(st: Setting, tp: int, cp: int, ep: int, micro_batch: int, recompute: str,
                       sp: bool) -> MicroBatchCosts:
    spec = st.spec
    costs = {i: _layer_cost(st, i, tp, cp, ep, micro_batch, recompute, sp)
             for i in set(layer_representative(spec))}
    e = st.act_bytes
    tokens = micro_batch * (st.seq // cp)
    ar = comm.all_reduce_s(e * tokens * spec.hidden_size, tp, st.topology.link_for(tp, 1),
                           st.eff)
    tp_layer = ar * sum(tp_passes(st, tp, sp, recompute))
    head_s = _head_s(st, tp, tokens)
    prof = frameworks.profile(st.framework)
    out_act = _output_bytes(spec, micro_batch, st.seq // cp, st.activations, e, tp, sp,
                            recompute, prof.compiled_loss)
    # the loss backward's fp32 tensors of the logits' size (the rank's vocabulary share); a
    # compiled loss writes only the logits' gradient, in their dtype
    logits = tokens * build_graph(spec).head[-1].rank_dims(tp)[1]
    loss_transient = (e if prof.compiled_loss else prof.loss_backward_copies * 4) * logits
    return MicroBatchCosts(costs, tp_layer, head_s, out_act, loss_transient)


@lru_cache(maxsize=8192)
def _check(st: Setting, tp: int, pp: int, cp: int, ep: int, sp: bool,
           split: tuple[int, int] | None) -> None:
    """Raise if the layout cannot run this model and sequence (cached: a search checks
    thousands of groups with a few dozen distinct shapes)."""
    validate_parallel(st.spec, tp, pp, ep)
    if st.seq % cp:
        raise SpecError("cp", cp, f"a divisor of the sequence length ({st.seq})")
    if sp and st.seq % tp:
        raise SpecError("sequence_parallel", True, f"a sequence length divisible by tp ({tp})")
    check_split(st.spec.num_layers, pp, split)


@lru_cache(maxsize=4096)
def _class_params(spec: ModelSpec, tp: int, pp: int, ep: int, split: tuple[int, int] | None
                  ) -> tuple[tuple[float, ...], ...]:
    """Per stage class: dense and expert parameters one device holds, its largest layer (what
    ZeRO-3 gathers at once), and what it holds outside its layers (the embedding, the final norm
    and the output head: FSDP's root unit)."""
    classes = stage_classes(spec, pp, split)
    held = class_held(spec, tp, pp, ep, split)
    largest = [0.0] * len(classes.first)
    in_layers = [0.0] * len(classes.first)
    for r, counts in classes.counts:
        size = layer_held(spec, r, tp, ep).held
        for c, k in enumerate(counts):
            if k:
                largest[c] = max(largest[c], size)
                in_layers[c] += k * size
    return (tuple(float(h.held - h.expert) for h in held), tuple(float(h.expert) for h in held),
            tuple(float(x) for x in largest),
            tuple(float(max(0.0, h.held - n)) for h, n in zip(held, in_layers, strict=True)))


def _column(values: list[float]) -> np.ndarray:
    """One value per group, as a column that broadcasts over stage classes."""
    return np.array(values, dtype=float)[:, None]


def stage_costs(st: Setting, gs: tuple[Group, ...]) -> StageCosts:
    """Per-stage costs of one micro-batch of each group of `gs` (one pipeline depth and split):
    independent of data-parallel size and accumulation. A stage sums its layers' costs kind by
    kind in a fixed order, so a layout's costs do not depend on the groups evaluated with it
    (a search and train_step agree to the bit)."""
    pp, split = gs[0].pp, gs[0].split
    for g in gs:
        _check(st, g.tp, g.pp, g.cp, g.ep, g.sequence_parallel, g.split)
    classes = stage_classes(st.spec, pp, split)
    mbs = [_micro_batch_costs(st, g.tp, g.cp, g.ep, g.micro_batch, g.recompute,
                              g.sequence_parallel) for g in gs]
    shape = (len(gs), len(classes.first))
    act, comp, fwd, lin, ep_s, cp_s, ws = (np.zeros(shape) for _ in range(7))
    for r, counts in classes.counts:
        k = np.array(counts, dtype=float)
        costs = [mb.layers[r] for mb in mbs]
        act += k * _column([c.act_bytes for c in costs])
        comp += k * _column([c.forward_s + c.backward_s + c.recompute_s for c in costs])
        fwd += k * _column([c.forward_s for c in costs])
        lin += k * _column([c.linear_s for c in costs])
        ep_s += k * _column([c.ep_comm_s for c in costs])
        cp_s += k * _column([c.cp_comm_s for c in costs])
        ws = np.maximum(ws, np.where(k > 0, _column([
            c.act_bytes_no_recompute if g.recompute == "full" else 0.0
            for c, g in zip(costs, gs, strict=True)]), 0.0))
    last = classes.last
    head = np.array([mb.head_s for mb in mbs])
    comp[:, last] += head
    fwd[:, last] += head / 3
    tp_s = np.array(classes.layers, dtype=float) * np.array([mb.tp_layer_s for mb in mbs])[:, None]
    out_act, loss_t = np.zeros(shape), np.zeros(shape)
    out_act[:, last] = [mb.output_act_bytes for mb in mbs]
    loss_t[:, last] = [mb.loss_transient_bytes for mb in mbs]
    dense, expert, largest, outside = (np.array(a) for a in zip(
        *(_class_params(st.spec, g.tp, pp, g.ep, split) for g in gs), strict=True))
    return StageCosts(
        classes, dense_params=dense, expert_params=expert, largest_layer_params=largest,
        outside_layers_params=outside,
        act_bytes=act, output_act_bytes=out_act, loss_transient_bytes=loss_t,
        recompute_working_set=ws, compute_s=comp, forward_s=fwd, linear_s=lin,
        comm_s=tp_s + ep_s + cp_s, tp_comm_s=tp_s, ep_comm_s=ep_s, cp_comm_s=cp_s)
