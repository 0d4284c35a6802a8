"""The kernels a model's training step runs, at its shapes: what `measure kernels` times.

Written from the ModelSpec (the same description the prediction uses), for dense
Llama-/GPT-style layers: the attention projections, the FFN projections and the output head,
each as forward, input-gradient and weight-gradient products; the fused attention core; and the
element-wise streams between them. Mixture-of-experts layers are timed as their dense shapes
(one expert's FFN at the routed token count would need the router's choices).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmsizer.specs.model import ModelSpec


@dataclass(frozen=True)
class Linear:
    """One weight matrix y = x·Wᵀ with W of shape (out_features, in_features), used `count`
    times per forward pass (once per layer, or once for the head)."""

    name: str
    in_features: int
    out_features: int
    count: int


def linears(spec: ModelSpec) -> list[Linear]:
    """The dense layers' projections and the output head (an MoE layer as its dense FFN)."""
    h, layers = spec.hidden_size, spec.num_layers
    ffn = spec.moe.expert_ffn_size if spec.moe is not None and not spec.ffn_size else spec.ffn_size
    out = [Linear("q_proj", h, spec.q_dim, layers), Linear("k_proj", h, spec.kv_dim, layers),
           Linear("v_proj", h, spec.kv_dim, layers), Linear("o_proj", spec.q_dim, h, layers)]
    if spec.ffn_kind == "gated":
        out += [Linear("gate_proj", h, ffn, layers), Linear("up_proj", h, ffn, layers)]
    else:
        out.append(Linear("up_proj", h, ffn, layers))
    out.append(Linear("down_proj", ffn, h, layers))
    out.append(Linear("lm_head", h, spec.vocab_size, 1))
    return out


def attention_forward_flops(batch: int, heads: int, seq: int, head_dim: int) -> int:
    """Causal attention's forward FLOPs: 2 products (QKᵀ and PV) of 2·d FLOPs per (query, key)
    pair and head, over the s(s+1)/2 pairs a causal mask keeps (FlashAttention-2, Dao 2023,
    sec. 4.1: 4·s²·d·heads for the full square, halved for causal)."""
    return 4 * batch * heads * head_dim * seq * (seq + 1) // 2


# FlashAttention-2 sec. 4.1: the backward pass does 2.5 times the forward's matmul FLOPs.
ATTENTION_BACKWARD_OVER_FORWARD = 2.5


def elementwise_elements_per_token(spec: ModelSpec) -> int:
    """Elements one layer's element-wise kernels read and write per token, as llmsizer's graph
    counts them (graph.LayerGraph.elementwise_elements_per_token): each norm reads and writes
    the residual stream (2·h), the two residual adds read two streams and write one (6·h), the
    gated activation reads gate and up and writes their product (3·ffn; 2·ffn plain), rotary
    embedding reads and writes queries and keys (2·(q_dim + kv_dim))."""
    h = spec.hidden_size
    act = (3 if spec.ffn_kind == "gated" else 2) * spec.ffn_size
    rotary = 2 * (spec.q_dim + spec.kv_dim) if spec.position == "rotary" else 0
    return spec.norms_per_layer * 2 * h + 6 * h + act + rotary
