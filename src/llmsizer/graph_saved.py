"""What a training step keeps for backward, per op of the graph (issue 9: the graph is the
single source of every number).

`Op.saved_tensors`, `LayerGraph.saved_tensors` and `ModelGraph.saved_outside_layers` in
llmsizer.graph delegate here; the names below are also importable from llmsizer.graph. Every size
is read from an op's shapes (its widths, heads, top-k, shard), never from the spec's widths, so
GQA, gated FFNs, head_dim ≠ h/a, MLA and MoE flow in from the graph.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from llmsizer.graph import LayerGraph, ModelGraph, Op

# Tensors kept for backward, by element type: "activation" in the run's activation dtype (its
# bytes are the caller's `act_bytes`), fp32 statistics (softmax log-sum-exp, RMSNorm's fp32 copy
# and rsqrt, the loss's log-softmax), int64 token ids and labels, 1-byte dropout masks.
SavedDType = Literal["activation", "fp32", "int64", "mask"]
SAVED_DTYPE_BYTES = {"fp32": 4, "int64": 8, "mask": 1}
# Named activation conventions (what `Saving.convention` takes):
# - "megatron": Megatron-LM GPT layers with dropout (Korthikanti et al. 2022, "Reducing Activation
#   Recomputation in Large Transformer Models", sec. 4, eqs. 1-6): for MHA, a 4h FFN and 2-byte
#   activations exactly s·b·h·(34 + 5·a·s/h) per layer; with a flash kernel the a·s² tensors are
#   replaced by the kernel's fp32 log-sum-exp (Dao et al. 2022).
# - "hf-eager", "hf-sdpa": Hugging Face transformers Llama-style layers (RMSNorm, gated FFN, no
#   dropout) with eager or SDPA attention, as torch.autograd.graph.saved_tensors_hooks measures
#   them (tests/test_verify_activations.py).
ACTIVATION_CONVENTIONS = ("megatron", "hf-eager", "hf-sdpa")
# MLA's latent path: the down-projections, the RMSNorms of their outputs, the up-projections.
_LATENT_DOWN = ("q_a_proj", "kv_a_proj")
_LATENT_NORMS = ("norms.q_a", "norms.kv_a")
_LATENT_UP = ("q_b_proj", "kv_b_proj")
_QK_NORMS = ("norms.q_norm", "norms.k_norm")
# Mixers whose layers follow the megatron convention under every convention (no measured
# transformers convention exists for them yet).
_MIXER_LAYERS = ("linear_attention", "mamba")


@dataclass(frozen=True)
class SavedTensor:
    """One tensor kept for backward (or a few kept together and reported as one) on one device.

    `counts` are its elements per element type before `split`, the divisor tensor or sequence
    parallelism applies (kept apart so that bytes are one exact integer product divided once);
    `formula` writes its bytes in s, b, e (bytes of an activation element) and the width symbols.
    Tensors of one layer with the same non-empty `key` are one storage, read by several ops (the
    normalised input of Q, K and V): the layer keeps it once.
    """

    name: str
    formula: str
    counts: tuple[tuple[SavedDType, int], ...]
    split: int = 1
    key: str = ""

    @property
    def elements(self) -> float:
        return sum(n for _, n in self.counts) / self.split

    def bytes(self, act_bytes: float) -> float:
        return self.unsplit_bytes(act_bytes) / self.split

    def unsplit_bytes(self, act_bytes: float) -> float:
        """Its bytes before `split` divides them: an exact integer for integer `act_bytes`."""
        return sum((act_bytes if d == "activation" else SAVED_DTYPE_BYTES[d]) * n
                   for d, n in self.counts)

    def bytes_of(self, dtype: SavedDType, act_bytes: float) -> float:
        """The bytes of its elements of one element type (the final RMSNorm's normalised output:
        its "activation" part)."""
        per = act_bytes if dtype == "activation" else SAVED_DTYPE_BYTES[dtype]
        return sum(per * n for d, n in self.counts if d == dtype) / self.split


def _saved(name: str, formula: str, count: int, split: int = 1, dtype: SavedDType = "activation",
           key: str = "") -> SavedTensor:
    return SavedTensor(name, formula + _per(split), ((dtype, count),), split, key)


def _per(n: int) -> str:
    return f"/{n}" if n > 1 else ""


@dataclass(frozen=True)
class Saving:
    """How a training step keeps tensors for backward: the convention (ACTIVATION_CONVENTIONS),
    the tensor-parallel degree and whether sequence parallelism splits the tensors outside the
    TP region (Korthikanti et al. 2022 sec. 4.2.2), recomputation ("none", "selective": the
    attention core, "full": all but the layer input), a flash-attention kernel (megatron) and
    whether activations are fp32 (eager attention then keeps one copy of its probabilities)."""

    convention: str = "megatron"
    tp: int = 1
    sequence_parallel: bool = False
    recompute: str = "none"
    flash: bool = False
    fp32_activations: bool = False
    # the cross-entropy under torch.compile: one fused kernel that keeps the logits as they come
    # and each row's max and log-sum-exp, and recomputes the softmax in backward
    compiled_loss: bool = False

    def __post_init__(self) -> None:
        if self.convention not in ACTIVATION_CONVENTIONS:
            raise ValueError(f"activation convention {self.convention!r}: one of "
                             + ", ".join(ACTIVATION_CONVENTIONS))

    @property
    def megatron(self) -> bool:
        return self.convention == "megatron"

    @property
    def replicated_split(self) -> int:
        """Divisor of the tensors outside the tensor-parallel region (norms, residuals)."""
        return self.tp if self.sequence_parallel else 1


# --- per op -----------------------------------------------------------------------------------

def op_saved_tensors(op: Op, batch: int, seq: int, how: Saving,
                     gated: bool = True) -> tuple[SavedTensor, ...]:
    """The tensors this op keeps for backward for `batch` sequences of `seq` tokens on one
    device, under `how` (`gated`: whether the FFN this op belongs to multiplies a gate).

    Linears keep their input (Q/K/V, the FFN's gate and up projections, a mixer's input
    projections share theirs); the attention core keeps queries, keys, values and what its
    softmax needs; FFN projections also keep what the activation function needs; scans and
    convolutions keep their inputs and outputs. The layer's norms and residual masks are the
    layer's (`layer_saved_tensors`); the final norm, the lm_head input and the embedding's
    token ids are counted here, the loss by `outside_saved_tensors`.
    """
    sb, t, rep = seq * batch, how.tp, how.replicated_split
    if op.kind == "attention":
        return _attention_saved(op, batch, seq, how)
    if op.kind in ("conv", "scan"):
        return (_saved(f"{op.name} inputs and outputs",
                       f"e·s·b·({op.in_sym or 'in'} + {op.out_sym or 'out'})",
                       sb * (op.in_features + op.out_features), t),)
    if op.kind == "embedding":
        # transformers keeps the token ids for the embedding's gradient
        return () if how.megatron or op.name != "embed_tokens" else (
            _saved("input ids (int64)", "8·s·b", sb, dtype="int64"),)
    if op.kind == "norm" and op.component == "norms.final":
        if how.megatron:
            return (_saved("final norm input", "e·s·b·h", sb * op.in_features, rep),)
        # RMSNorm in fp32: its fp32 input copy and rsqrt, and the normalised output
        sbh = sb * op.in_features
        if op.unit_offset:
            return (SavedTensor("final RMSNorm (fp32 copy, rsqrt, fp32 output, 1 + w)",
                                "4·s·b·h + 4·s·b + 4·s·b·h + 4·h",
                                (("fp32", sbh), ("fp32", sb), ("fp32", sbh),
                                 ("fp32", op.in_features))),)
        return (SavedTensor("final RMSNorm (fp32 copy, rsqrt, output)",
                            "4·s·b·h + 4·s·b + e·s·b·h",
                            (("fp32", sbh), ("fp32", sb), ("activation", sbh))),)
    if op.kind == "norm" and op.component in _QK_NORMS:
        return _qk_norm_saved(op, sb, how)
    if op.kind == "norm" and op.component in _LATENT_NORMS:
        return _latent_norm_saved(op, sb, how)
    if op.kind != "linear":
        return ()
    if op.component == "lm_head":
        return (_saved("output projection input", "e·s·b·h", sb * op.in_features, rep),) \
            if how.megatron else (_saved("lm_head input", "e·s·b·h", sb * op.in_features),)
    block = op.component.split(".")[0]
    if block == "attention":
        if op.in_sym == "h":  # Q, K, V (MLA: their down-projections) read one input
            name = "QKV projection input" if how.megatron else "Q/K/V projection input"
            shared = _saved(name, "e·s·b·h", sb * op.in_features, rep, key="attention input")
            if op.name in _LATENT_DOWN and how.fp32_activations and not how.megatron:
                # An fp32 model's RMSNorm upcast is a no-op: the norm keeps the down-projection's
                # output itself (kv_a: the rotary key's columns too, one storage).
                width = op.out_sym.replace("+", " + ")
                return shared, _saved(f"{op.name} output (its RMSNorm's fp32 input)",
                                      f"e·s·b·({width})" if "+" in width else f"e·s·b·{width}",
                                      sb * op.out_features, rep)
            return (shared,)
        if op.weights and op.weights[0].shard == "row":
            return (_saved("output projection input", "e·s·b·q", sb * op.in_features, t),)
        if op.name in _LATENT_UP:  # MLA's up-projections keep the normalised latent they read
            return (_saved(f"{op.name} input", f"e·s·b·{op.in_sym}", sb * op.in_features, rep),)
        return ()
    if block == "mixer":
        if op.in_sym == "h":
            return (_saved("mixer input projections' input", "e·s·b·h", sb * op.in_features,
                           key="mixer input"),)
        if op.weights and op.weights[0].shard == "row":
            k, _ = op.rank_dims(t)
            return (_saved(f"{op.name} input", f"e·s·b·{op.in_sym}", sb * k),)
        return ()
    if block in ("mlp", "moe") and op.name in ("gate_proj", "up_proj", "down_proj"):
        return _ffn_saved(op, sb, how, gated)
    return ()


def _ffn_saved(op: Op, sb: int, how: Saving, gated: bool) -> tuple[SavedTensor, ...]:
    """An FFN projection: gate and up keep the FFN input (one storage) and their outputs as
    the activation function needs them; down keeps its input. Expert ops count the top-k
    experts a token passes through; routed and shared experts' tensors of one name are
    reported together (`_ops_saved`)."""
    t = how.tp
    down = op.name == "down_proj"
    width = op.active * (op.in_features if down else op.out_features)
    sym = op.in_sym if down else op.out_sym
    sym = f"k·{sym}" if op.expert_parallel else sym
    inner = sb * width
    if down:
        return (_saved("down projection input", f"e·s·b·{sym}", inner, t),)
    ffn_input = _saved("MLP input" if how.megatron else "gate/up projection input", "e·s·b·h",
                       sb * op.in_features, how.replicated_split, key="ffn input")
    if how.megatron:
        name = ("gate projection output" if op.name == "gate_proj" else
                "up projection output" if gated else "activation input")
        return ffn_input, _saved(name, f"e·s·b·{sym}", inner, t)
    if op.name == "gate_proj":  # SiLU keeps its input; the product keeps SiLU's output
        return (ffn_input, _saved("activation input (gate output)", f"e·s·b·{sym}", inner, t),
                _saved("activation output", f"e·s·b·{sym}", inner, t))
    return ffn_input, _saved("up projection output", f"e·s·b·{sym}", inner, t)


def _attention_saved(op: Op, batch: int, seq: int, how: Saving) -> tuple[SavedTensor, ...]:
    """The attention core (Q·Kᵀ, softmax, ·V).

    megatron (Korthikanti et al. 2022 sec. 4.1): Q and K for the scores, the softmax output,
    its dropout mask (1 byte) and dropout output for ·V, and V; a flash kernel keeps instead
    its fp32 log-sum-exp per row (Dao et al. 2022), selective recomputation drops the a·s²
    tensors. hf-eager: repeat_kv materialises K and V at query heads, the fp32 softmax is kept
    and, in 16-bit models, its cast-back probabilities too. hf-sdpa: Q, K and V at their own
    (GQA) sizes and the fp32 log-sum-exp.
    """
    assert op.heads is not None
    sb, t = seq * batch, how.tp
    a = op.heads
    q, kv = a * op.qk_dim, op.kv_heads * op.qk_dim  # queries, keys
    v, o = op.kv_heads * op.v_dim, a * op.v_dim  # values, attention output
    scores = a * seq * seq * batch
    lse = _saved("softmax log-sum-exp (fp32)" if how.megatron else "log-sum-exp (fp32)",
                 "4·a·s·b", a * sb, t, "fp32")
    if how.megatron:
        out = [_saved("Q and K", "e·s·b·(q + kv)", sb * (q + kv), t)]
        if how.flash:
            out.append(lse)
        elif how.recompute != "selective":
            out += [_saved("softmax output", "e·a·s²·b", scores, t),
                    _saved("attention dropout mask", "a·s²·b", scores, t, "mask"),
                    _saved("attention dropout output", "e·a·s²·b", scores, t)]
        return (*out, _saved("V", "e·s·b·kv", sb * v, t))
    if how.convention == "hf-eager":
        qkv = "3·e·s·b·q" if q == o else "e·s·b·a·(2·d_qk + d_v)"
        out = [_saved("Q, K and V (K/V repeated to query heads)", qkv, sb * (2 * q + o), t)]
        if how.recompute != "selective":
            if op.softcap:  # cap·tanh(scores/cap): tanh keeps its output
                out.append(_saved("soft-capped scores (tanh output)", "e·a·s²·b", scores, t))
            out.append(_saved("softmax output (fp32)", "4·a·s²·b", scores, t, "fp32"))
            if not how.fp32_activations:
                out.append(_saved("attention probabilities (model dtype)", "e·a·s²·b",
                                  scores, t))
        return tuple(out)
    if op.kv_rank:
        # MLA (transformers' DeepseekV2/V3Attention): V is a view of kv_b_proj's output, so the
        # kernel keeps that whole storage (the no-rope keys too), and the query, built by
        # concatenation, gives the kernel an output layout of its own that o_proj's input copies.
        nope = op.qk_dim - (op.latent_dim - op.kv_rank)
        return (_saved("Q", "e·s·b·a·d_qk", sb * q, t),
                _saved("K and V", "e·s·b·a·(d_qk + d_n + d_v)",
                       sb * (kv + a * (nope + op.v_dim)), t),
                _saved("attention output (kernel's copy)", "e·s·b·a·d_v", sb * o, t), lse)
    kv_formula = "2·e·s·b·kv" if kv == v else "e·s·b·(kv + v)"
    return (_saved("Q", "e·s·b·q", sb * q, t), _saved("K and V", kv_formula, sb * (kv + v), t),
            lse)


def _rmsnorm_saved(which: str, rows: int, width: int, sym: str, split: int,
                   unit_offset: bool) -> list[SavedTensor]:
    """What a transformers RMSNorm over `width` features of `rows` rows keeps: its fp32 input
    copy, the fp32 rsqrt per row and the normalised output — in the model's dtype (Llama's
    `weight * x̂.to(dtype)`) or, for Gemma's x̂·(1 + w) in fp32, in fp32 with the 1 + w tensor."""
    out = [_saved(f"{which} RMSNorm fp32 input copy", f"4·s·b·{sym}", rows * width, split, "fp32"),
           _saved(f"{which} RMSNorm fp32 rsqrt", "4·s·b" + ("" if sym == "h" else f"·{sym[:1]}"),
                  rows, split, "fp32")]
    if unit_offset:
        return out + [_saved(f"{which} RMSNorm normalised output (fp32)", f"4·s·b·{sym}",
                             rows * width, split, "fp32"),
                      _saved(f"{which} RMSNorm 1 + w (fp32)", "4·d" if sym != "h" else "4·h",
                             width, 1, "fp32")]
    return out + [_saved(f"{which} RMSNorm normalised output", f"e·s·b·{sym}", rows * width,
                         split)]


def _qk_norm_saved(op: Op, sb: int, how: Saving) -> tuple[SavedTensor, ...]:
    """A query or key norm (Qwen3, Gemma 3, OLMo 2, Cohere): per head (`heads` rows of head_dim
    per token) or over all heads at once, inside the tensor-parallel region. megatron: the
    norm keeps its input (Megatron-Core's q_layernorm/k_layernorm); hf: an RMSNorm's tensors."""
    which = op.name.split("_")[0].upper()
    heads = op.heads or 1
    sym = ("a·d" if which == "Q" else "g·d") if heads > 1 or op.out_sym != "d" else "d"
    if how.megatron:
        return (_saved(f"{which} norm input", f"e·s·b·{sym}", sb * heads * op.in_features,
                       how.tp),)
    return tuple(_rmsnorm_saved(f"{which} norm", sb * heads, op.in_features, sym, how.tp,
                                op.unit_offset))


def _latent_norm_saved(op: Op, sb: int, how: Saving) -> tuple[SavedTensor, ...]:
    """MLA's RMSNorms of the compressed query and KV latents (DeepSeek-V2, arXiv 2405.04434
    sec. 2.1.2). megatron: the norm keeps its input (Megatron-LM's multi_latent_attention.py
    applies q_layernorm / kv_layernorm to the latent); hf: the fp32 upcast and rsqrt of a
    Llama-style RMSNorm and its normalised output (with fp32 activations the upcast is the input
    itself, booked with the down-projection). Replicated ops: split only by sequence parallelism."""
    rep, r, which = how.replicated_split, op.in_features, op.name.split("_")[0]
    if how.megatron:
        return (_saved(f"{which}_a norm input", f"e·s·b·{op.in_sym}", sb * r, rep),)
    copy = () if how.fp32_activations else (
        _saved(f"{which}_a RMSNorm fp32 input copy", f"4·s·b·{op.in_sym}", sb * r, rep, "fp32"),)
    return (*copy, _saved(f"{which}_a RMSNorm fp32 rsqrt", "4·s·b", sb, rep, "fp32"),
            _saved(f"{which}_a RMSNorm normalised output", f"e·s·b·{op.in_sym}", sb * r, rep))


# --- per layer --------------------------------------------------------------------------------

def layer_saved_tensors(layer: LayerGraph, batch: int, seq: int,
                        how: Saving) -> tuple[SavedTensor, ...]:
    """What this layer keeps for backward on one device: its ops' tensors (each storage once)
    and, around them, the layer's own: the norms' inputs and the residual dropout masks
    (megatron), or each RMSNorm's fp32 input copy, fp32 rsqrt and normalised output (hf), for
    every norm of the layer (four in a sandwich layer).
    With full recomputation only the layer input is kept (Korthikanti et al. 2022 sec. 5).
    Layers with a linear-attention or state-space mixer follow the megatron convention."""
    hidden = next(op.in_features for op in layer.ops if op.in_sym == "h")
    sb, rep = seq * batch, how.replicated_split
    if how.recompute == "full":
        return (_saved("layer input", "e·s·b·h", sb * hidden, rep),)
    if how.recompute == "selective-op":
        return _op_sac_saved(layer, batch, seq, how, hidden)
    if layer.layer_type in _MIXER_LAYERS:
        how = replace(how, convention="megatron")
    ffn = [op for op in layer.ops if op.component.split(".")[0] in ("mlp", "moe")]
    mixer = [op for op in layer.ops if op not in ffn and op.component != "norms.layers"]
    gated = any(op.name == "gate_proj" for op in ffn)

    def norm_input(which: str) -> SavedTensor:
        return _saved(f"{which} LayerNorm input", "e·s·b·h", sb * hidden, rep)

    offset = any(op.unit_offset for op in layer.ops if op.component == "norms.layers")

    def rmsnorm(which: str) -> list[SavedTensor]:
        return _rmsnorm_saved(which, sb, hidden, "h", rep, offset)

    def residual_mask(which: str) -> SavedTensor:
        return _saved(f"{which} residual dropout mask", "s·b·h", sb * hidden, rep, "mask")

    # Sandwich norms (Gemma 2 and 3: pre- and post-attention, pre- and post-feedforward
    # RMSNorms, transformers' Gemma2/Gemma3DecoderLayer): the two beyond the pre-norms normalise
    # the attention and the MLP outputs, and keep what any norm keeps.
    norms = next((op.instances for op in layer.ops if op.component == "norms.layers"), 0)
    post = ["post-attention", "post-MLP"][:max(0, norms - 2)] if ffn else []
    saved = [norm_input("attention")] if how.megatron else \
        rmsnorm("attention") + (rmsnorm("MLP") if ffn else []) + \
        [s for which in post for s in rmsnorm(which)]
    saved += _ops_saved(mixer, batch, seq, how, gated)
    if not ffn:
        return tuple(saved)
    if how.megatron:
        saved += [norm_input(w) for w in post[:1]] + [residual_mask("attention"), norm_input("MLP")]
    saved += _ops_saved(ffn, batch, seq, how, gated)
    if how.megatron:
        saved += [norm_input(w) for w in post[1:]] + [residual_mask("MLP")]
    return tuple(saved)


def _op_sac_saved(layer: LayerGraph, batch: int, seq: int, how: Saving,
                  hidden: int) -> tuple[SavedTensor, ...]:
    """Per-op selective activation checkpointing as torchtitan applies it to each block
    (torchtitan models/llama3/parallelize_llama.py, _apply_ac_to_transformer_block, op mode;
    torch.utils.checkpoint.create_selective_checkpoint_contexts): the block's input, and the
    outputs of the ops the policy must save — every odd-numbered aten.mm of the block in forward
    order (the 1st, 3rd, …), the flash/efficient attention kernel (its output and fp32
    log-sum-exp) and the sequence-parallel reduce-scatters. Everything else is recomputed.
    A row-parallel product's output is the partial sum before its reduce-scatter, whole on
    every TP rank; a column-parallel one is split. torchao's float8 linears are aten.mm on a
    float8 tensor subclass (the policy sees the mm before the subclass dispatches it to
    torch._scaled_mm), so FP8 runs keep the same set. Routed experts run as one grouped product
    (torch._grouped_mm), which the policy does not list: recomputed."""
    sb, t, rep = seq * batch, how.tp, how.replicated_split
    saved = [_saved("block input", "e·s·b·h", sb * hidden, rep)]
    mm = 0
    for op in layer.ops:
        # routed experts run one grouped product (torch._grouped_mm), not aten.mm
        if op.kind in ("linear", "router") and op.instances == 1:
            mm += 1
            if mm % 2:
                n = op.rank_dims(t)[1]
                whole, split = (op.out_features, t) if n * t == op.out_features else (n, 1)
                saved.append(_saved(f"{op.name} output (odd matmul)", f"e·s·b·{op.out_sym}",
                                    sb * whole, split))
        elif op.kind == "attention":
            assert op.heads is not None
            saved += [_saved("attention kernel output", "e·s·b·a·d_v",
                             sb * op.heads * op.v_dim, t),
                      _saved("log-sum-exp (fp32)", "4·a·s·b", op.heads * sb, t, "fp32")]
    if how.sequence_parallel and t > 1:
        saved.append(_saved("sequence-parallel reduce-scatter outputs", "2·e·s·b·h",
                            2 * sb * hidden, t))
    return tuple(saved)


def _ops_saved(ops: list[Op], batch: int, seq: int, how: Saving,
               gated: bool) -> list[SavedTensor]:
    """The ops' tensors in order: a keyed storage once; routed and shared experts' tensors of
    one name added together (a token's top-k expert rows and its shared-expert rows)."""
    out: list[SavedTensor] = []
    keys: set[str] = set()
    at: dict[str, int] = {}
    for op in ops:
        for s in op_saved_tensors(op, batch, seq, how, gated):
            if s.key:
                if s.key in keys:
                    continue
                keys.add(s.key)
            elif s.name in at:
                first = out[at[s.name]]
                assert first.split == s.split and len(first.counts) == len(s.counts) == 1
                out[at[s.name]] = replace(first, counts=(
                    (first.counts[0][0], first.counts[0][1] + s.counts[0][1]),))
                continue
            at[s.name] = len(out)
            out.append(s)
    return out


# --- outside the layers -----------------------------------------------------------------------

def outside_saved_tensors(graph: ModelGraph, batch: int, seq: int,
                          how: Saving) -> tuple[SavedTensor, ...]:
    """What is kept for backward outside the layers, on one device of the first and last
    pipeline stages: the embedding side, the head and the loss.

    megatron (Korthikanti et al. 2022 sec. 4.3): the final norm's and the output projection's
    inputs and the fp32 logits of the cross-entropy. hf: the token ids, the rotary cos/sin
    (computed once, shared by all layers; as wide as the rotated part of a head), the final
    RMSNorm, the lm_head input, the fp32 log-softmax of the logits, the shifted labels (with
    b = 1 the shifted slice keeps its padding position) and the loss normaliser.
    """
    sb = seq * batch
    saved = [s for op in graph.embedding for s in op_saved_tensors(op, batch, seq, how)]
    if not how.megatron and graph.spec.embedding_scale:
        saved.append(_saved("embedding scale √h (one element)", "e", 1))
    if not how.megatron:
        width, sym = _rotary_width(graph)
        rope = 0 if how.recompute == "full" else 2 * seq * width
        saved.append(_saved("rotary cos and sin", f"2·s·{sym}·e", rope))
    saved += [s for op in graph.head for s in op_saved_tensors(op, batch, seq, how)]
    vocab_local = graph.head[-1].rank_dims(how.tp)[1]  # the lm_head's vocabulary shard
    if how.compiled_loss:
        # measured under saved_tensors_hooks (tests/test_verify_compiled_loss.py): the logits in
        # the activation dtype, two fp32 values per row, the labels and the normaliser
        loss: tuple[SavedTensor, ...] = (
            _saved("logits (compiled loss: softmax recomputed in backward)",
                   "e·s·b·V" + _per(how.tp), sb * vocab_local),
            _saved("row max and log-sum-exp (fp32)", "2·4·s·b", 2 * sb, dtype="fp32"))
    else:
        loss = (_saved("log-softmax of the logits (fp32)" if not how.megatron else
                       "fp32 logits for the loss", "4·s·b·V" + _per(how.tp),
                       sb * vocab_local, dtype="fp32"),)
    if how.megatron:
        return (*saved, *loss)
    if graph.spec.final_logit_softcap is not None:  # cap·tanh(logits/cap): tanh keeps its output
        saved.append(_saved("soft-capped logits (tanh output)", "e·s·b·V" + _per(how.tp),
                            sb * vocab_local))
    return (*saved, *loss,
            _saved("shifted labels (int64)", "8·s·b", sb if batch > 1 else seq + 1,
                   dtype="int64"),
            _saved("loss normaliser", "4", 1, dtype="fp32"))



def _rotary_width(graph: ModelGraph) -> tuple[int, str]:
    """(width, symbol) of the rotary cos/sin tables: a query/key head (d), or MLA's rotary part
    of it (d_r = qk_rope_head_dim: DeepSeek-V2 sec. 2.1.3, decoupled RoPE); 0 without rotary
    positions or attention."""
    if graph.spec.position != "rotary":
        return 0, "d"
    for layer in graph.layers:
        op = layer.attention
        if op is not None:
            return (op.latent_dim - op.kv_rank, "d_r") if op.kv_rank else (op.qk_dim, "d")
    return 0, "d"
