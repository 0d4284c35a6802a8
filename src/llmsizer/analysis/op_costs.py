"""What one op's kernels cost on one device, from the op graph: a linear layer's product at the
matrix peak and the shape's efficiency, the attention core (flash kernels at the generation's
measured efficiency, or unfused as its batched products and softmax passes), recurrent scans,
the bytes FP8 recipes and unfused element-wise ops move, and the kernels a layer launches.
llmsizer.analysis.layer_costs sums these into a layer's and a stage's costs.
"""

from __future__ import annotations

from llmsizer.analysis.efficiency import (
    KERNELS_PER_LAYER_EXTRA,
    Efficiency,
    gemm_efficiency,
    op_time,
    vector_peak,
)
from llmsizer.analysis.flops import layer_pairs
from llmsizer.graph import Gemm, LayerGraph, Op
from llmsizer.specs.hardware import Accelerator


def linear_time(op: Op, tokens: int, tp: int, ep: int, acc: Accelerator, dtype: str,
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


def fp8_cast_bytes(op: Op, tokens: int, tp: int, ep: int, recipe: str, sp: bool
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


def attention_time(op: Op, layer: LayerGraph, mb: int, seq_local: int, cp: int, tp: int,
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


def stream_time(op: Op, tokens: int, tp: int, acc: Accelerator, e: float,
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
