"""The transformer as a list of ops: the single source of truth.

`build_graph(spec)` describes a ModelSpec once: the embedding ops, the ops of each layer, the
output head and (apart) any multi-token-prediction modules. Each op states, from its shapes and in
this module only:

- its parameters, and how tensor / expert parallelism shards them (`Op.weight_shard`,
  `Op.rank_params`);
- the matrix product it runs on one device for a given number of tokens (`Op.rank_gemm`) and
  therefore its forward FLOPs (`Op.forward_flops`, `Op.rank_forward_flops`) and the bytes it
  moves (`Gemm.weight_elements`, `Gemm.activation_elements`);
- for attention, the (query, key) pairs it computes (`attention_pairs`, closed forms, so a
  10⁸-token prompt costs no more to evaluate than a short one) and what it caches per token or per
  sequence (`Op.cache_elements_per_token`, `Op.state_elements`);
- the tensors it keeps for its backward pass under a named activation convention
  (`Op.saved_tensors`; `LayerGraph.saved_tensors` adds the layer's norm and residual tensors,
  `ModelGraph.saved_outside_layers` the embedding side, the head and the loss), stated from the
  op's shapes in llmsizer.graph_saved.

Parameter counts, FLOPs, memory, the training step model, the serving roofline and the planner
all read these; none re-derives a projection's FLOPs or a shard size (tests/test_graph_source.py
enforces it). A new architecture feature is added here, once.

Conventions: a weight's shape is (out_features, in_features) as in `torch.nn.Linear`; a linear op
multiplies each token's `in_features` vector by that matrix. A multiply-add is 2 FLOPs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Literal

# `X as X`: re-exported, so that the saved-tensor vocabulary is importable from llmsizer.graph.
from llmsizer.graph_saved import ACTIVATION_CONVENTIONS as ACTIVATION_CONVENTIONS
from llmsizer.graph_saved import SAVED_DTYPE_BYTES as SAVED_DTYPE_BYTES
from llmsizer.graph_saved import SavedDType as SavedDType
from llmsizer.graph_saved import SavedTensor as SavedTensor
from llmsizer.graph_saved import Saving as Saving
from llmsizer.graph_saved import layer_saved_tensors, op_saved_tensors, outside_saved_tensors
from llmsizer.specs.model import ModelSpec

# How tensor parallelism (Megatron-LM, Shoeybi et al. 2019, sec. 3) splits a weight:
#   column:     output features split across ranks (Q/K/V, MLP up/gate); its bias split too
#   row:        input features split (attention output, MLP down); its bias kept whole on each rank
#   vocab:      embedding rows split across ranks (vocab-parallel embedding and lm_head)
#   replicated: every rank holds all of it (norms, router, MLA's latent down-projections)
Shard = Literal["column", "row", "vocab", "replicated"]
# linear/router: a matrix product; attention: the Q·Kᵀ/softmax/·V core; scan: a recurrent
# state update (linear attention, SSM) with `flops_per_token`; conv: a depthwise causal
# convolution; params: loose parameter tensors (sinks, decay rates) with no product of their own.
OpKind = Literal["embedding", "linear", "norm", "router", "attention", "scan", "conv", "params"]
AttentionConvention = Literal["dense", "causal"]
# How caches are laid out: "engine" as vLLM/SGLang keep them (MLA: the latent + rotary key, one
# "head" replicated on every TP rank; convolution states of kernel - 1 positions), "hf" as
# transformers 5.x keeps them (MLA: the same latent, as keys = latent and values = rotary key;
# convolution states of the whole kernel), "expanded" with MLA's keys and values up-projected per
# head (older transformers releases, naive implementations).
CacheLayout = Literal["engine", "hf", "expanded"]
CACHE_LAYOUTS = ("engine", "hf", "expanded")


def _tri(a: int, b: int) -> int:
    """a + (a+1) + ... + b (0 when b < a)."""
    return (a + b) * (b - a + 1) // 2 if b >= a else 0


def _chunked_prefix(n: int, chunk: int) -> int:
    """Σ_{p=1..n} keys seen by the query at position p when attention is restricted to its own
    chunk of `chunk` positions: ((p - 1) mod C) + 1."""
    full, rest = divmod(max(n, 0), chunk)
    return full * chunk * (chunk + 1) // 2 + rest * (rest + 1) // 2


def attention_pairs(seq: int, context: int, window: int | None = None,
                    convention: AttentionConvention = "causal", chunk: int | None = None) -> int:
    """(query, key) pairs one head of one sequence computes for `seq` new queries whose last one
    sits at position `context` (the first at context - seq + 1; 1-based).

    `dense`: every query meets every key of the context (what an unmasked kernel computes and
    FlopCounterMode counts). `causal`: only the pairs the mask keeps: the query at position p sees
    p keys, min(p, W) in a sliding window of W, and ((p - 1) mod C) + 1 in chunked attention.
    """
    if convention == "dense":
        return seq * context
    first = context - seq + 1
    if chunk is not None:
        return _chunked_prefix(context, chunk) - _chunked_prefix(first - 1, chunk)
    if window is None:
        return _tri(first, context)
    below_end = min(context, window)  # queries at p <= W see p keys
    pairs = _tri(first, below_end)
    return pairs + (context - max(first, below_end + 1) + 1) * window \
        if context > window else pairs


@dataclass(frozen=True)
class Weight:
    name: str  # "weight" or "bias" (or a parameter's own name: "sinks", "A_log")
    shape: tuple[int, ...]
    shard: Shard

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class Gemm:
    """A matrix product on one device: `instances` products of (rows × k) · (k × n)."""

    rows: float  # per instance
    k: int
    n: int
    instances: float  # experts that receive tokens on this device (1 for dense ops)

    @property
    def flops(self) -> float:
        return 2 * self.rows * self.k * self.n * self.instances

    @property
    def weight_elements(self) -> float:
        return self.k * self.n * self.instances

    @property
    def activation_elements(self) -> float:
        """Inputs read and outputs written."""
        return self.rows * (self.k + self.n) * self.instances

    @property
    def input_elements(self) -> float:
        """The activations multiplied (what an FP8 recipe casts in the forward pass)."""
        return self.rows * self.k * self.instances

    @property
    def output_elements(self) -> float:
        """The outputs (their gradients are what an FP8 recipe casts in the backward pass)."""
        return self.rows * self.n * self.instances


# What a training step keeps for backward (SavedTensor, Saving, the named conventions) is stated
# in llmsizer.graph_saved from these ops' shapes; those names are importable from here too.


@dataclass(frozen=True)
class Op:
    """One op of the forward pass.

    `instances` copies of it exist (MoE experts) of which `active` run for each token (top-k);
    dense ops have instances = active = 1. `heads` is the number of heads an op's output is made
    of, used to decide how tensor parallelism splits it (K/V heads may be fewer than TP ranks and
    are then replicated, as vLLM and Megatron do). Attention ops also carry `kv_heads`, the width
    of a query/key head (`qk_dim`) and of a value head (`v_dim`), and the cache they keep.
    """

    name: str  # "q_proj"
    kind: OpKind
    component: str  # "attention.q_proj": key of the parameter breakdown
    weights: tuple[Weight, ...] = ()
    in_features: int = 0
    out_features: int = 0
    instances: int = 1
    active: int = 1
    heads: int | None = None
    expert_parallel: bool = False  # instances are split across the expert-parallel group
    in_sym: str = ""  # symbols of in_features/out_features for printed formulas ("h", "f")
    out_sym: str = ""
    # attention
    kv_heads: int = 0
    qk_dim: int = 0
    v_dim: int = 0
    latent_dim: int = 0  # MLA: values cached per token by serving engines (replicated over TP)
    kv_rank: int = 0  # MLA: the compressed KV latent (kv_lora_rank); latent_dim - kv_rank = rope
    # scan / conv: work per token; state kept per sequence (elements, all heads)
    flops_per_token: int = 0
    state: int = 0
    # norm: applied as x̂·(1 + w) in fp32 (Gemma's RMSNorm; see ModelSpec.norm_unit_offset)
    unit_offset: bool = False
    softcap: bool = False  # attention: scores soft-capped by a tanh (Gemma 2)
    # linear: reads the very tensor the product before it reads (k/v beside q, up beside gate):
    # one GEMM in Megatron-Core/Transformer Engine (fused QKV, fc1) and one tensor whatever the
    # code, so what is done to an input once (an FP8 cast) serves both
    shares_input: bool = False

    # --- parameters and their shards ----------------------------------------------------------

    @property
    def params(self) -> int:
        return self.instances * sum(w.numel for w in self.weights)

    @property
    def active_params(self) -> int:
        return self.active * sum(w.numel for w in self.weights)

    def rank_instances(self, ep: int) -> int:
        return self.instances // ep if self.expert_parallel else self.instances

    def weight_shard(self, w: Weight, tp: int) -> tuple[int, bool]:
        """(elements of `w` one TP rank holds, whether they are replicated across TP ranks)."""
        if w.shard == "replicated" or tp == 1:
            return w.numel, w.shard == "replicated"
        rest = w.numel // w.shape[0] if w.shape else 1
        if w.shard == "vocab":
            # Megatron pads the vocabulary to a multiple of tp: the largest shard holds
            # ceil(V / tp) rows.
            return math.ceil(w.shape[0] / tp) * rest, False
        if w.shard == "column" and self.heads is not None and self.heads < tp:
            # Fewer K/V heads than ranks: each rank keeps one whole head (replicated tp/heads×).
            return w.numel // self.heads, True
        return w.numel // tp, False

    def rank_params(self, tp: int, ep: int) -> tuple[int, int]:
        """(parameters one device holds of this op, of which replicated across TP ranks)."""
        held = repl = 0
        for w in self.weights:
            n, replicated = self.weight_shard(w, tp)
            held += n
            repl += n if replicated else 0
        k = self.rank_instances(ep)
        return k * held, k * repl

    def io_features(self) -> tuple[int, int]:
        """(in, out) widths of this op, whole (not sharded): what a LoRA adapter on it reads and
        writes (llmsizer.analysis.finetune_targets groups them into transformers' fused
        modules)."""
        return self.in_features, self.out_features

    # --- the matrix product on one device -------------------------------------------------------

    @property
    def column_parallel(self) -> bool:
        """Whether every TP rank reads this product's whole input (its weight split by output
        columns): under sequence parallelism that input is all-gathered first."""
        return bool(self.weights) and self.weights[0].shard == "column"

    def rank_dims(self, tp: int) -> tuple[int, int]:
        """(k, n) of this op's product on one TP rank."""
        k, n = self.in_features, self.out_features
        shard = self.weights[0].shard if self.weights else "vocab"
        if shard in ("column", "vocab"):
            if self.heads is not None and self.heads < tp:
                n = n // self.heads  # one whole (replicated) head per rank
            else:
                n = math.ceil(n / tp)
        elif shard == "row":
            k = max(1, k // tp)
        return k, n

    def rank_gemm(self, tokens: float, tp: int = 1, ep: int = 1) -> Gemm:
        """The product this op runs on one device for `tokens` tokens of that device.

        MoE experts (balanced routing): the expert-parallel group's tokens·ep·top_k rows spread
        over all experts, so each device's experts see tokens·top_k rows together; an expert
        receives a token with probability top_k/E per token, so the expected number of local
        experts that receive any is (E/ep)·(1 - (1 - top_k/E)^(tokens·ep)): a decode step with
        one token reads only top_k experts' weights, a large batch all of them.
        """
        k, n = self.rank_dims(tp)
        if self.instances == 1:
            return Gemm(tokens, k, n, 1)
        local = self.rank_instances(ep)
        group_tokens = tokens * (ep if self.expert_parallel else 1)
        p_miss = 1 - self.active / self.instances
        touched = local * (1 - p_miss ** group_tokens) if p_miss > 0 else local
        touched = max(min(local, touched), min(local, 1))
        rows_total = tokens * self.active * local * (ep if self.expert_parallel else 1) \
            / self.instances
        return Gemm(rows_total / touched if touched else 0.0, k, n, touched)

    def forward_flops(self, tokens: float, pairs: float = 0) -> float:
        """Forward FLOPs of the whole op (all ranks) for `tokens` tokens; attention ops take the
        (query, key) pairs summed over sequences (`attention_pairs` × batch)."""
        if self.kind in ("linear", "router"):
            return 2 * tokens * self.active * self.in_features * self.out_features
        if self.kind == "attention":
            assert self.heads is not None
            # scores Q·Kᵀ (qk_dim wide) and the weighted sum P·V (v_dim wide), per head
            return 2 * pairs * self.heads * (self.qk_dim + self.v_dim)
        if self.kind in ("scan", "conv"):
            return tokens * self.flops_per_token
        return 0

    @property
    def head_dim(self) -> float:
        """An attention op's head width as its fused kernel sees it: the mean of the query/key
        and value widths (MLA: 192 and 128)."""
        return (self.qk_dim + self.v_dim) / 2

    def rank_heads(self, tp: int) -> tuple[int, int]:
        """(query heads, K/V heads) of an attention op on one TP rank (K/V replicated when fewer
        than ranks)."""
        assert self.heads is not None
        return max(1, self.heads // tp), max(1, self.kv_heads // tp)

    def rank_forward_flops(self, tokens: float, tp: int = 1, ep: int = 1,
                           pairs: float = 0) -> float:
        if self.kind in ("linear", "router"):
            return self.rank_gemm(tokens, tp, ep).flops
        if self.kind == "attention":
            return 2 * pairs * self.rank_heads(tp)[0] * (self.qk_dim + self.v_dim)
        return self.forward_flops(tokens, pairs) / tp

    def rank_stream_bytes(self, tokens: float, tp: int, act_bytes: float) -> float:
        """Bytes a scan or convolution streams on one device: its per-token inputs and outputs
        (`in_features`, `out_features`, split over TP ranks like its heads)."""
        return act_bytes * tokens * (self.in_features + self.out_features) / tp

    def rank_absorbed_flops(self, tokens: float, tp: int, pairs: float) -> float:
        """MLA with weight absorption (DeepSeek-V2 sec. 2.1.2; vLLM's decode path): W_UK is
        folded into each query (2·d_nope·r per head and token) and W_UV applied after attention
        (2·r·d_v), so attention itself runs over the cached latent: scores over r + d_rope
        values and the weighted sum over r values per (query, key) pair and head. kv_b_proj is
        then never applied to the cached tokens."""
        assert self.kv_rank, "weight absorption applies to multi-head latent attention only"
        heads = self.rank_heads(tp)[0]
        rope = self.latent_dim - self.kv_rank
        nope = self.qk_dim - rope
        per_token = 2 * heads * (nope * self.kv_rank + self.kv_rank * self.v_dim)
        per_pair = 2 * heads * (self.latent_dim + self.kv_rank)
        return tokens * per_token + pairs * per_pair

    # --- caches -----------------------------------------------------------------------------------

    def cache_elements_per_token(self, tp: int = 1, layout: CacheLayout = "engine") -> int:
        """Values an attention op caches per token on one TP rank.

        Standard attention: a key (qk_dim) and a value (v_dim) per K/V head (a whole head per rank
        when there are fewer heads than ranks). MLA: the latent plus the rotary key, one "head"
        that every TP rank keeps whole (vLLM, SGLang, transformers 5.x); `expanded`: the
        up-projected keys and values of every head.
        """
        if self.kind != "attention":
            return 0
        if self.latent_dim and layout != "expanded":
            return self.latent_dim
        kv = self.kv_heads if self.latent_dim == 0 else (self.heads or 0)
        per_rank = max(1, kv // tp)
        return per_rank * (self.qk_dim + self.v_dim)

    def state_elements(self, tp: int = 1, layout: CacheLayout = "engine") -> int:
        """Recurrent state one sequence keeps in this op on one TP rank (constant in length).
        A convolution keeps its last kernel - 1 inputs (vLLM); transformers keeps a whole
        kernel's worth (one more input per channel)."""
        if not self.state:
            return 0
        state = self.state + (self.in_features if self.kind == "conv" and layout == "hf" else 0)
        return math.ceil(state / tp)

    # --- tensors kept for backward ----------------------------------------------------------------

    def saved_tensors(self, batch: int, seq: int, how: Saving,
                      gated: bool = True) -> tuple[SavedTensor, ...]:
        """The tensors this op keeps for backward for `batch` sequences of `seq` tokens on one
        device, under `how` (`gated`: whether the FFN this op belongs to multiplies a gate);
        stated in llmsizer.graph_saved.op_saved_tensors."""
        return op_saved_tensors(self, batch, seq, how, gated)


@dataclass(frozen=True)
class LayerGraph:
    index: int
    ops: tuple[Op, ...]
    sliding_window: int | None = None
    layer_type: str = "full_attention"
    chunk: int | None = None  # chunked attention (Llama 4)

    @property
    def params(self) -> int:
        return sum(op.params for op in self.ops)

    @property
    def keys_visible(self) -> int | None:
        """Most keys one query of this layer attends to: its sliding window or its chunk (None:
        the whole context). Between steps a cache keeps one fewer: the new token makes up the
        rest."""
        return self.sliding_window if self.sliding_window is not None else self.chunk

    @property
    def attention(self) -> Op | None:
        for op in self.ops:
            if op.kind == "attention":
                return op
        return None

    def elementwise_elements_per_token(self, hidden: int, tp: int, sequence_parallel: bool,
                                       gated: bool, rotary: bool = True,
                                       eager_norm: float = 1.0,
                                       eager_act: float = 1.0, eager_rotary: float = 1.0
                                       ) -> float:
        """Elements read and written per token by the layer's element-wise kernels on one
        device: each norm reads and writes the residual stream (2·h), the two residual adds read
        two streams and write one (6·h) — split over TP ranks only with sequence parallelism —,
        the FFN activation reads gate and up and writes their product (3 per element; 2 for a
        plain activation), and rotary embedding (where `rotary`) reads and writes queries and
        keys. Fused kernels move exactly that; `eager_*` multiply what unfused PyTorch ops move
        instead (EAGER_ELEMENTWISE in llmsizer.analysis.op_costs)."""
        rep = tp if sequence_parallel else 1
        stream = 6 * hidden
        split = 0.0
        for op in self.ops:
            if op.kind == "norm" and op.component == "norms.layers":
                stream += 2 * hidden * op.instances * eager_norm
            elif op.kind == "linear" and op.name == "up_proj":
                split += (3 if gated else 2) * op.rank_dims(tp)[1] * op.active * eager_act
            elif rotary and op.kind == "linear" and op.name in ("q_proj", "q_b_proj", "k_proj"):
                split += 2 * op.rank_dims(tp)[1] * eager_rotary
        return stream / rep + split

    def routing_elements_per_token(self, hidden: int) -> float:
        """Elements an MoE layer's routing moves per token on one device, apart from its
        products: the router's scores written, read by the softmax and by the top-k selection
        (3·E), the permutation that copies each token to its k experts (reads h, writes k·h) and
        the un-permutation that gathers and weights them back (reads k·h, writes h). Megatron-LM
        runs these as separate kernels unless `--moe-permute-fusion`/`--moe-router-fusion`
        (megatron/core/transformer/moe/README.md). 0 for a dense layer."""
        router = next((op for op in self.ops if op.kind == "router"), None)
        if router is None:
            return 0.0
        top_k = max((op.active for op in self.ops if op.kind == "linear" and op.instances > 1),
                    default=1)
        return 3.0 * router.out_features + 2.0 * (1 + top_k) * hidden

    def saved_tensors(self, batch: int, seq: int, how: Saving) -> tuple[SavedTensor, ...]:
        """What this layer keeps for backward on one device: its ops' tensors (each storage once)
        and the layer's norm and residual tensors (llmsizer.graph_saved.layer_saved_tensors)."""
        return layer_saved_tensors(self, batch, seq, how)


@dataclass(frozen=True)
class ModelGraph:
    spec: ModelSpec
    embedding: tuple[Op, ...]
    layers: tuple[LayerGraph, ...]
    head: tuple[Op, ...]  # final norm, projection out, lm_head (absent when tied)
    mtp: tuple[Op, ...] = ()  # multi-token-prediction modules: counted apart, never in totals

    def all_ops(self) -> list[tuple[str, Op]]:
        """(where, op) for every op: where is "embedding", "layers" or "head"."""
        out = [("embedding", op) for op in self.embedding]
        for layer in self.layers:
            out += [("layers", op) for op in layer.ops]
        out += [("head", op) for op in self.head]
        return out

    def saved_outside_layers(self, batch: int, seq: int, how: Saving) -> tuple[SavedTensor, ...]:
        """What is kept for backward outside the layers (the embedding side, the head and the
        loss) on one device of the first and last pipeline stages
        (llmsizer.graph_saved.outside_saved_tensors)."""
        return outside_saved_tensors(self, batch, seq, how)


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------

def _linear(name: str, component: str, in_f: int, out_f: int, bias: bool, shard: Shard,
            syms: str, heads: int | None = None, instances: int = 1, active: int = 1,
            expert_parallel: bool = False, shares_input: bool = False) -> Op:
    weights = [Weight("weight", (out_f, in_f), shard)]
    if bias:
        # A row-parallel layer adds its bias once, after the all-reduce: every rank keeps it whole.
        weights.append(Weight("bias", (out_f,), "replicated" if shard == "row" else shard))
    in_sym, out_sym = syms.split(">")
    return Op(name, "linear", component, tuple(weights), in_f, out_f, instances, active, heads,
              expert_parallel, in_sym, out_sym, shares_input=shares_input)


def _norm(name: str, component: str, spec: ModelSpec, instances: int = 1,
          width: int | None = None, sym: str = "h", bias: bool | None = None,
          shape: tuple[int, ...] | None = None, heads: int | None = None) -> Op:
    """A norm over `width` features (h by default), applied to `heads` rows per token where it
    normalises each head apart (per-head q/k norms)."""
    h = width or spec.hidden_size
    weights = [Weight("weight", shape or (h,), "replicated")]
    if bias if bias is not None else (spec.norm == "layernorm" and spec.norm_bias):
        weights.append(Weight("bias", (h,), "replicated"))
    return Op(name, "norm", component, tuple(weights), h, h, instances, instances,
              heads=heads, in_sym=sym, out_sym=sym,
              unit_offset=spec.norm == "rmsnorm" and spec.norm_unit_offset)


def _params(name: str, component: str, shape: tuple[int, ...], shard: Shard = "replicated",
            heads: int | None = None, sym: str = "") -> Op:
    return Op(name, "params", component, (Weight(name, shape, shard),), heads=heads,
              in_sym=sym, out_sym=sym)


def _ffn(spec: ModelSpec, prefix: str, width: int, f: str, bias: bool, instances: int = 1,
         active: int = 1, expert_parallel: bool = False) -> list[Op]:
    h = spec.hidden_size
    ops = []
    names = ("gate_proj", "up_proj") if spec.ffn_kind == "gated" else ("up_proj",)
    for i, name in enumerate(names):
        ops.append(_linear(name, f"{prefix}.{name}", h, width, bias, "column", f"h>{f}",
                           instances=instances, active=active, expert_parallel=expert_parallel,
                           shares_input=i > 0))
    ops.append(_linear("down_proj", f"{prefix}.down_proj", width, h, bias, "row", f"{f}>h",
                       instances=instances, active=active, expert_parallel=expert_parallel))
    return ops


def _qk_norms(spec: ModelSpec, q_width: int, kv_width: int) -> list[Op]:
    d = spec.head_size
    a, g = spec.num_heads, spec.kv_heads
    if spec.qk_norm == "head":  # one weight of head_dim shared by every head
        return [_norm("q_norm", "norms.q_norm", spec, width=d, sym="d", bias=False, heads=a),
                _norm("k_norm", "norms.k_norm", spec, width=d, sym="d", bias=False, heads=g)]
    if spec.qk_norm == "head_each":  # a weight per head (Cohere)
        return [_norm("q_norm", "norms.q_norm", spec, width=d, sym="d", bias=False,
                      shape=(a, d), heads=a),
                _norm("k_norm", "norms.k_norm", spec, width=d, sym="d", bias=False,
                      shape=(g, d), heads=g)]
    if spec.qk_norm == "full":  # over all heads together (OLMo 2)
        return [_norm("q_norm", "norms.q_norm", spec, width=q_width, sym="a·d", bias=False),
                _norm("k_norm", "norms.k_norm", spec, width=kv_width, sym="g·d", bias=False)]
    return []  # none, or l2 (no weights)


def _attention_ops(spec: ModelSpec) -> list[Op]:
    h, a = spec.hidden_size, spec.num_heads
    ops: list[Op] = []
    if spec.mla is not None:
        m = spec.mla
        q_out = a * m.qk_head_dim
        if m.q_lora_rank is None:
            ops.append(_linear("q_proj", "attention.q_proj", h, q_out, False, "column",
                               "h>a·d_qk", heads=a))
        else:
            # The low-rank down-projections are small and replicated on every TP rank.
            ops += [
                _linear("q_a_proj", "attention.q_a_proj", h, m.q_lora_rank, spec.qkv_bias,
                        "replicated", "h>r_q"),
                _norm("q_a_layernorm", "norms.q_a", spec, width=m.q_lora_rank, sym="r_q",
                      bias=False),
                _linear("q_b_proj", "attention.q_b_proj", m.q_lora_rank, q_out, False,
                        "column", "r_q>a·d_qk", heads=a),
            ]
        ops += [
            _linear("kv_a_proj", "attention.kv_a_proj", h, m.kv_lora_rank + m.qk_rope_head_dim,
                    spec.qkv_bias, "replicated", "h>r_kv+d_r"),
            _norm("kv_a_layernorm", "norms.kv_a", spec, width=m.kv_lora_rank, sym="r_kv",
                  bias=False),
            _linear("kv_b_proj", "attention.kv_b_proj", m.kv_lora_rank,
                    a * (m.qk_nope_head_dim + m.v_head_dim), False, "column",
                    "r_kv>a·(d_n+d_v)", heads=a),
            Op("attention", "attention", "attention.core", heads=a, kv_heads=a,
               qk_dim=m.qk_head_dim, v_dim=m.v_head_dim, latent_dim=m.latent_dim,
               kv_rank=m.kv_lora_rank, in_features=m.qk_head_dim, out_features=m.v_head_dim),
            _linear("o_proj", "attention.o_proj", a * m.v_head_dim, h, spec.out_bias, "row",
                    "a·d_v>h"),
        ]
        return ops
    d = spec.head_size
    q_out = spec.q_dim * (2 if spec.attention_output_gate else 1)
    ops += [
        _linear("q_proj", "attention.q_proj", h, q_out, spec.qkv_bias, "column",
                "h>2·a·d" if spec.attention_output_gate else "h>a·d", heads=a),
        _linear("k_proj", "attention.k_proj", h, spec.kv_dim, spec.qkv_bias, "column",
                "h>g·d", heads=spec.kv_heads, shares_input=True),
        _linear("v_proj", "attention.v_proj", h, spec.kv_dim, spec.qkv_bias, "column",
                "h>g·d", heads=spec.kv_heads, shares_input=True),
    ]
    ops += _qk_norms(spec, spec.q_dim, spec.kv_dim)
    if spec.attention_sinks:
        ops.append(_params("sinks", "attention.sinks", (a,), "column", heads=a, sym="a"))
    # The attention core (Q·Kᵀ, softmax, ·V): no weights.
    ops.append(Op("attention", "attention", "attention.core", heads=a, kv_heads=spec.kv_heads,
                  qk_dim=d, v_dim=d, in_features=d, out_features=d,
                  softcap=spec.attn_logit_softcap is not None))
    ops.append(_linear("o_proj", "attention.o_proj", spec.q_dim, h, spec.out_bias, "row",
                       "a·d>h"))
    return ops


def _linear_attention_ops(spec: ModelSpec) -> list[Op]:
    """Gated DeltaNet as transformers' Qwen3-Next builds it: in_proj_qkvz (q, k: key heads;
    v, z: value heads), in_proj_ba (one beta and one alpha per value head), a depthwise causal
    conv over q/k/v, dt_bias and A_log per value head, a gated RMSNorm of value_head_dim, out_proj.
    """
    la = spec.linear_attention
    assert la is not None
    h, hv = spec.hidden_size, la.num_value_heads
    qkvz = 2 * la.key_dim + 2 * la.value_dim
    # The delta rule per token and value head: decay + rank-1 update of the dk×dv state (4·dk·dv)
    # and the read-out (2·dk·dv) (Yang et al. 2024, sec. 3).
    scan = 6 * hv * la.key_head_dim * la.value_head_dim
    return [
        _linear("in_proj_qkvz", "mixer.in_proj_qkvz", h, qkvz, False, "column", "h>2·k+2·v"),
        _linear("in_proj_ba", "mixer.in_proj_ba", h, 2 * hv, False, "column", "h>2·H_v"),
        Op("conv1d", "conv", "mixer.conv1d",
           (Weight("weight", (la.conv_channels, 1, la.conv_kernel), "column"),),
           in_features=la.conv_channels, out_features=la.conv_channels,
           flops_per_token=2 * la.conv_channels * la.conv_kernel,
           state=la.conv_channels * (la.conv_kernel - 1), in_sym="c", out_sym="K"),
        _params("dt_bias", "mixer.dt_bias", (hv,), "column", sym="H_v"),
        _params("A_log", "mixer.A_log", (hv,), "column", sym="H_v"),
        # reads q, k, v and the two gates per token, writes v-wide outputs
        Op("delta_rule", "scan", "mixer.scan", in_features=la.conv_channels + 2 * hv,
           out_features=la.value_dim, flops_per_token=scan,
           state=hv * la.key_head_dim * la.value_head_dim),
        _norm("norm", "norms.mixer", spec, width=la.value_head_dim, sym="d_v", bias=False),
        _linear("out_proj", "mixer.out_proj", la.value_dim, h, False, "row", "v>h"),
    ]


def _mamba_ops(spec: ModelSpec) -> list[Op]:
    """Mamba-1 (Falcon-Mamba) and Mamba-2 mixers as transformers builds them."""
    m = spec.mamba
    assert m is not None
    h, di, n = spec.hidden_size, m.d_inner, m.state_size
    conv = Op("conv1d", "conv", "mixer.conv1d",
              (Weight("weight", (m.conv_channels, 1, m.conv_kernel), "column"),)
              + ((Weight("bias", (m.conv_channels,), "column"),) if m.conv_bias else ()),
              in_features=m.conv_channels, out_features=m.conv_channels,
              flops_per_token=2 * m.conv_channels * m.conv_kernel,
              state=m.conv_channels * (m.conv_kernel - 1), in_sym="c", out_sym="K")
    # Selective scan per token and state element: discretise (dt·A, dt·B·x), update, read out.
    # It reads x, dt (d_i or H wide), B and C, and the gate z; writes d_i outputs.
    scan_in = (3 * di + 2 * n) if m.version == 1 else (2 * di + 2 * m.n_groups * n + m.num_heads)
    scan = Op("selective_scan", "scan", "mixer.scan", in_features=scan_in, out_features=di,
              flops_per_token=6 * di * n, state=m.state_elements)
    if m.version == 1:
        return [
            _linear("in_proj", "mixer.in_proj", h, 2 * di, m.proj_bias, "column", "h>2·d_i"),
            conv,
            _linear("x_proj", "mixer.x_proj", di, m.dt_rank + 2 * n, False, "row",
                    "d_i>r+2·N"),
            _linear("dt_proj", "mixer.dt_proj", m.dt_rank, di, True, "column", "r>d_i"),
            _params("A_log", "mixer.A_log", (di, n), "column", sym="d_i·N"),
            _params("D", "mixer.D", (di,), "column", sym="d_i"),
            scan,
            _linear("out_proj", "mixer.out_proj", di, h, m.proj_bias, "row", "d_i>h"),
        ]
    heads = m.num_heads
    return [
        _linear("in_proj", "mixer.in_proj", h, 2 * di + 2 * m.n_groups * n + heads, m.proj_bias,
                "column", "h>2·d_i+2·G·N+H"),
        conv,
        _params("dt_bias", "mixer.dt_bias", (heads,), "column", sym="H"),
        _params("A_log", "mixer.A_log", (heads,), "column", sym="H"),
        _params("D", "mixer.D", (heads,), "column", sym="H"),
        scan,
        _norm("norm", "norms.mixer", spec, width=di, sym="d_i", bias=False),
        _linear("out_proj", "mixer.out_proj", di, h, m.proj_bias, "row", "d_i>h"),
    ]


def _ffn_ops(spec: ModelSpec, index: int) -> list[Op]:
    h = spec.hidden_size
    moe = spec.moe
    ops: list[Op] = []
    if moe is not None and index in moe.moe_layers:
        ops.append(Op("router", "router", "moe.router",
                      (Weight("weight", (moe.num_experts, h), "replicated"),)
                      + ((Weight("bias", (moe.num_experts,), "replicated"),)
                         if moe.router_bias else ()),
                      h, moe.num_experts, in_sym="h", out_sym="E"))
        ops += _ffn(spec, "moe.experts", moe.expert_ffn_size, "f_e", moe.expert_bias,
                    moe.num_experts, moe.top_k, expert_parallel=True)
        if moe.shared_experts:
            ops += _ffn(spec, "moe.shared_experts", moe.shared_expert_ffn_size, "f_s", False,
                        moe.shared_experts, moe.shared_experts)
            if moe.shared_expert_gate:
                ops.append(_linear("shared_expert_gate", "moe.shared_expert_gate", h, 1, False,
                                   "replicated", "h>1"))
    elif spec.ffn_size:
        ops += _ffn(spec, "mlp", spec.ffn_size, "f", spec.mlp_bias)
    return ops


def _layer_ops(spec: ModelSpec, index: int) -> tuple[Op, ...]:
    ops: list[Op] = []
    if spec.norms_per_layer:
        ops.append(_norm("norms", "norms.layers", spec, spec.norms_per_layer))
    kind = spec.layer_type(index)
    if kind == "linear_attention":
        ops += _linear_attention_ops(spec)
    elif kind == "mamba":
        ops += _mamba_ops(spec)
    else:
        ops += _attention_ops(spec)
    ops += _ffn_ops(spec, index)
    return tuple(ops)


def _mtp_ops(spec: ModelSpec) -> tuple[Op, ...]:
    """One multi-token-prediction module (DeepSeek-V3, arXiv 2412.19437 sec. 2.2): RMSNorms of the
    hidden state and of the next token's embedding, a (2h -> h) projection, one transformer layer
    like the model's last, and a norm before the shared output head. The embedding and output head
    are shared with the main model (the released checkpoint stores copies of both)."""
    h = spec.hidden_size
    last = spec.num_layers - 1
    return (
        _norm("enorm", "mtp.norms", spec, 3),  # enorm, hnorm, shared_head.norm
        _linear("eh_proj", "mtp.eh_proj", 2 * h, h, False, "replicated", "2·h>h"),
        *_layer_ops(spec, last),
    )


@cache
def build_graph(spec: ModelSpec) -> ModelGraph:
    """The op graph of `spec` (cached: specs are immutable)."""
    h, v, e = spec.hidden_size, spec.vocab_size, spec.embedding_dim
    embedding = [Op("embed_tokens", "embedding", "embedding.tokens",
                    (Weight("weight", (v, e), "vocab"),), v, e, in_sym="V", out_sym="h")]
    if spec.learned_position_rows:
        embedding.append(Op("embed_positions", "embedding", "embedding.positions",
                            (Weight("weight", (spec.learned_position_rows, h), "replicated"),),
                            spec.learned_position_rows, h, in_sym="P", out_sym="h"))
    if spec.embed_proj_dim is not None:
        embedding.append(_linear("project_in", "embedding.project_in", e, h, False, "replicated",
                                 "e>h"))
    if spec.embedding_norm:
        embedding.append(_norm("embed_norm", "embedding.norm", spec))

    # A layer's ops depend only on its mixer and whether it is an MoE layer: build each kind once.
    ops_of: dict[tuple[str, bool], tuple[Op, ...]] = {}
    layers = []
    for i in range(spec.num_layers):
        kind = spec.layer_type(i)
        key = (kind, spec.is_moe_layer(i))
        if key not in ops_of:
            ops_of[key] = _layer_ops(spec, i)
        layers.append(LayerGraph(i, ops_of[key], spec.layer_window(i), kind,
                                 spec.attention_chunk_size if kind == "chunked_attention"
                                 else None))

    head: list[Op] = []
    if spec.final_norm:
        head.append(_norm("final_norm", "norms.final", spec))
    if spec.embed_proj_dim is not None:
        head.append(_linear("project_out", "head.project_out", h, e, False, "replicated", "h>e"))
    # The output projection multiplies by a (V, e) matrix whether or not it is tied to the
    # embedding; when tied it owns no weights of its own.
    lm_weights: tuple[Weight, ...] = () if spec.tie_embeddings else (
        Weight("weight", (v, e), "vocab"),)
    if spec.lm_head_bias:
        lm_weights += (Weight("bias", (v,), "vocab"),)
    head.append(Op("lm_head", "linear", "lm_head", lm_weights, e, v,
                   in_sym="e" if spec.embed_proj_dim else "h", out_sym="V"))
    mtp = tuple(op for _ in range(spec.mtp_layers) for op in _mtp_ops(spec))
    return ModelGraph(spec, tuple(embedding), tuple(layers), tuple(head), mtp)
