"""Readers for the architectures people run today: Qwen3(-MoE/-Next/3.5), DeepSeek-V2/V3 (MLA),
Gemma 3, gpt-oss, Llama 4, OLMo 1-3, GLM-4(-MoE), Phi-MoE, Command-R, Granite, StarCoder2, DBRX,
GPT-BigCode, Mamba-1/2. Layer-type patterns, MoE layer rules and defaults follow the matching
transformers 5.x configuration and modeling code (checked in tests/test_verify_transformers.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmsizer.specs.hf_base import _GEMMA_NORMS, ConfigError, _gpt_family, _llama_like, _name, _Reader
from llmsizer.specs.model import (
    LAYER_TYPES,
    LinearAttentionSpec,
    MambaSpec,
    MLASpec,
    ModelSpec,
    MoESpec,
)

# ---------------------------------------------------------------------------------------------
# Newer architectures. Layer-type patterns, MoE layer rules and defaults follow the matching
# transformers 5.x configuration and modeling code (checked against it in
# tests/test_verify_transformers.py).
# ---------------------------------------------------------------------------------------------

def _layer_types(r: _Reader, layers: int, default: Callable[[int], str]) -> tuple[str, ...]:
    """`layer_types` from the file, else the family's default pattern."""
    types = r.cfg.get("layer_types")
    if types is None:
        return tuple(default(i) for i in range(layers))
    if not isinstance(types, list) or len(types) != layers:
        raise ConfigError(f"{r.origin}: layer_types has {len(types) if isinstance(types, list) else types!r} "
                          f"entries; expected one per layer ({layers})")
    bad = [t for t in types if t not in LAYER_TYPES]
    if bad:
        raise ConfigError(f"{r.origin}: layer_types entry {bad[0]!r} is not allowed: one of "
                          + ", ".join(LAYER_TYPES))
    return tuple(types)


def _every_nth_full(n: int) -> Callable[[int], str]:
    """Gemma 3, Cohere 2, OLMo 3: every n-th layer (1-based) full attention, the rest sliding."""
    return lambda i: "full_attention" if (i + 1) % n == 0 else "sliding_attention"


def _qwen3(r: _Reader, name: str | None) -> ModelSpec:
    bias = r.bool("attention_bias", False)
    layers = r.int("num_hidden_layers")
    window = r.cfg.get("sliding_window") if r.bool("use_sliding_window", False) else None
    window_layers = None
    if window:
        start = r.int("max_window_layers", default=28)
        window_layers = tuple(i for i in range(layers) if i >= start)
    return _llama_like(r, name, qkv_bias=bias, out_bias=bias, qk_norm="head",
                       head_dim=r.int("head_dim", default=128), sliding_window=window or None,
                       sliding_window_layers=window_layers, **_qwen_moe(r, layers, shared=False))


def _qwen_moe(r: _Reader, layers: int, shared: bool) -> dict[str, Any]:
    """Qwen MoE layers: sparse unless listed in mlp_only_layers, when num_experts > 0 and
    (index + 1) % decoder_sparse_step == 0."""
    experts = r.count("num_experts", default=0)
    if not experts:
        return {}
    step = r.int("decoder_sparse_step", default=1)
    dense_only = set(r.list_of_ints("mlp_only_layers") or [])
    moe_layers = tuple(i for i in range(layers) if i not in dense_only and (i + 1) % step == 0)
    if not moe_layers:
        return {}
    shared_width = r.count("shared_expert_intermediate_size", default=0) if shared else 0
    return {"moe": MoESpec(
        num_experts=experts,
        top_k=r.int("num_experts_per_tok"),
        expert_ffn_size=r.int("moe_intermediate_size"),
        moe_layers=moe_layers,
        shared_experts=1 if shared_width else 0,
        shared_expert_ffn_size=shared_width,
        shared_expert_gate=bool(shared_width),
        norm_topk_prob=r.bool("norm_topk_prob", False),
    )}


def _qwen3_next(r: _Reader, name: str | None) -> ModelSpec:
    """Qwen3-Next / Qwen3.5: Gated DeltaNet layers with a gated full-attention layer every
    `full_attention_interval` (default 4); MoE with a gated shared expert (or a dense MLP)."""
    layers = r.int("num_hidden_layers")
    interval = r.int("full_attention_interval", default=4)
    types = _layer_types(r, layers, lambda i: "full_attention" if (i + 1) % interval == 0
                         else "linear_attention")
    bias = r.bool("attention_bias", False)
    la = LinearAttentionSpec(
        num_key_heads=r.int("linear_num_key_heads", default=16),
        num_value_heads=r.int("linear_num_value_heads", default=32),
        key_head_dim=r.int("linear_key_head_dim", default=128),
        value_head_dim=r.int("linear_value_head_dim", default=128),
        conv_kernel=r.int("linear_conv_kernel_dim", default=4),
    )
    moe = _qwen_moe(r, layers, shared=True)
    ffn = None
    if "intermediate_size" not in r.cfg and moe and len(moe["moe"].moe_layers) == layers:
        # Every layer is sparse (Qwen3.5-MoE has no dense width): no dense FFN is ever built.
        ffn = moe["moe"].expert_ffn_size
    return _llama_like(r, name, qkv_bias=bias, out_bias=bias, qk_norm="head", ffn_size=ffn,
                       head_dim=r.int("head_dim", default=256), layer_types=types,
                       linear_attention=la, attention_output_gate=True, **moe)


def _deepseek(r: _Reader, name: str | None, v3: bool) -> ModelSpec:
    layers = r.int("num_hidden_layers")
    q_lora = r.cfg.get("q_lora_rank", 1536)
    if q_lora is not None and (not isinstance(q_lora, int) or isinstance(q_lora, bool)
                               or q_lora <= 0):
        raise ConfigError(f"{r.origin}: q_lora_rank={q_lora!r} is not allowed: a positive "
                          "integer or null")
    mla = MLASpec(
        q_lora_rank=q_lora,
        kv_lora_rank=r.int("kv_lora_rank", default=512),
        qk_nope_head_dim=r.int("qk_nope_head_dim", default=128),
        qk_rope_head_dim=r.int("qk_rope_head_dim", default=64),
        v_head_dim=r.int("v_head_dim", default=128),
    )
    experts = r.count("n_routed_experts", default=256 if v3 else 64)
    first_dense = r.count("first_k_dense_replace", default=3 if v3 else 0)
    moe = None
    moe_layers = tuple(range(first_dense, layers))
    if experts and moe_layers:
        shared = r.count("n_shared_experts", default=1 if v3 else 2)
        f_e = r.int("moe_intermediate_size", default=2048 if v3 else 1407)
        moe = MoESpec(
            num_experts=experts,
            top_k=r.int("num_experts_per_tok", default=8 if v3 else 6),
            expert_ffn_size=f_e,
            moe_layers=moe_layers,
            # transformers builds the shared experts as one MLP n_shared·f_e wide
            shared_experts=1 if shared else 0,
            shared_expert_ffn_size=shared * f_e,
            norm_topk_prob=r.bool("norm_topk_prob", v3),
            n_group=r.int("n_group", default=8 if v3 else 1),
            topk_group=r.int("topk_group", default=4 if v3 else 1),
            score_correction_bias=v3,
        )
    bias = r.bool("attention_bias", False)
    heads = r.int("num_attention_heads")
    return _llama_like(r, name, qkv_bias=bias, out_bias=bias, mla=mla, moe=moe,
                       head_dim=mla.qk_head_dim, num_kv_heads=heads,
                       mtp_layers=r.count("num_nextn_predict_layers", default=1 if v3 else 0))


def _deepseek_v2(r: _Reader, name: str | None) -> ModelSpec:
    return _deepseek(r, name, v3=False)


def _deepseek_v3(r: _Reader, name: str | None) -> ModelSpec:
    return _deepseek(r, name, v3=True)


# Gemma3TextConfig's defaults for the fields Google's released configs leave out: the
# google/gemma-3-{4b,12b,27b}-it text_configs omit vocab_size (262,208) and
# max_position_embeddings, the 4b one the head counts too; transformers fills them in from these.
_GEMMA3_TEXT_DEFAULTS = {"vocab_size": 262208, "num_attention_heads": 8, "num_key_value_heads": 4,
                         "max_position_embeddings": 131072}


def _gemma3_text(r: _Reader, name: str | None) -> ModelSpec:
    r = _Reader({**_GEMMA3_TEXT_DEFAULTS, **{k: v for k, v in r.cfg.items() if v is not None}},
                r.origin)
    bias = r.bool("attention_bias", False)
    layers = r.int("num_hidden_layers")
    pattern = r.int("sliding_window_pattern", default=6)
    return _llama_like(
        r, name, tie_default=True, qkv_bias=bias, out_bias=bias, norms_per_layer=4,
        act_key="hidden_activation", act_default="gelu_pytorch_tanh", qk_norm="head",
        head_dim=r.int("head_dim", default=256), norm_placement="sandwich",
        sliding_window=r.int("sliding_window", default=4096),
        layer_types=_layer_types(r, layers, _every_nth_full(pattern)), **_GEMMA_NORMS)


def _gpt_oss(r: _Reader, name: str | None) -> ModelSpec:
    layers = r.int("num_hidden_layers")
    bias = r.bool("attention_bias", True)
    moe = MoESpec(
        num_experts=r.int("num_local_experts", default=128),
        top_k=r.int("num_experts_per_tok", default=4),
        expert_ffn_size=r.int("intermediate_size"),
        moe_layers=tuple(range(layers)),
        router_bias=True,
        expert_bias=True,
        norm_topk_prob=True,
    )
    return _llama_like(
        r, name, qkv_bias=bias, out_bias=bias, head_dim=r.int("head_dim", default=64), moe=moe,
        attention_sinks=True, sliding_window=r.int("sliding_window", default=128),
        layer_types=_layer_types(r, layers, lambda i: "sliding_attention" if i % 2 == 0
                                 else "full_attention"))


def _llama4_text(r: _Reader, name: str | None) -> ModelSpec:
    """Llama 4: MoE layers every `interleave_moe_layer_step` (routed experts of
    intermediate_size plus one shared expert of the same width; dense layers use
    intermediate_size_mlp); chunked attention on the rotary layers, full attention on the
    NoPE layers (every 4th); weightless L2 q/k norm."""
    layers = r.int("num_hidden_layers")
    step = r.int("interleave_moe_layer_step", default=1)
    moe_layers = r.list_of_ints("moe_layers")
    if moe_layers is None:
        moe_layers = list(range(step - 1, layers, step))
    no_rope = r.list_of_ints("no_rope_layers") or [
        int((i + 1) % r.int("no_rope_layer_interval", default=4) != 0) for i in range(layers)]
    if len(no_rope) != layers:
        raise ConfigError(f"{r.origin}: no_rope_layers has {len(no_rope)} entries; expected one "
                          f"per layer ({layers})")
    chunk = r.cfg.get("attention_chunk_size", 8192)
    types = _layer_types(r, layers, lambda i: "chunked_attention" if no_rope[i] and chunk
                         else "full_attention")
    f_e = r.int("intermediate_size")
    moe = MoESpec(num_experts=r.int("num_local_experts", default=16),
                  top_k=r.int("num_experts_per_tok", default=1), expert_ffn_size=f_e,
                  moe_layers=tuple(moe_layers), shared_experts=1,
                  shared_expert_ffn_size=f_e) if moe_layers else None
    bias = r.bool("attention_bias", False)
    return _llama_like(r, name, qkv_bias=bias, out_bias=bias, moe=moe,
                       head_dim=r.int("head_dim", default=128),
                       ffn_size=r.int("intermediate_size_mlp", default=16384),
                       qk_norm="l2" if r.bool("use_qk_norm", True) else "none",
                       layer_types=types, attention_chunk_size=chunk or None)


def _olmo(r: _Reader, name: str | None) -> ModelSpec:
    # OLMo 1: LayerNorms without learnable parameters.
    bias = r.bool("attention_bias", False)
    return _llama_like(r, name, qkv_bias=bias, out_bias=bias, norms_per_layer=0,
                       final_norm=False, norm="layernorm")


def _olmo2(r: _Reader, name: str | None) -> ModelSpec:
    bias = r.bool("attention_bias", False)
    return _llama_like(r, name, qkv_bias=bias, out_bias=bias, qk_norm="full",
                       norm_placement="post")


def _olmo3(r: _Reader, name: str | None) -> ModelSpec:
    bias = r.bool("attention_bias", False)
    layers = r.int("num_hidden_layers")
    return _llama_like(r, name, qkv_bias=bias, out_bias=bias, qk_norm="full",
                       norm_placement="post", sliding_window=r.int("sliding_window", default=4096),
                       layer_types=_layer_types(r, layers, _every_nth_full(4)))


def _glm4(r: _Reader, name: str | None) -> ModelSpec:
    # GLM-4: q/k/v with biases, o without; sandwich norms (4 per layer).
    return _llama_like(r, name, qkv_bias=r.bool("attention_bias", True), out_bias=False,
                       norms_per_layer=4, norm_placement="sandwich",
                       head_dim=r.int("head_dim", default=128))


def _glm4_moe(r: _Reader, name: str | None) -> ModelSpec:
    layers = r.int("num_hidden_layers")
    first_dense = r.count("first_k_dense_replace", default=1)
    experts = r.count("n_routed_experts", default=128)
    moe = None
    if experts and first_dense < layers:
        shared = r.count("n_shared_experts", default=1)
        f_e = r.int("moe_intermediate_size", default=1408)
        moe = MoESpec(num_experts=experts, top_k=r.int("num_experts_per_tok", default=8),
                      expert_ffn_size=f_e, moe_layers=tuple(range(first_dense, layers)),
                      shared_experts=1 if shared else 0, shared_expert_ffn_size=shared * f_e,
                      norm_topk_prob=r.bool("norm_topk_prob", True),
                      n_group=r.int("n_group", default=1), topk_group=r.int("topk_group", default=1),
                      score_correction_bias=True)
    heads = r.int("num_attention_heads")
    head_dim = r.cfg.get("head_dim")
    return _llama_like(r, name, qkv_bias=r.bool("attention_bias", False), out_bias=False,
                       qk_norm="head" if r.bool("use_qk_norm", False) else "none", moe=moe,
                       head_dim=head_dim if head_dim is not None else r.int("hidden_size") // heads,
                       mtp_layers=r.count("num_nextn_predict_layers", default=1))


def _phimoe(r: _Reader, name: str | None) -> ModelSpec:
    layers = r.int("num_hidden_layers")
    bias = r.bool("attention_bias", False)
    moe = MoESpec(num_experts=r.int("num_local_experts", default=16),
                  top_k=r.int("num_experts_per_tok", default=2),
                  expert_ffn_size=r.int("intermediate_size"), moe_layers=tuple(range(layers)))
    return _llama_like(r, name, qkv_bias=bias, out_bias=bias, moe=moe, norm="layernorm",
                       norm_bias=True, lm_head_bias=r.bool("lm_head_bias", False),
                       sliding_window=r.cfg.get("sliding_window") or None)


def _cohere(r: _Reader, name: str | None) -> ModelSpec:
    # Command-R: one LayerNorm (no bias) feeding attention and MLP in parallel; tied embeddings;
    # optional per-head LayerNorms on queries and keys.
    bias = r.bool("attention_bias", False)
    return _llama_like(r, name, tie_default=True, qkv_bias=bias, out_bias=bias, norms_per_layer=1,
                       norm="layernorm", parallel_block=True,
                       qk_norm="head_each" if r.bool("use_qk_norm", False) else "none")


def _cohere2(r: _Reader, name: str | None) -> ModelSpec:
    bias = r.bool("attention_bias", False)
    layers = r.int("num_hidden_layers")
    pattern = r.int("sliding_window_pattern", default=4)
    return _llama_like(r, name, tie_default=True, qkv_bias=bias, out_bias=bias, norms_per_layer=1,
                       norm="layernorm", parallel_block=True,
                       sliding_window=r.int("sliding_window", default=4096),
                       layer_types=_layer_types(r, layers, _every_nth_full(pattern)))


def _granite(r: _Reader, name: str | None) -> ModelSpec:
    bias = r.bool("attention_bias", False)
    return _llama_like(r, name, qkv_bias=bias, out_bias=bias, mlp_bias=r.bool("mlp_bias", False))


def _starcoder2(r: _Reader, name: str | None) -> ModelSpec:
    bias = r.bool("use_bias", True)
    heads = r.int("num_attention_heads")
    return ModelSpec(
        name=_name(r, name), num_layers=r.int("num_hidden_layers"),
        hidden_size=r.int("hidden_size"), num_heads=heads,
        num_kv_heads=r.int("num_key_value_heads", default=heads),
        vocab_size=r.int("vocab_size"), ffn_size=r.int("intermediate_size"), ffn_kind="mlp",
        activation=str(r.opt("hidden_act", "gelu_pytorch_tanh")),
        tie_embeddings=r.bool("tie_word_embeddings", True), position="rotary",
        max_seq_len=r.int("max_position_embeddings", default=4096), norm="layernorm",
        norm_bias=True, qkv_bias=bias, out_bias=bias, mlp_bias=bias,
        sliding_window=r.cfg.get("sliding_window") or None)


def _dbrx(r: _Reader, name: str | None) -> ModelSpec:
    attn = _Reader(r.cfg.get("attn_config") or {}, r.origin + " attn_config")
    ffn = _Reader(r.cfg.get("ffn_config") or {}, r.origin + " ffn_config")
    layers = r.int("n_layers")
    heads = r.int("n_heads")
    f = ffn.int("ffn_hidden_size", default=3584)
    moe = MoESpec(num_experts=ffn.int("moe_num_experts", default=4),
                  top_k=ffn.int("moe_top_k", default=1), expert_ffn_size=f,
                  moe_layers=tuple(range(layers)))
    return ModelSpec(
        name=_name(r, name), num_layers=layers, hidden_size=r.int("d_model"), num_heads=heads,
        num_kv_heads=attn.int("kv_n_heads", default=1), vocab_size=r.int("vocab_size"),
        ffn_size=f, ffn_kind="gated", activation="silu",
        tie_embeddings=r.bool("tie_word_embeddings", False), position="rotary",
        max_seq_len=r.int("max_seq_len", default=2048), norm="layernorm", norm_bias=False,
        moe=moe)


def _gpt_bigcode(r: _Reader, name: str | None) -> ModelSpec:
    mq = r.bool("multi_query", True)
    return _gpt_family(r, name, num_kv_heads=1 if mq else None,
                       tie_embeddings=r.bool("tie_word_embeddings", True), position="learned",
                       max_seq_len=r.int("n_positions", "max_position_embeddings", default=1024),
                       qkv_bias=True, out_bias=True, mlp_bias=True)


def _mamba_like(r: _Reader, name: str | None, mamba: MambaSpec, tie_default: bool,
                **fields: Any) -> ModelSpec:
    layers = r.int("num_hidden_layers", "n_layer")
    hidden = r.int("hidden_size", "d_model")
    return ModelSpec(
        name=_name(r, name), num_layers=layers, hidden_size=hidden, num_heads=1,
        head_dim=hidden, vocab_size=r.int("vocab_size"), ffn_size=0, ffn_kind="mlp",
        activation=str(r.opt("hidden_act", "silu")),
        tie_embeddings=r.bool("tie_word_embeddings", tie_default), position="none",
        max_seq_len=r.int("max_position_embeddings", default=2048), norm="rmsnorm",
        norms_per_layer=1, layer_types=("mamba",) * layers, mamba=mamba, **fields)


def _mamba1(r: _Reader, name: str | None) -> ModelSpec:
    hidden = r.int("hidden_size")
    d_inner = r.int("intermediate_size", default=r.int("expand", default=2) * hidden)
    rank = r.cfg.get("time_step_rank", "auto")
    if rank == "auto":
        rank = -(-hidden // 16)
    if not isinstance(rank, int) or isinstance(rank, bool) or rank <= 0:
        raise ConfigError(f"{r.origin}: time_step_rank={rank!r} is not allowed: a positive "
                          "integer or \"auto\"")
    m = MambaSpec(version=1, d_inner=d_inner, state_size=r.int("state_size", default=16),
                  conv_kernel=r.int("conv_kernel", default=4), dt_rank=rank,
                  conv_bias=r.bool("use_conv_bias", True), proj_bias=r.bool("use_bias", False))
    return _mamba_like(r, name, m, tie_default=True)


def _mamba2(r: _Reader, name: str | None) -> ModelSpec:
    hidden = r.int("hidden_size")
    heads = r.int("num_heads", default=128)
    head_dim = r.int("head_dim", default=64)
    d_inner = r.int("expand", default=2) * hidden
    m = MambaSpec(version=2, d_inner=d_inner, state_size=r.int("state_size", default=128),
                  conv_kernel=r.int("conv_kernel", default=4), num_heads=heads,
                  n_groups=r.int("n_groups", default=8),
                  conv_bias=r.bool("use_conv_bias", True), proj_bias=r.bool("use_bias", False))
    if heads * head_dim != d_inner:
        raise ConfigError(f"{r.origin}: num_heads·head_dim = {heads}·{head_dim} is not allowed: "
                          f"it must equal expand·hidden_size ({d_inner})")
    return _mamba_like(r, name, m, tie_default=False)
