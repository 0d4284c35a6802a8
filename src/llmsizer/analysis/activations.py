"""Activation memory: the tensors a layer keeps for its backward pass, per implementation.

What each op keeps, per named convention, is stated by the op graph (`Op.saved_tensors`,
`LayerGraph.saved_tensors`, `ModelGraph.saved_outside_layers` in llmsizer.graph), sized from its
shapes, so GQA, gated FFNs, head_dim ≠ h/a, MLA and MoE flow in from the spec. This module sums
them into bytes for a micro-batch on one device. Conventions (llmsizer.graph.ACTIVATION_CONVENTIONS):

- "megatron": Megatron-LM GPT-style layers with dropout (Korthikanti et al. 2022, "Reducing
  Activation Recomputation in Large Transformer Models", sec. 4, eq. 1–6): for MHA, a 4h FFN and
  2-byte activations this is exactly s·b·h·(34 + 5·a·s/h) per layer, and with tensor/sequence
  parallelism and selective recomputation their eqs. (2)–(6). With a flash-attention kernel the
  a·s² terms are replaced by the kernel's fp32 log-sum-exp, as selective recomputation does.
- "hf-eager", "hf-sdpa": Hugging Face transformers Llama-style layers (RMSNorm, SwiGLU, no
  dropout), as measured with torch.autograd.graph.saved_tensors_hooks (tests/test_verify_activations.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from llmsizer.errors import SpecError
from llmsizer.graph import ACTIVATION_CONVENTIONS, SavedTensor, Saving, build_graph
from llmsizer.specs.model import ModelSpec

CONVENTIONS = ACTIVATION_CONVENTIONS


@dataclass(frozen=True)
class Saved:
    """One kept tensor: its bytes for the whole (b, s) micro-batch on one device, and the part of
    them in the activation dtype (the rest: fp32 statistics, int64 ids, 1-byte masks)."""

    name: str
    bytes: float
    formula: str
    activation_bytes: float = 0.0


@dataclass(frozen=True)
class LayerActivations:
    saved: tuple[Saved, ...]

    @property
    def bytes(self) -> float:
        return sum(s.bytes for s in self.saved)


def _in_bytes(tensors: tuple[SavedTensor, ...], act_bytes: float) -> LayerActivations:
    return LayerActivations(tuple(Saved(t.name, t.bytes(act_bytes), t.formula,
                                        t.bytes_of("activation", act_bytes))
                                  for t in tensors))


def _saving(convention: str, act_bytes: float, tp: int, sequence_parallel: bool, recompute: str,
            flash: bool = False) -> Saving:
    if convention not in CONVENTIONS:
        raise SpecError("activations", convention, "one of " + ", ".join(CONVENTIONS))
    return Saving(convention, tp, sequence_parallel, recompute, flash, act_bytes == 4)


def layer_activations(spec: ModelSpec, batch: int, seq: int, *, convention: str = "megatron",
                      act_bytes: float = 2, tp: int = 1, sequence_parallel: bool = False,
                      recompute: str = "none", moe_layer: bool = False,
                      flash: bool = False, layer_index: int | None = None) -> LayerActivations:
    """Bytes one layer keeps for backward for one micro-batch of `batch` sequences of `seq`
    tokens (already divided by context parallelism), on one device of a TP group. `layer_index`
    picks the layer (its mixer and widths from the op graph); by default the first layer of the
    MoE or dense kind asked for. `recompute` "selective-op" is torchtitan's per-op selective
    checkpointing."""
    return _in_bytes(layer_tensors(spec, batch, seq, convention=convention, act_bytes=act_bytes,
                                   tp=tp, sequence_parallel=sequence_parallel,
                                   recompute=recompute, moe_layer=moe_layer, flash=flash,
                                   layer_index=layer_index), act_bytes)


def layer_tensors(spec: ModelSpec, batch: int, seq: int, *, convention: str = "megatron",
                  act_bytes: float = 2, tp: int = 1, sequence_parallel: bool = False,
                  recompute: str = "none", moe_layer: bool = False, flash: bool = False,
                  layer_index: int | None = None) -> tuple[SavedTensor, ...]:
    """The tensors `layer_activations` sizes, as the op graph states them (the step model sums
    their bytes without building the report)."""
    how = _saving(convention, act_bytes, tp, sequence_parallel, recompute, flash)
    if layer_index is None:
        layer_index = next((i for i in range(spec.num_layers)
                            if spec.is_moe_layer(i) == moe_layer), 0)
    layer = build_graph(spec).layers[layer_index]
    mixer = layer.layer_type in ("linear_attention", "mamba")
    if (not how.megatron and recompute not in ("full", "selective-op") and not mixer
            and (spec.ffn_kind != "gated" or spec.norm != "rmsnorm")):
        raise SpecError("activations", convention, "megatron for this model: the Hugging Face "
                        "conventions describe Llama-style layers (RMSNorm, gated FFN)")
    return layer.saved_tensors(batch, seq, how)


def output_activations(spec: ModelSpec, batch: int, seq: int, *, convention: str = "megatron",
                       act_bytes: float = 2, tp: int = 1, sequence_parallel: bool = False,
                       recompute: str = "none", compiled_loss: bool = False
                       ) -> LayerActivations:
    """What is kept outside the layers for backward: the embedding side and the output head with
    the loss, per micro-batch on one device of the last (and first) pipeline stage
    (`compiled_loss`: the cross-entropy under torch.compile)."""
    return _in_bytes(_output_tensors(spec, batch, seq, convention, act_bytes, tp,
                                     sequence_parallel, recompute, compiled_loss), act_bytes)


def output_activation_bytes(spec: ModelSpec, batch: int, seq: int, *,
                            convention: str = "megatron", act_bytes: float = 2, tp: int = 1,
                            sequence_parallel: bool = False, recompute: str = "none",
                            compiled_loss: bool = False) -> float:
    """`output_activations(...).bytes`, without the per-tensor report."""
    return sum(t.bytes(act_bytes) for t in _output_tensors(
        spec, batch, seq, convention, act_bytes, tp, sequence_parallel, recompute, compiled_loss))


def _output_tensors(spec: ModelSpec, batch: int, seq: int, convention: str, act_bytes: float,
                    tp: int, sequence_parallel: bool, recompute: str,
                    compiled_loss: bool = False) -> tuple[SavedTensor, ...]:
    how = replace(_saving(convention, act_bytes, tp, sequence_parallel, recompute),
                  compiled_loss=compiled_loss)
    return build_graph(spec).saved_outside_layers(batch, seq, how)


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
