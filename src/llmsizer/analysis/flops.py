"""FLOPs per op, per pass and per training step, read off the op graph.

Conventions (named, because published numbers differ on them):
- A multiply-add is 2 FLOPs; only matrix products are counted (as `torch.utils.flop_counter`
  does): norms, activations, softmax, rotary and residual adds are left out (under 1 % for any
  model here).
- Attention `dense`: every query meets every key of the context, s·s' pairs, what an unmasked
  kernel computes and what FlopCounterMode counts. `causal`: only the pairs a causal mask keeps
  (about half), with a sliding window where the layer has one; what a causal flash kernel does.
- Backward of a matrix product: 2× its forward (the input and the weight gradients; Kaplan et al.
  2020 sec. 2.1). Attention backward: 2× forward for an eager/"math" implementation (4 products),
  2.5× for flash-style kernels that recompute Q·Kᵀ (5 products).
- Recomputation (Korthikanti et al. 2022): `full` reruns each layer's forward before its backward;
  `selective` reruns only the attention core (Q·Kᵀ, softmax, ·V).
- Model FLOPs (for MFU) = forward + 2× forward, whatever the implementation recomputes; hardware
  FLOPs (for HFU) = what the implementation executes: forward + its backward + recomputation.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from llmsizer.errors import SpecError
from llmsizer.graph import AttentionConvention, LayerGraph, attention_pairs, build_graph
from llmsizer.specs.model import ModelSpec

AttentionBackward = Literal["eager", "flash"]
Recompute = Literal["none", "selective", "full"]
RECOMPUTE = ("none", "selective", "full")
ATTENTION_BACKWARD_FACTOR = {"eager": 2.0, "flash": 2.5}


@dataclass(frozen=True)
class OpFlops:
    where: str  # "layers" | "head" | "embedding"
    layer: int | None
    op: str
    component: str
    forward: int
    backward: int  # what the implementation executes
    recompute: int


def layer_pairs(layer: LayerGraph, seq: int, context: int,
                convention: AttentionConvention) -> int:
    """(query, key) pairs per head and sequence in one layer's attention (its window or chunk)."""
    return attention_pairs(seq, context, layer.sliding_window, convention, layer.chunk)


def forward_ops(spec: ModelSpec, batch: int, seq: int, context: int | None = None,
                convention: AttentionConvention = "dense",
                logits_tokens: int | None = None) -> list[OpFlops]:
    """Forward FLOPs of every op for `batch` sequences of `seq` new tokens over `context`
    positions (default: seq, i.e. a training step or a prefill from scratch). The lm_head runs
    on `logits_tokens` per sequence (default all seq; serving needs only the last)."""
    _check_positive(batch=batch, seq=seq)
    context = seq if context is None else context
    if context < seq:
        raise SpecError("context", context, f"at least seq ({seq})")
    graph = build_graph(spec)
    tokens = batch * seq
    out = []
    for layer in graph.layers:
        pairs = batch * layer_pairs(layer, seq, context, convention) \
            if layer.attention is not None else 0
        for op in layer.ops:
            f = round(op.forward_flops(tokens, pairs))
            out.append(OpFlops("layers", layer.index, op.name, op.component, f, 0, 0))
    head_tokens = batch * (seq if logits_tokens is None else logits_tokens)
    for op in graph.head:
        out.append(OpFlops("head", None, op.name, op.component,
                           round(op.forward_flops(head_tokens)), 0, 0))
    return out


def _check_positive(**values: int) -> None:
    for k, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise SpecError(k, v, "a positive integer")


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one forward+backward over `batch` sequences of `seq` tokens.

    Every count is linear in the number of sequences at a fixed length, so the per-op records are
    built once per (model, length, conventions) for one sequence (`per_sequence`, cached) and
    scaled: a layout search does not rebuild thousands of records per layout.
    """

    batch: int
    seq: int
    per_sequence: tuple[OpFlops, ...]
    per_sequence_totals: tuple[int, int, int]  # forward, backward, recomputation of one sequence
    attention_convention: AttentionConvention
    attention_backward: AttentionBackward
    recompute: Recompute

    @property
    def ops(self) -> tuple[OpFlops, ...]:
        b = self.batch
        return tuple(OpFlops(o.where, o.layer, o.op, o.component, b * o.forward, b * o.backward,
                             b * o.recompute) for o in self.per_sequence)

    @property
    def tokens(self) -> int:
        return self.batch * self.seq

    @property
    def forward(self) -> int:
        return self.batch * self.per_sequence_totals[0]

    @property
    def backward(self) -> int:
        return self.batch * self.per_sequence_totals[1]

    @property
    def recomputation(self) -> int:
        return self.batch * self.per_sequence_totals[2]

    @property
    def model_flops(self) -> int:
        """Forward + backward as the model defines them (3× forward): the numerator of MFU."""
        return 3 * self.forward

    @property
    def hardware_flops(self) -> int:
        """What the implementation executes, recomputation included: the numerator of HFU."""
        return self.forward + self.backward + self.recomputation


@lru_cache(maxsize=1024)
def _per_sequence(spec: ModelSpec, seq: int, recompute: Recompute,
                  attention_convention: AttentionConvention,
                  attention_backward: AttentionBackward
                  ) -> tuple[tuple[OpFlops, ...], tuple[int, int, int]]:
    ops = []
    for o in forward_ops(spec, 1, seq, convention=attention_convention):
        is_attention = o.component == "attention.core"
        factor = ATTENTION_BACKWARD_FACTOR[attention_backward] if is_attention else 2.0
        backward = round(factor * o.forward)
        if o.where != "layers" or recompute == "none":
            again = 0
        elif recompute == "full":
            again = o.forward
        else:  # selective: the attention core only
            again = o.forward if is_attention else 0
        ops.append(OpFlops(o.where, o.layer, o.op, o.component, o.forward, backward, again))
    totals = (sum(o.forward for o in ops), sum(o.backward for o in ops),
              sum(o.recompute for o in ops))
    return tuple(ops), totals


def training_step_flops(spec: ModelSpec, batch: int, seq: int, recompute: Recompute = "none",
                        attention_convention: AttentionConvention = "dense",
                        attention_backward: AttentionBackward = "eager") -> StepFlops:
    if recompute not in RECOMPUTE:
        raise SpecError("recompute", recompute, "one of " + ", ".join(RECOMPUTE))
    if attention_backward not in ATTENTION_BACKWARD_FACTOR:
        raise SpecError("attention_backward", attention_backward, "eager or flash")
    if attention_convention not in ("dense", "causal"):
        raise SpecError("attention_convention", attention_convention, "dense or causal")
    _check_positive(batch=batch, seq=seq)
    ops, totals = _per_sequence(spec, seq, recompute, attention_convention, attention_backward)
    return StepFlops(batch, seq, ops, totals, attention_convention, attention_backward, recompute)
