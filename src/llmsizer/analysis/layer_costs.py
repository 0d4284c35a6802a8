"""Per-layer and per-stage costs of one training micro-batch, from the op graph.

What a layer costs (activation bytes kept, forward/backward/recompute seconds, tensor/expert/
context-parallel communication) depends only on (tp, cp, ep, micro-batch, recomputation, sequence
parallelism): it is computed once per such key and per kind of layer, and cached (its timing
once for all recomputation settings). Stages sum them per class of identical stages
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
from llmsizer.analysis.efficiency import (
    KERNELS_PER_LAYER_EXTRA,
    Efficiency,
    gemm_efficiency,
    op_time,
    vector_peak,
)
from llmsizer.analysis.flops import ATTENTION_BACKWARD_FACTOR, layer_pairs
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
from llmsizer.graph import Gemm, LayerGraph, Op, build_graph
from llmsizer.specs.hardware import Accelerator
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

def _linear_time(op: Op, tokens: int, tp: int, ep: int, acc: Accelerator, dtype: str,
                 e: float, eff: Efficiency) -> float:
    """Forward time of one linear op's share on one device (its product from the graph), at the
    matrix peak of `dtype` and the generation's ceiling for it."""
    g = op.rank_gemm(tokens, tp, ep)
    return op_time(g.flops, e * (g.weight_elements + g.activation_elements),
                   acc.sustained_peak(dtype),
                   acc.memory_bandwidth_bytes_s, gemm_efficiency(g, eff, acc, dtype), eff)


# Bytes per element an FP8 recipe moves to cast a bf16 tensor: read it (2), write the FP8 copy
# (1) and, because Hopper's FP8 tensor cores take only the TN layout, a transposed FP8 copy for
# the other GEMM that uses it (1) — Transformer Engine and torchao both keep row- and column-wise
# copies; current scaling first reads the tensor once more for its amax (2); MXFP8 and blockwise
# scaling compute their scales inside the cast (plus 1 byte per 32 or 128 elements, ignored).
# Row-wise scaling (torchao's axiswise recipe) needs a scale per row for one copy and per column
# for the other: the row-wise copy is one pass (read 2, write 1: each row's amax is taken where
# it is cast), the column-wise one reads the whole tensor for its amaxes first (2, then 2 + 1).
FP8_CAST_BYTES = {"delayed": 4.0, "current": 6.0, "tensorwise": 6.0, "rowwise": 8.0,
                  "blockwise": 4.0, "mxfp8": 4.0}
FP8_RECIPES = tuple(FP8_CAST_BYTES)
# Bytes per element of a backward product's output that a recipe moves after the product:
# torchao's row-wise recipe runs the backward products (slow accumulation) on cuBLAS's
# tensorwise kernel with unit scales and multiplies the bf16 output by the row and column scales
# afterwards (read 2, write 2), because PyTorch's row-wise CUTLASS kernel is slow without fast
# accumulation (pytorch/ao torchao/float8/float8_ops.py addmm_float8_unwrapped, from PR #1325;
# one extra kernel per product: pytorch/ao issue #2184)
FP8_RESCALE_BYTES = {"rowwise": 4.0}


# Memory traffic of element-wise ops run as unfused PyTorch ops over what one fused kernel moves
# (read the input once, write the output once), counted op by op from the eager code:
# RMSNorm as torchtitan (models/norms.py RMSNorm @ 9dec370) and transformers' LlamaRMSNorm
# write it — x.float() (2+4 bytes per element), pow (4+4), mean (4), x·rsqrt (4+4),
# type_as (4+2), ·weight (2+2): 36 bytes against 4 —; LayerNorm is one kernel
# (torch.nn.functional.layer_norm); rotary as complex products in fp32 (torchtitan
# apply_rotary_emb: float() 2+4, complex multiply 4+4, type_as 4+2: 20 against 4); the gated
# activation as silu (2+2) then a product (2+2+2): 10 against 6; a plain activation is one
# kernel. Backward moves as many again relative to its fused kernels (the step model's 2x).
EAGER_ELEMENTWISE = {"rmsnorm": 9.0, "layernorm": 1.0, "rotary": 5.0, "gated": 10 / 6,
                     "act": 1.0}


def _fp8_cast_bytes(op: Op, tokens: int, tp: int, ep: int, recipe: str, sp: bool
                    ) -> tuple[float, float]:
    """(forward, backward) bytes an FP8 recipe moves to cast one linear op's operands: its
    input in the forward pass, its output gradient in the backward pass. Weights are cast once
    per step (Transformer Engine caches them across micro-batches): see `_weight_cast_bytes`.
    An input the previous product read too (Op.shares_input: k/v beside q, up beside gate) is
    cast once for all of them; under sequence parallelism a column-parallel product's input is
    cast on the rank's sequence shard, before the all-gather (`fp8_gathers`)."""
    g = op.rank_gemm(tokens, tp, ep)
    per = FP8_CAST_BYTES[recipe]
    gathered = op.column_parallel and not op.expert_parallel and fp8_gathers(recipe, tp, sp)
    shard = tp if gathered else 1
    # products that leave their scaling to a kernel after them (FP8_RESCALE_BYTES): the
    # backward's input and weight gradients
    rescale = FP8_RESCALE_BYTES.get(recipe, 0.0) * (g.input_elements + g.weight_elements)
    return (0.0 if op.shares_input else per * g.input_elements / shard), \
        per * g.output_elements + rescale


def fp8_gathers(recipe: str, tp: int, sp: bool) -> bool:
    """Whether a sequence-parallel run all-gathers its column-parallel inputs already cast to
    FP8 (one byte an element): Transformer Engine casts in the norm kernel and gathers the FP8
    data, torchtitan's float8 TP (torchao Float8ColwiseParallel/PrepareFloat8ModuleInput) casts
    the shard before gathering — for tensorwise scaling only: rowwise runs all-gather in bf16
    and cast after (torchtitan models/llama3/parallelize_llama.py @ 820504e,
    enable_float8_tensorwise_tp)."""
    return sp and tp > 1 and recipe != "rowwise"


def _attention_time(op: Op, layer: LayerGraph, mb: int, seq_local: int, cp: int, tp: int,
                    flash: bool, acc: Accelerator, peak: float, e: float,
                    eff: Efficiency, fa2: bool = False) -> tuple[float, float]:
    """Forward time of the attention core on one device, and the time of the same work at the
    backward kernels' efficiency (the backward's 2.5x FLOPs are applied by the caller). Flash
    kernels skip masked tiles (causal pairs) and reach the generation's measured efficiency at
    this context length and head dimension (FlashAttention-2's where `fa2` and the measurement
    is of a faster kernel); unfused attention runs as its kernels (`_eager_attention_time`)."""
    context = seq_local * cp
    heads, kv_heads = op.rank_heads(tp)
    # queries read and outputs written (heads), keys and values read (K/V heads)
    qkvo = e * mb * seq_local * (heads + kv_heads) * (op.qk_dim + op.v_dim)
    if not flash:
        return (_eager_attention_time(op, mb, seq_local, context, heads, qkvo, acc, peak, e,
                                      eff),) * 2
    if cp == 1:
        pairs = layer_pairs(layer, seq_local, context, "causal")
    else:
        pairs = seq_local * context // 2  # ring attention: each rank's share of the causal pairs
    flops = op.rank_forward_flops(0, tp, pairs=mb * pairs)
    bw = acc.memory_bandwidth_bytes_s
    window = min(context, layer.keys_visible or context)
    fwd_eff, bwd_eff = (eff.attention_at(window, False, op.head_dim, fa2),
                        eff.attention_at(window, True, op.head_dim, fa2))
    return (op_time(flops, qkvo, peak, bw, fwd_eff, eff),
            op_time(flops, qkvo, peak, bw, bwd_eff, eff))


def _eager_attention_time(op: Op, mb: int, seq_local: int, context: int, heads: int,
                          qkvo: float, acc: Accelerator, peak: float, e: float,
                          eff: Efficiency) -> float:
    """Forward time of unfused attention as the kernels it launches run, one after another:
    the scores Q·Kᵀ and the weighted sum P·V as batched matrix products (one per head and
    sequence, priced like any product: `gemm_efficiency`, each bounded by its own traffic), and
    the softmax between them over the full square of scores (read once, written once). The
    products write and read the scores too: 4 passes of the score matrix in all. Attention
    dropout's kernel (read the probabilities, write its output and a 1-byte mask) is left out:
    the validation cases do not state their dropout rates (Megatron-LM 2021 defaulted to 0.1,
    BLOOM trained without)."""
    batch = mb * heads
    scores_el = batch * seq_local * context
    bw = acc.memory_bandwidth_bytes_s
    products = sum(op_time(g.flops, e * scores_el + qkvo / 2, peak, bw,
                           gemm_efficiency(g, eff, acc, "bf16"), eff)
                   for g in (Gemm(seq_local, op.qk_dim, context, batch),
                             Gemm(seq_local, context, op.v_dim, batch)))
    return products + 2 * e * scores_el / (bw * eff.memory_ceiling)


def _stream_time(op: Op, tokens: int, tp: int, acc: Accelerator, e: float,
                 eff: Efficiency) -> float:
    """Recurrent scans and convolutions (linear attention, SSM): their inputs and outputs
    streamed through memory, or their FLOPs at the CUDA-core fp32 rate, whichever is slower."""
    return op_time(op.rank_forward_flops(tokens, tp), op.rank_stream_bytes(tokens, tp, e),
                   vector_peak(acc), acc.memory_bandwidth_bytes_s, 1.0, eff)


# Kernels of an MoE layer's routing and token permutation beside the router's product, forward,
# by dispatcher: Megatron-Core's router with its fusion on takes 31 ("reducing the total number
# of kernels in the router part from 72 to 31"), DeepEP brings router and preprocessing to 17
# (NVIDIA/Megatron-LM@79e8592 docs/discussions/deepseek-v3-gb200-optimization); HybridEP taken
# as DeepEP. The backward is assumed to launch as many.
ROUTING_KERNELS = {"alltoall": 31, "deepep": 17, "hybridep": 17}


# What a run captures in CUDA graphs, whose replay launches the captured kernels without a
# launch each: nothing, the attention block (the ops through the output projection), the MoE
# router and its preprocessing (Megatron-Core's "attn", "moe_router" + "moe_preprocess" scopes,
# which Transformer Engine graphs), both, or whole layers ("full": Megatron-Core's per-layer
# graphs, or a whole iteration; MoE layers only with token drop-and-pad — transformer_config.py
# cuda_graph_scope)
CUDA_GRAPHS = ("none", "attn", "moe_router", "attn,moe_router", "full")


def layer_kernels(layer: LayerGraph, moe: bool, ep: int, fp8: bool, per_expert: bool,
                  dispatcher: str, eager_attention: bool, graphs: str = "none"
                  ) -> tuple[int, int]:
    """Kernels one layer launches for one micro-batch, (forward, backward), from its ops: a
    product is one GEMM forward and two backward (data and weight gradients), times the local
    experts where the framework launches one per expert (Profile.expert_gemm), plus an FP8 cast
    of its input forward (one for products reading the same input: Op.shares_input) and of
    its output gradient backward; fused attention one kernel forward and three backward
    (FlashAttention's preprocess, main and dQ conversion kernels), unfused attention four
    forward (QK^T, softmax, dropout, AV) and six backward; every other op one
    each way (bare parameters such as attention sinks none); KERNELS_PER_LAYER_EXTRA
    element-wise kernels; and the routing of an MoE layer (ROUTING_KERNELS). Kernels a CUDA
    graph captures (`graphs`, one of CUDA_GRAPHS) are not counted."""
    if graphs == "full":
        return 0, 0
    scopes = set(graphs.split(","))
    kinds = [op.kind for op in layer.ops]
    # the attention block: the ops through the one after the attention core (its projection)
    attn_end = kinds.index("attention") + 2 if "attention" in kinds else 0
    fwd = bwd = KERNELS_PER_LAYER_EXTRA // (2 if "attn" in scopes else 1)
    for i, op in enumerate(layer.ops):
        if ("attn" in scopes and i < attn_end) or ("moe_router" in scopes and op.kind == "router"):
            continue
        if op.kind in ("linear", "router"):
            n = op.rank_instances(ep) if per_expert and op.expert_parallel else 1
            cast = 1 if fp8 and op.kind == "linear" else 0
            fwd += n * (1 + (0 if op.shares_input else cast))
            bwd += n * (2 + cast)
        elif op.kind == "attention":
            fwd += 4 if eager_attention else 1
            bwd += 6 if eager_attention else 3
        elif op.kind == "params":
            continue  # parameters read by another op's kernel (attention sinks): no launch
        else:
            fwd += 1
            bwd += 1
    if moe and "moe_router" not in scopes:
        fwd += ROUTING_KERNELS[dispatcher]
        bwd += ROUTING_KERNELS[dispatcher]
    return fwd, bwd


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
            fwd_mm += _linear_time(op, tokens, tp, ep, acc, "bf16" if dtype == "fp8" else dtype,
                                   e, eff)
        elif op.kind == "linear":
            # routed experts run on the busiest rank's tokens (st.moe_imbalance)
            skew = st.moe_imbalance if op.expert_parallel and ep > 1 else 1.0
            fwd_mm += skew * _linear_time(op, tokens, tp, ep, acc, dtype, e, eff)
            if dtype == "fp8":
                f, b = _fp8_cast_bytes(op, tokens, tp, ep, st.fp8_recipe, sp)
                cast_f, cast_b = cast_f + f, cast_b + b
        elif op.kind == "attention":
            # FlashAttention-2 where the framework runs it and the generation's measurement is
            # of a faster kernel
            fa2 = frameworks.profile(st.framework).attention == "fa2"
            attn, attn_bwd = _attention_time(op, layer, mb, seq_local, cp, tp, flash, acc,
                                             attn_peak, e, eff, fa2)
        elif op.kind in ("scan", "conv"):
            fwd_scan += _stream_time(op, tokens, tp, acc, e, eff)
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
    return 3 * _linear_time(head_op, tokens, tp, 1, acc, head_dtype, st.act_bytes, eff) + \
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
