"""Closed-form approximations from the literature, kept beside the exact counts for comparison.

Each function returns a `Reference`: the value, the formula, and where it comes from. They are
never used to compute llmsizer's own answers (those come from the op graph); they are printed next
to them with their relative error, so a reader sees how far the rule of thumb is off and why.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmsizer.specs.model import ModelSpec

SEED_000 = "seed 000 (大模型相关细节), per-module parameter table"
SEED_001 = "seed 001 (一文探秘LLM应用开发(12)), parameter count section"
SEED_003 = "seed 003 (Transformer 架构定量分析), sec. 2.10"
KAPLAN = "Kaplan et al. 2020, Scaling Laws for Neural Language Models, eq. 2.1 / Table 1"


@dataclass(frozen=True)
class Reference:
    name: str
    formula: str
    substituted: str
    value: float
    source: str
    assumes: str  # what the formula takes for granted that a real model may not do

    def relative_error(self, exact: float) -> float:
        return (self.value - exact) / exact


def params_12Lh2(spec: ModelSpec) -> Reference:
    """Non-embedding parameters ≈ 12·L·h² (4h² attention + 8h² for a 4h-wide 2-matrix MLP)."""
    L, h = spec.num_layers, spec.hidden_size
    return Reference("12·L·h² (non-embedding)", "12·L·h²", f"12·{L}·{h}²", 12 * L * h * h,
                     f"{KAPLAN}; {SEED_001}; {SEED_003}",
                     "MHA, 2-matrix FFN of width 4h, no biases/norms/embeddings")


def params_kaplan(spec: ModelSpec) -> Reference:
    """N ≈ 2·h·L·(2·d_attn + d_ff), Kaplan et al. eq. 2.1 (non-embedding)."""
    L, h, d_attn, f = spec.num_layers, spec.hidden_size, spec.q_dim, spec.ffn_size
    return Reference("2·h·L·(2·d_attn + d_ff) (non-embedding)", "2·h·L·(2·d_attn + d_ff)",
                     f"2·{h}·{L}·(2·{d_attn} + {f})", 2 * h * L * (2 * d_attn + f), KAPLAN,
                     "MHA, 2-matrix FFN, no biases/norms/embeddings")


def params_12Lh2_Vh(spec: ModelSpec) -> Reference:
    """N = 12·L·h² + V·h: seed 003's count for BLOOM (one shared embedding, biases ignored)."""
    L, h, V = spec.num_layers, spec.hidden_size, spec.vocab_size
    return Reference("12·L·h² + V·h", "12·L·h² + V·h", f"12·{L}·{h}² + {V}·{h}",
                     12 * L * h * h + V * h, SEED_003,
                     "MHA, 4h 2-matrix FFN, tied embeddings, no biases/norms")


def params_seed001(spec: ModelSpec) -> Reference:
    """V·h + h² + h + L·(12h² + 13h): seed 001's decoder-only count (biases and 2 LayerNorms per
    layer, an h×h output layer with bias)."""
    L, h, V = spec.num_layers, spec.hidden_size, spec.vocab_size
    return Reference("L·(12h² + 13h) + h² + h + V·h", "L·(12·h² + 13·h) + h² + h + V·h",
                     f"{L}·(12·{h}² + 13·{h}) + {h}² + {h} + {V}·{h}",
                     L * (12 * h * h + 13 * h) + h * h + h + V * h, SEED_001,
                     "MHA with biases, 4h 2-matrix FFN with biases, 2 LayerNorms per layer")


def params_seed001_approx(spec: ModelSpec) -> Reference:
    """(12·L + 1)·h² + V·h: seed 001's simplification (used for its LLaMA table)."""
    L, h, V = spec.num_layers, spec.hidden_size, spec.vocab_size
    return Reference("(12·L + 1)·h² + V·h", "(12·L + 1)·h² + V·h", f"(12·{L} + 1)·{h}² + {V}·{h}",
                     (12 * L + 1) * h * h + V * h, SEED_001,
                     "as 12·L·h², plus an h×h output layer and one V×h embedding")


def params_seed000(spec: ModelSpec) -> Reference:
    """L·(4h² + 4h + 2·h·f + f + h + 4h) + V·h + S·h: seed 000's per-module table (QKV and dense
    weights and biases, two FFN matrices with biases, two LayerNorms, learned positions)."""
    L, h, V, f = spec.num_layers, spec.hidden_size, spec.vocab_size, spec.ffn_size
    S = spec.learned_position_rows or spec.max_seq_len
    per_layer = 4 * h * h + 4 * h + 2 * h * f + f + h + 4 * h
    return Reference("L·(4h² + 2·h·f + f + 9h) + V·h + S·h", "L·(4·h² + 2·h·f + f + 9·h) + V·h + S·h",
                     f"{L}·(4·{h}² + 2·{h}·{f} + {f} + 9·{h}) + {V}·{h} + {S}·{h}",
                     L * per_layer + V * h + S * h, SEED_000,
                     "MHA with biases, 2-matrix FFN of width f with biases, learned positions")


def param_references(spec: ModelSpec) -> list[tuple[Reference, str]]:
    """The references and which exact count each approximates ("total" or "non_embedding")."""
    return [
        (params_12Lh2(spec), "non_embedding"),
        (params_kaplan(spec), "non_embedding"),
        (params_12Lh2_Vh(spec), "total"),
        (params_seed001_approx(spec), "total"),
        (params_seed001(spec), "total"),
        (params_seed000(spec), "total"),
    ]


# ---------------------------------------------------------------------------------------------
# Training FLOPs
# ---------------------------------------------------------------------------------------------

NARAYANAN = ("Narayanan et al. 2021, Efficient Large-Scale Language Model Training on GPU "
             "Clusters Using Megatron-LM, eq. (3); seed 004 (AscendSpeed throughput_calculator)")
PALM = "Chowdhery et al. 2022, PaLM, Appendix B"
KAPLAN_FLOPS = "Kaplan et al. 2020, sec. 2.1 (C ≈ 6·N per token); seeds 001 and 003"


def flops_6NT(n_params: int, tokens: float) -> Reference:
    """Training FLOPs ≈ 6·N·T: 2 per parameter per token forward, 4 backward."""
    return Reference("6·N·T", "6·N·T", f"6·{n_params:,}·{tokens:g}", 6 * n_params * tokens,
                     KAPLAN_FLOPS, "attention's s² term and the lm_head's role ignored")


def flops_8NT(n_params: int, tokens: float) -> Reference:
    """With full recomputation, one more forward: 8·N·T (seed 004's cheat sheet)."""
    return Reference("8·N·T", "8·N·T", f"8·{n_params:,}·{tokens:g}", 8 * n_params * tokens,
                     "seed 004 (AICC cheat sheet, training time); seed 003",
                     "full activation recomputation; attention ignored")


def flops_megatron(spec: ModelSpec, batch: int, seq: int, recompute: bool) -> Reference:
    """24·c·B·s·L·h²·(1 + s/(6h) + V/(16·L·h)), c = 4 with activation recomputation, else 3."""
    L, h, V = spec.num_layers, spec.hidden_size, spec.vocab_size
    c = 4 if recompute else 3
    value = 24 * c * batch * seq * L * h * h * (1 + seq / (6 * h) + V / (16 * L * h))
    return Reference(
        f"Megatron (c={c})", "24·c·B·s·L·h²·(1 + s/(6h) + V/(16·L·h))",
        f"24·{c}·{batch}·{seq}·{L}·{h}²·(1 + {seq}/(6·{h}) + {V}/(16·{L}·{h}))", value,
        NARAYANAN, "MHA, 4h 2-matrix FFN, dense attention, untied output layer")


def flops_seed001(spec: ModelSpec, batch: int, seq: int) -> Reference:
    """L·(24·b·s·h² + 4·b·s²·h) + 4·b·s·h·V: seed 001's per-iteration formula. Its terms are those
    of one forward pass (24bsh² = 2·12h² per token), so it is compared with the forward."""
    L, h, V, b, s = spec.num_layers, spec.hidden_size, spec.vocab_size, batch, seq
    value = L * (24 * b * s * h * h + 4 * b * s * s * h) + 4 * b * s * h * V
    return Reference("L·(24bsh² + 4bs²h) + 4bshV", "L·(24·b·s·h² + 4·b·s²·h) + 4·b·s·h·V",
                     f"{L}·(24·{b}·{s}·{h}² + 4·{b}·{s}²·{h}) + 4·{b}·{s}·{h}·{V}", value,
                     "seed 001 (训练计算量)", "MHA, 4h FFN, dense attention; forward only")


def flops_palm(spec: ModelSpec, n_params: int, tokens: float, seq: int) -> Reference:
    """(6·N + 12·L·H·Q·T) per token: PaLM's model FLOPs with (non-causal) attention."""
    L, a, d = spec.num_layers, spec.num_heads, spec.head_size
    per_token = 6 * n_params + 12 * L * a * d * seq
    return Reference("6·N + 12·L·H·Q·T per token", "(6·N + 12·L·H·Q·T)·tokens",
                     f"(6·{n_params:,} + 12·{L}·{a}·{d}·{seq})·{tokens:g}", per_token * tokens,
                     PALM, "dense (unmasked) attention; N includes embeddings")


# ---------------------------------------------------------------------------------------------
# Training memory
# ---------------------------------------------------------------------------------------------

ZERO_PAPER = "Rajbhandari et al. 2020, ZeRO, sec. 5.1 and Figure 1"
DEEPSPEED_EST = ("DeepSpeed docs, Memory Requirements: estimate_zero2/zero3_model_states_mem_needs"
                 " (GPU side)")
KORTHIKANTI = "Korthikanti et al. 2022, Reducing Activation Recomputation, eqs. (1)-(6)"


def zero_model_states(psi: float, n_d: int, stage: int, k: float = 12) -> Reference:
    """Per-device model states: (2 + 2 + K)·Ψ sharded by stage over N_d ranks."""
    if stage == 0:
        value, formula = (4 + k) * psi, "(2 + 2 + K)·Ψ"
    elif stage == 1:
        value, formula = 4 * psi + k * psi / n_d, "2Ψ + 2Ψ + K·Ψ/N_d"
    elif stage == 2:
        value, formula = 2 * psi + (2 + k) * psi / n_d, "2Ψ + (2 + K)·Ψ/N_d"
    else:
        value, formula = (4 + k) * psi / n_d, "(2 + 2 + K)·Ψ/N_d"
    sub = formula.replace("Ψ", f"·{psi:,.0f}").replace("N_d", str(n_d)).replace("K", f"{k:g}")
    return Reference(f"ZeRO-{stage} model states", formula, sub, value, ZERO_PAPER,
                     "fp16/bf16 weights and gradients, K bytes of optimizer state per parameter")


def deepspeed_estimate(psi: float, largest_layer: float, gpus: int, stage: int,
                       offload_optimizer: bool, offload_params: bool) -> Reference | None:
    """DeepSpeed's own estimators of GPU memory for model states (no activations)."""
    if stage == 3:
        if offload_params:
            value, formula = 4 * largest_layer, "4·largest_layer"
        elif offload_optimizer:
            value, formula = 4 * largest_layer + 2 * psi / gpus, "4·largest_layer + 2Ψ/N"
        else:
            value, formula = 4 * largest_layer + 18 * psi / gpus, "4·largest_layer + 18Ψ/N"
    elif stage in (1, 2):
        if offload_optimizer:
            value, formula = 2 * psi, "2Ψ"
        else:
            value, formula = 4 * psi + 16 * psi / gpus, "4Ψ + 16Ψ/N"
    else:
        return None
    return Reference(f"DeepSpeed ZeRO-{stage} estimator", formula, f"Ψ={psi:,.0f}, N={gpus}",
                     value, DEEPSPEED_EST, "model states only; fp16 + Adam; 4 bytes for the "
                     "largest layer's gathered weights")


def korthikanti_activations(layers: int, per_layer_bytes: float, formula: str) -> Reference:
    return Reference("Korthikanti activations", f"L·{formula}", f"{layers}·{per_layer_bytes:,.0f}",
                     layers * per_layer_bytes, KORTHIKANTI,
                     "GPT layers (MHA, 4h FFN, LayerNorm, dropout), 2-byte activations")


def bytes_20P(psi: float) -> Reference:
    """Seed 004's rule of thumb: training takes 20 bytes per parameter (S_train = 20P GB)."""
    return Reference("20·P", "20·P", f"20·{psi:,.0f}", 20 * psi,
                     "seed 004 (AICC cheat sheet); seed 003 sec. 2.15",
                     "fp16 + fp32 copies of weights and gradients, Adam; no sharding, no "
                     "activations")
