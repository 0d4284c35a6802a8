"""The transformer as a list of ops: the single source of truth.

`build_graph(spec)` describes a ModelSpec once: the embedding ops, the ops of each layer and the
output head. Each op names the weights it owns (shape, how tensor parallelism splits them) and the
matrix dimensions it multiplies, so parameter counts, FLOPs, bytes moved and memory are all read off
the same description. A new architecture feature (GQA, gating, MoE, ...) is added here, once.

Conventions: a weight's shape is (out_features, in_features) as in `torch.nn.Linear`; a linear op
multiplies each token's `in_features` vector by that matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Literal

from llmsizer.specs.model import ModelSpec

# How tensor parallelism (Megatron-LM, Shoeybi et al. 2019, sec. 3) splits a weight:
#   column:     output features split across ranks (Q/K/V, MLP up/gate); its bias split too
#   row:        input features split (attention output, MLP down); its bias kept whole on each rank
#   vocab:      embedding rows split across ranks (vocab-parallel embedding and lm_head)
#   replicated: every rank holds all of it (norms, router)
Shard = Literal["column", "row", "vocab", "replicated"]
OpKind = Literal["embedding", "linear", "norm", "router", "attention"]


@dataclass(frozen=True)
class Weight:
    name: str  # "weight" or "bias"
    shape: tuple[int, ...]
    shard: Shard

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class Op:
    """One op of the forward pass.

    `instances` copies of it exist (MoE experts) of which `active` run for each token (top-k);
    dense ops have instances = active = 1. `heads` is the number of attention heads an op's output
    is made of, used to decide how tensor parallelism splits it (K/V heads may be fewer than TP ranks
    and are then replicated, as vLLM and Megatron do).
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

    @property
    def params(self) -> int:
        return self.instances * sum(w.numel for w in self.weights)

    @property
    def active_params(self) -> int:
        return self.active * sum(w.numel for w in self.weights)


@dataclass(frozen=True)
class LayerGraph:
    index: int
    ops: tuple[Op, ...]
    sliding_window: int | None = None

    @property
    def params(self) -> int:
        return sum(op.params for op in self.ops)


@dataclass(frozen=True)
class ModelGraph:
    spec: ModelSpec
    embedding: tuple[Op, ...]
    layers: tuple[LayerGraph, ...]
    head: tuple[Op, ...]  # final norm, projection out, lm_head (absent when tied)

    def all_ops(self) -> list[tuple[str, Op]]:
        """(where, op) for every op: where is "embedding", "layers" or "head"."""
        out = [("embedding", op) for op in self.embedding]
        for layer in self.layers:
            out += [("layers", op) for op in layer.ops]
        out += [("head", op) for op in self.head]
        return out


def _linear(name: str, component: str, in_f: int, out_f: int, bias: bool, shard: Shard,
            syms: str, heads: int | None = None, instances: int = 1, active: int = 1,
            expert_parallel: bool = False) -> Op:
    weights = [Weight("weight", (out_f, in_f), shard)]
    if bias:
        # A row-parallel layer adds its bias once, after the all-reduce: every rank keeps it whole.
        weights.append(Weight("bias", (out_f,), "replicated" if shard == "row" else shard))
    in_sym, out_sym = syms.split(">")
    return Op(name, "linear", component, tuple(weights), in_f, out_f, instances, active, heads,
              expert_parallel, in_sym, out_sym)


def _norm(name: str, component: str, spec: ModelSpec, instances: int = 1) -> Op:
    h = spec.hidden_size
    weights = [Weight("weight", (h,), "replicated")]
    if spec.norm == "layernorm" and spec.norm_bias:
        weights.append(Weight("bias", (h,), "replicated"))
    return Op(name, "norm", component, tuple(weights), h, h, instances, instances,
              in_sym="h", out_sym="h")


def _ffn(spec: ModelSpec, prefix: str, width: int, f: str, bias: bool, instances: int = 1,
         active: int = 1, expert_parallel: bool = False) -> list[Op]:
    h = spec.hidden_size
    ops = []
    names = ("gate_proj", "up_proj") if spec.ffn_kind == "gated" else ("up_proj",)
    for name in names:
        ops.append(_linear(name, f"{prefix}.{name}", h, width, bias, "column", f"h>{f}",
                           instances=instances, active=active, expert_parallel=expert_parallel))
    ops.append(_linear("down_proj", f"{prefix}.down_proj", width, h, bias, "row", f"{f}>h",
                       instances=instances, active=active, expert_parallel=expert_parallel))
    return ops


def _layer_ops(spec: ModelSpec, index: int) -> tuple[Op, ...]:
    h = spec.hidden_size
    ops: list[Op] = []
    if spec.norms_per_layer:
        ops.append(_norm("norms", "norms.layers", spec, spec.norms_per_layer))
    ops += [
        _linear("q_proj", "attention.q_proj", h, spec.q_dim, spec.qkv_bias, "column",
                "h>a·d", heads=spec.num_heads),
        _linear("k_proj", "attention.k_proj", h, spec.kv_dim, spec.qkv_bias, "column",
                "h>g·d", heads=spec.kv_heads),
        _linear("v_proj", "attention.v_proj", h, spec.kv_dim, spec.qkv_bias, "column",
                "h>g·d", heads=spec.kv_heads),
        # The attention core (Q·Kᵀ, softmax, ·V): no weights; in/out_features = head_dim.
        Op("attention", "attention", "attention.core", in_features=spec.head_size,
           out_features=spec.head_size, heads=spec.num_heads),
        _linear("o_proj", "attention.o_proj", spec.q_dim, h, spec.out_bias, "row", "a·d>h"),
    ]
    moe = spec.moe
    if moe is not None and index in moe.moe_layers:
        ops.append(Op("router", "router", "moe.router",
                      (Weight("weight", (moe.num_experts, h), "replicated"),)
                      + ((Weight("bias", (moe.num_experts,), "replicated"),)
                         if moe.router_bias else ()),
                      h, moe.num_experts, in_sym="h", out_sym="E"))
        ops += _ffn(spec, "moe.experts", moe.expert_ffn_size, "f_e", False, moe.num_experts,
                    moe.top_k, expert_parallel=True)
        if moe.shared_experts:
            ops += _ffn(spec, "moe.shared_experts", moe.shared_expert_ffn_size, "f_s", False,
                        moe.shared_experts, moe.shared_experts)
            if moe.shared_expert_gate:
                ops.append(_linear("shared_expert_gate", "moe.shared_expert_gate", h, 1, False,
                                   "replicated", "h>1"))
    else:
        ops += _ffn(spec, "mlp", spec.ffn_size, "f", spec.mlp_bias)
    return tuple(ops)


def _layer_window(spec: ModelSpec, index: int) -> int | None:
    if spec.sliding_window is None:
        return None
    if spec.sliding_window_layers is None or index in spec.sliding_window_layers:
        return spec.sliding_window
    return None


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

    # A layer's ops depend only on whether it is an MoE layer: build each kind once.
    ops_of: dict[bool, tuple[Op, ...]] = {}
    layers = []
    for i in range(spec.num_layers):
        moe = spec.is_moe_layer(i)
        if moe not in ops_of:
            ops_of[moe] = _layer_ops(spec, i)
        layers.append(LayerGraph(i, ops_of[moe], _layer_window(spec, i)))

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
    return ModelGraph(spec, tuple(embedding), tuple(layers), tuple(head))
