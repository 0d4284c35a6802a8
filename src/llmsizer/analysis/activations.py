"""Activation memory: the tensors a layer keeps for its backward pass, per implementation.

A convention is a list of saved tensors, each sized from the model's shapes, so GQA, gated FFNs,
head_dim ≠ h/a and MoE flow in from the spec. Conventions:

- "megatron": Megatron-LM GPT-style layers with dropout (Korthikanti et al. 2022, "Reducing
  Activation Recomputation in Large Transformer Models", sec. 4, eq. 1–6): for MHA, a 4h FFN and
  2-byte activations this is exactly s·b·h·(34 + 5·a·s/h) per layer, and with tensor/sequence
  parallelism and selective recomputation their eqs. (2)–(6). With a flash-attention kernel the
  a·s² terms are replaced by the kernel's fp32 log-sum-exp, as selective recomputation does.
- "hf-eager", "hf-sdpa": Hugging Face transformers Llama-style layers (RMSNorm, SwiGLU, no
  dropout), as measured with torch.autograd.graph.saved_tensors_hooks (tests/test_verify_activations.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmsizer.errors import SpecError
from llmsizer.graph import LayerGraph, build_graph
from llmsizer.specs.model import ModelSpec

CONVENTIONS = ("megatron", "hf-eager", "hf-sdpa")


@dataclass(frozen=True)
class Saved:
    """One kept tensor: its bytes for the whole (b, s) micro-batch on one device."""

    name: str
    bytes: float
    formula: str


@dataclass(frozen=True)
class LayerActivations:
    saved: tuple[Saved, ...]

    @property
    def bytes(self) -> float:
        return sum(s.bytes for s in self.saved)


def _mixer_saved(layer: LayerGraph, s: int, b: int, h: int, e: float, t: int) -> list[Saved]:
    """A linear-attention or state-space mixer: what autograd keeps for its backward — the input
    shared by its input projections, each other projection's input, the convolution's input and
    the scan's inputs and outputs (widths from the op graph)."""
    saved = [Saved("mixer input projections' input", e * s * b * h, "e·s·b·h")]
    for op in layer.ops:
        if op.kind == "linear" and op.weights and op.weights[0].shard == "row":
            k, _ = op.rank_dims(t)
            saved.append(Saved(f"{op.name} input", e * s * b * k, f"e·s·b·{op.in_sym}"))
        elif op.kind in ("conv", "scan"):
            width = op.rank_stream_bytes(1, t, 1)  # inputs + outputs per token
            saved.append(Saved(f"{op.name} inputs and outputs", e * s * b * width,
                               f"e·s·b·({op.in_sym or 'in'} + {op.out_sym or 'out'})" + _div(t)))
    return saved


def _attention_widths(spec: ModelSpec, layer: LayerGraph | None) -> tuple[int, int, int, int]:
    """(query, key, value, attention-output) widths of all heads together, from the graph's
    attention op (MLA: keys of nope + rope, values of v_head_dim per head)."""
    op = layer.attention if layer is not None else None
    if op is None or op.heads is None:
        return spec.q_dim, spec.kv_dim, spec.kv_dim, spec.q_dim
    return (op.heads * op.qk_dim, op.kv_heads * op.qk_dim, op.kv_heads * op.v_dim,
            op.heads * op.v_dim)


def layer_activations(spec: ModelSpec, batch: int, seq: int, *, convention: str = "megatron",
                      act_bytes: float = 2, tp: int = 1, sequence_parallel: bool = False,
                      recompute: str = "none", moe_layer: bool = False,
                      flash: bool = False, layer_index: int | None = None) -> LayerActivations:
    """Bytes one layer keeps for backward for one micro-batch of `batch` sequences of `seq`
    tokens (already divided by context parallelism), on one device of a TP group. `layer_index`
    picks the layer (its mixer and widths from the op graph); by default the first layer of the
    MoE or dense kind asked for."""
    if convention not in CONVENTIONS:
        raise SpecError("activations", convention, "one of " + ", ".join(CONVENTIONS))
    b, s, h, e, t = batch, seq, spec.hidden_size, act_bytes, tp
    sbh = s * b * h
    # Tensors outside the TP-split region are whole on each rank unless sequence parallelism
    # splits them along the sequence (Korthikanti sec. 4.2.2).
    rep = t if sequence_parallel else 1

    if recompute == "full":
        # Only the layer's input is kept; everything else is rebuilt before backward.
        return LayerActivations((Saved("layer input", e * sbh / rep, "e·s·b·h" + _div(rep)),))

    graph = build_graph(spec)
    if layer_index is not None:
        moe_layer = spec.is_moe_layer(layer_index)
    else:
        layer_index = next((i for i in range(spec.num_layers)
                            if spec.is_moe_layer(i) == moe_layer), 0)
    layer = graph.layers[layer_index]
    q, kv, v, o = _attention_widths(spec, layer)
    a = spec.num_heads
    f = spec.ffn_size
    width_sym = "f"
    if moe_layer and spec.moe is not None:
        # Each token passes through top_k experts: their intermediates add up to top_k·f_e wide.
        f = spec.moe.top_k * spec.moe.expert_ffn_size + (
            spec.moe.shared_experts * spec.moe.shared_expert_ffn_size)
        width_sym = "k·f_e"
    saved: list[Saved] = []

    mixer = layer.layer_type in ("linear_attention", "mamba")
    if convention == "megatron" or mixer:
        dropout = True
        saved += [Saved("attention LayerNorm input", e * sbh / rep, "e·s·b·h" + _div(rep))]
    if mixer:
        saved += _mixer_saved(layer, s, b, h, e, t)
    elif convention == "megatron":
        saved += [
            Saved("QKV projection input", e * sbh / rep, "e·s·b·h" + _div(rep)),
            Saved("Q and K", e * s * b * (q + kv) / t, "e·s·b·(q + kv)" + _div(t)),
        ]
        if flash:
            # A flash kernel keeps no s² tensor: its output (counted below as the output
            # projection's input) and the fp32 log-sum-exp of each row (Dao et al. 2022).
            saved.append(Saved("softmax log-sum-exp (fp32)", 4 * a * s * b / t, "4·a·s·b" + _div(t)))
        elif recompute != "selective":
            saved += [
                Saved("softmax output", e * a * s * s * b / t, "e·a·s²·b" + _div(t)),
                Saved("attention dropout mask", a * s * s * b / t if dropout else 0,
                      "a·s²·b" + _div(t)),
                Saved("attention dropout output", e * a * s * s * b / t, "e·a·s²·b" + _div(t)),
            ]
        saved += [
            Saved("V", e * s * b * v / t, "e·s·b·kv" + _div(t)),
            Saved("output projection input", e * s * b * o / t, "e·s·b·q" + _div(t)),
        ]
    if mixer and not f:
        # a pure state-space block: no feed-forward part
        return LayerActivations(tuple(saved))
    if convention == "megatron" or mixer:
        saved += [
            Saved("attention residual dropout mask", sbh / rep, "s·b·h" + _div(rep)),
            Saved("MLP LayerNorm input", e * sbh / rep, "e·s·b·h" + _div(rep)),
            Saved("MLP input", e * sbh / rep, "e·s·b·h" + _div(rep)),
        ]
        if spec.ffn_kind == "gated":
            saved += [
                Saved("gate projection output", e * s * b * f / t, f"e·s·b·{width_sym}" + _div(t)),
                Saved("up projection output", e * s * b * f / t, f"e·s·b·{width_sym}" + _div(t)),
            ]
        else:
            saved.append(Saved("activation input", e * s * b * f / t,
                               f"e·s·b·{width_sym}" + _div(t)))
        saved += [
            Saved("down projection input", e * s * b * f / t, f"e·s·b·{width_sym}" + _div(t)),
            Saved("MLP residual dropout mask", sbh / rep, "s·b·h" + _div(rep)),
        ]
        return LayerActivations(tuple(saved))

    if spec.ffn_kind != "gated" or spec.norm != "rmsnorm":
        raise SpecError("activations", convention, "megatron for this model: the Hugging Face "
                        "conventions describe Llama-style layers (RMSNorm, gated FFN)")
    # Hugging Face transformers Llama-style layer (RMSNorm, gated MLP, no dropout), as measured
    # with saved_tensors_hooks on transformers 5.x / torch 2.x (tests/test_verify_activations.py).
    for which in ("attention", "MLP"):
        saved += [
            Saved(f"{which} RMSNorm fp32 input copy", 4 * sbh / rep, "4·s·b·h" + _div(rep)),
            Saved(f"{which} RMSNorm fp32 rsqrt", 4 * s * b / rep, "4·s·b" + _div(rep)),
            Saved(f"{which} RMSNorm normalised output", e * sbh / rep, "e·s·b·h" + _div(rep)),
        ]
    saved.append(Saved("Q/K/V projection input", e * sbh / rep, "e·s·b·h" + _div(rep)))
    if convention == "hf-eager":
        # repeat_kv materialises K and V at query size; softmax runs in fp32 and, in 16-bit
        # models, its cast-back probabilities are kept by the P·V product too.
        saved += [Saved("Q, K and V (K/V repeated to query heads)", 3 * e * s * b * q / t,
                        "3·e·s·b·q" + _div(t))]
        if recompute != "selective":
            saved.append(Saved("softmax output (fp32)", 4 * a * s * s * b / t, "4·a·s²·b" + _div(t)))
            if e != 4:
                saved.append(Saved("attention probabilities (model dtype)", e * a * s * s * b / t,
                                   "e·a·s²·b" + _div(t)))
    else:  # hf-sdpa: flash-style kernel, K/V kept at their own (GQA) size, fp32 log-sum-exp
        saved += [
            Saved("Q", e * s * b * q / t, "e·s·b·q" + _div(t)),
            Saved("K and V", 2 * e * s * b * kv / t, "2·e·s·b·kv" + _div(t)),
            Saved("log-sum-exp (fp32)", 4 * a * s * b / t, "4·a·s·b" + _div(t)),
        ]
    saved += [
        Saved("output projection input", e * s * b * q / t, "e·s·b·q" + _div(t)),
        Saved("gate/up projection input", e * sbh / rep, "e·s·b·h" + _div(rep)),
        Saved("activation input (gate output)", e * s * b * f / t, f"e·s·b·{width_sym}" + _div(t)),
        Saved("activation output", e * s * b * f / t, f"e·s·b·{width_sym}" + _div(t)),
        Saved("up projection output", e * s * b * f / t, f"e·s·b·{width_sym}" + _div(t)),
        Saved("down projection input", e * s * b * f / t, f"e·s·b·{width_sym}" + _div(t)),
    ]
    return LayerActivations(tuple(saved))


def output_activations(spec: ModelSpec, batch: int, seq: int, *, convention: str = "megatron",
                       act_bytes: float = 2, tp: int = 1, sequence_parallel: bool = False,
                       recompute: str = "none") -> LayerActivations:
    """What is kept outside the layers for backward: the embedding side and the output head with
    the loss, per micro-batch on one device of the last (and first) pipeline stage."""
    b, s, h, e, t, V = batch, seq, spec.hidden_size, act_bytes, tp, spec.vocab_size
    rep = t if sequence_parallel else 1
    v_local = -(-V // t)
    if convention == "megatron":
        # Korthikanti et al. 2022 sec. 4.3: final LayerNorm input and the output projection's
        # input (2·s·b·h each) and the fp32 logits of the cross-entropy (4·s·b·V/t).
        return LayerActivations((
            Saved("final norm input", e * s * b * h / rep, "e·s·b·h" + _div(rep)),
            Saved("output projection input", e * s * b * h / rep, "e·s·b·h" + _div(rep)),
            Saved("fp32 logits for the loss", 4 * s * b * v_local, "4·s·b·V" + _div(t)),
        ))
    # Hugging Face: token ids, rotary cos/sin (shared by all layers), the final RMSNorm, the
    # lm_head input, the fp32 log-softmax of the loss, the shifted labels and a scalar.
    labels = 8 * b * s if b > 1 else 8 * (s + 1)  # b = 1: the shifted slice keeps its padding
    rope = 0 if recompute == "full" else 2 * s * spec.head_size * e
    return LayerActivations((
        Saved("input ids (int64)", 8 * b * s, "8·s·b"),
        Saved("rotary cos and sin", rope, "2·s·d·e"),
        Saved("final RMSNorm (fp32 copy, rsqrt, output)", 4 * s * b * h + 4 * s * b + e * s * b * h,
              "4·s·b·h + 4·s·b + e·s·b·h"),
        Saved("lm_head input", e * s * b * h, "e·s·b·h"),
        Saved("log-softmax of the logits (fp32)", 4 * s * b * v_local, "4·s·b·V" + _div(t)),
        Saved("shifted labels (int64)", labels, "8·s·b"),
        Saved("loss normaliser", 4, "4"),
    ))


def _div(n: int) -> str:
    return f"/{n}" if n > 1 else ""


def korthikanti_per_layer(spec: ModelSpec, batch: int, seq: int, tp: int = 1,
                          sequence_parallel: bool = False, recompute: str = "none") -> float:
    """The closed forms of Korthikanti et al. 2022, eqs. (1)-(6), in bytes per layer (reference
    only; assumes MHA, a 4h FFN, 2-byte activations and dropout)."""
    s, b, h, a, t = seq, batch, spec.hidden_size, spec.num_heads, tp
    if recompute == "full":
        return 2 * s * b * h / (t if sequence_parallel else 1)
    attn = 0 if recompute == "selective" else 5 * a * s / h
    if sequence_parallel:
        return s * b * h / t * (34 + attn)
    if t > 1:
        return s * b * h * (10 + 24 / t + attn / t)
    return s * b * h * (34 + attn)
