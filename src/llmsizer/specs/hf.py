"""ModelSpec from Hugging Face `config.json` files.

One small reader per `model_type`. Each mirrors how the matching `transformers` modeling code
builds its modules (which projections carry biases, how many norms a block has, what a missing
field defaults to), because the parameter count is checked against exactly that code in the tests
(tests/test_verify_transformers.py). Optional fields missing from a file take the defaults of the
`transformers` (5.x) configuration class of that type; the core sizes are required, so that a
truncated file is an error, not a silently different model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmsizer.errors import LlmsizerError, SpecError
from llmsizer.specs.model import (
    LAYER_TYPES,
    LinearAttentionSpec,
    MambaSpec,
    MLASpec,
    ModelSpec,
    MoESpec,
)

Config = dict[str, Any]


class ConfigError(LlmsizerError):
    """A config.json that cannot be read or lacks a field."""


def load_config(source: str | os.PathLike[str] | Config) -> tuple[Config, str]:
    """Return (config dict, where it came from) for a dict, a config.json path or its folder.

    Files go through llmsizer.files (size, encoding, nesting and schema checks)."""
    if isinstance(source, dict):
        return source, "dict"
    from llmsizer.files import read_model_config

    return read_model_config(source, ConfigError)


class _Reader:
    """Field access that names the file and the field in its errors."""

    def __init__(self, cfg: Config, origin: str):
        self.cfg = cfg
        self.origin = origin

    def req(self, *keys: str) -> Any:
        for k in keys:
            if self.cfg.get(k) is not None:
                return self.cfg[k]
        raise ConfigError(f"{self.origin}: missing field {keys[0]!r} "
                          f"(model_type {self.cfg.get('model_type')!r} needs it)")

    def opt(self, key: str, default: Any) -> Any:
        v = self.cfg.get(key)
        return default if v is None else v

    def bool(self, key: str, default: bool) -> bool:
        """A JSON boolean (a string such as "false" would silently read as true)."""
        v = self.cfg.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise ConfigError(f"{self.origin}: {key}={v!r} is not allowed: true or false "
                              "(a JSON boolean)")
        return v

    def list_of_ints(self, key: str) -> list[int] | None:
        v = self.cfg.get(key)
        if v is None:
            return None
        if not isinstance(v, list) or any(not isinstance(x, int) or isinstance(x, bool)
                                          for x in v):
            raise ConfigError(f"{self.origin}: {key}={v!r} is not allowed: a list of integers")
        return v

    def int(self, *keys: str, default: int | None = None) -> int:
        v = self.req(*keys) if default is None else self.opt(keys[0], default)
        if not isinstance(v, int) or isinstance(v, bool):
            raise ConfigError(f"{self.origin}: {keys[0]}={v!r} is not allowed: an integer")
        return v

    def count(self, *keys: str, default: int | None = None) -> int:
        """An integer that must be 0 or more (expert counts, ranks)."""
        v = self.int(*keys, default=default)
        if v < 0:
            raise ConfigError(f"{self.origin}: {keys[0]}={v!r} is not allowed: 0 or more")
        return v


def _name(r: _Reader, name: str | None) -> str:
    if name:
        return name
    return str(r.cfg.get("_name_or_path") or r.cfg.get("name") or r.cfg.get("model_type"))


def _gated_act(r: _Reader, key: str = "hidden_act", default: str = "silu") -> str:
    return str(r.opt(key, default))


def _llama_like(r: _Reader, name: str | None, *, vocab_default: int | None = None,
                tie_default: bool = False, qkv_bias: bool = False, out_bias: bool = False,
                mlp_bias: bool = False, norms_per_layer: int = 2, act_key: str = "hidden_act",
                act_default: str = "silu", head_dim: int | None = None,
                ffn_size: int | None = None, num_kv_heads: int | None = None,
                norm: str = "rmsnorm", **extra: Any) -> ModelSpec:
    heads = r.int("num_attention_heads")
    if head_dim is None:
        raw = r.cfg.get("head_dim")
        head_dim = r.int("head_dim") if raw is not None else None
    return ModelSpec(
        name=_name(r, name),
        num_layers=r.int("num_hidden_layers"),
        hidden_size=r.int("hidden_size"),
        num_heads=heads,
        num_kv_heads=num_kv_heads or r.int("num_key_value_heads", default=heads),
        head_dim=head_dim,
        ffn_size=ffn_size if ffn_size is not None else r.int("intermediate_size"),
        vocab_size=r.int("vocab_size") if vocab_default is None else r.int("vocab_size",
                                                                            default=vocab_default),
        ffn_kind="gated",
        activation=_gated_act(r, act_key, act_default),
        tie_embeddings=r.bool("tie_word_embeddings", tie_default),
        position="rotary",
        max_seq_len=r.int("max_position_embeddings", default=2048),
        norm=norm,  # type: ignore[arg-type]
        norms_per_layer=norms_per_layer,
        qkv_bias=qkv_bias,
        out_bias=out_bias,
        mlp_bias=mlp_bias,
        **extra,
    )


def _llama(r: _Reader, name: str | None) -> ModelSpec:
    bias = r.bool("attention_bias", False)
    return _llama_like(r, name, qkv_bias=bias, out_bias=bias, mlp_bias=r.bool("mlp_bias", False))


def _mistral(r: _Reader, name: str | None) -> ModelSpec:
    return _llama_like(r, name, sliding_window=r.cfg.get("sliding_window") or None)


def _qwen2(r: _Reader, name: str | None) -> ModelSpec:
    window = r.cfg.get("sliding_window") if r.bool("use_sliding_window", False) else None
    layers = r.int("num_hidden_layers")
    window_layers = None
    if window:
        # transformers: layers at index >= max_window_layers use sliding attention.
        start = r.int("max_window_layers", default=28)
        window_layers = tuple(i for i in range(layers) if i >= start)
    return _llama_like(r, name, qkv_bias=True, sliding_window=window or None,
                       sliding_window_layers=window_layers)


def _mixtral(r: _Reader, name: str | None) -> ModelSpec:
    layers = r.int("num_hidden_layers")
    moe = MoESpec(
        num_experts=r.int("num_local_experts", default=8),
        top_k=r.int("num_experts_per_tok", default=2),
        expert_ffn_size=r.int("intermediate_size"),
        moe_layers=tuple(range(layers)),
    )
    return _llama_like(r, name, moe=moe, sliding_window=r.cfg.get("sliding_window") or None)


def _qwen2_moe(r: _Reader, name: str | None) -> ModelSpec:
    layers = r.int("num_hidden_layers")
    experts = r.count("num_experts", default=60)
    step = r.int("decoder_sparse_step", default=1)
    dense_only = set(r.list_of_ints("mlp_only_layers") or [])
    # transformers: a layer is sparse unless listed in mlp_only_layers, when
    # num_experts > 0 and (index + 1) % decoder_sparse_step == 0.
    moe_layers = tuple(i for i in range(layers)
                       if i not in dense_only and experts > 0 and (i + 1) % step == 0)
    shared = r.int("shared_expert_intermediate_size", default=5632)
    moe = MoESpec(
        num_experts=experts,
        top_k=r.int("num_experts_per_tok", default=4),
        expert_ffn_size=r.int("moe_intermediate_size", default=1408),
        moe_layers=moe_layers,
        shared_experts=1 if shared else 0,
        shared_expert_ffn_size=shared,
        shared_expert_gate=bool(shared),
    ) if moe_layers else None
    qkv_bias = r.bool("qkv_bias", True)
    return _llama_like(r, name, qkv_bias=qkv_bias, moe=moe)


def _gemma(r: _Reader, name: str | None) -> ModelSpec:
    bias = r.bool("attention_bias", False)
    return _llama_like(r, name, tie_default=True, qkv_bias=bias, out_bias=bias,
                       act_key="hidden_activation" if "hidden_activation" in r.cfg else "hidden_act",
                       act_default="gelu_pytorch_tanh")


def _gemma2(r: _Reader, name: str | None) -> ModelSpec:
    bias = r.bool("attention_bias", False)
    layers = r.int("num_hidden_layers")
    types = r.cfg.get("layer_types") or [
        "sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(layers)]
    window = r.opt("sliding_window", 4096)
    return _llama_like(
        r, name, tie_default=True, qkv_bias=bias, out_bias=bias, norms_per_layer=4,
        act_key="hidden_activation", act_default="gelu_pytorch_tanh",
        sliding_window=window,
        sliding_window_layers=tuple(i for i, t in enumerate(types) if t == "sliding_attention"),
    )


def _phi3(r: _Reader, name: str | None) -> ModelSpec:
    return _llama_like(r, name, sliding_window=r.cfg.get("sliding_window") or None)


def _gpt_family(r: _Reader, name: str | None, **fields: Any) -> ModelSpec:
    """GPT-2-style configs (n_embd, n_layer, n_head, n_inner): a 2-matrix LayerNorm model;
    `fields` says what the family member changes."""
    hidden = r.int("n_embd", "hidden_size")
    inner = r.cfg.get("n_inner")
    return ModelSpec(
        name=_name(r, name),
        num_layers=r.int("n_layer", "num_hidden_layers"),
        hidden_size=hidden,
        num_heads=r.int("n_head", "num_attention_heads"),
        vocab_size=r.int("vocab_size"),
        ffn_size=inner if inner is not None else 4 * hidden,
        ffn_kind="mlp",
        activation=str(r.opt("activation_function", "gelu_new")),
        norm="layernorm",
        norm_bias=True,
        **fields,
    )


def _gpt2(r: _Reader, name: str | None) -> ModelSpec:
    return _gpt_family(r, name, tie_embeddings=r.bool("tie_word_embeddings", True),
                       position="learned",
                       max_seq_len=r.int("n_positions", "max_position_embeddings"),
                       qkv_bias=True, out_bias=True, mlp_bias=True)


def _gpt_neox(r: _Reader, name: str | None) -> ModelSpec:
    bias = r.bool("attention_bias", True)
    return ModelSpec(
        name=_name(r, name),
        num_layers=r.int("num_hidden_layers"),
        hidden_size=r.int("hidden_size"),
        num_heads=r.int("num_attention_heads"),
        vocab_size=r.int("vocab_size"),
        ffn_size=r.int("intermediate_size"),
        ffn_kind="mlp",
        activation=str(r.opt("hidden_act", "gelu")),
        tie_embeddings=r.bool("tie_word_embeddings", False),
        position="rotary",
        max_seq_len=r.int("max_position_embeddings", default=2048),
        norm="layernorm",
        norm_bias=True,
        qkv_bias=bias,
        out_bias=bias,
        mlp_bias=True,
        parallel_block=r.bool("use_parallel_residual", True),
    )


def _gptj(r: _Reader, name: str | None) -> ModelSpec:
    # transformers GPTJBlock: one LayerNorm feeding attention and MLP in parallel; q/k/v/out
    # without biases, fc_in/fc_out with; an untied lm_head with a bias.
    return _gpt_family(r, name, tie_embeddings=r.bool("tie_word_embeddings", False),
                       position="rotary",
                       max_seq_len=r.int("n_positions", "max_position_embeddings", default=2048),
                       norms_per_layer=1, qkv_bias=False, out_bias=False, mlp_bias=True,
                       lm_head_bias=True, parallel_block=True)


def _bloom(r: _Reader, name: str | None) -> ModelSpec:
    hidden = r.int("n_embed", "hidden_size")
    return ModelSpec(
        name=_name(r, name),
        num_layers=r.int("n_layer", "num_hidden_layers"),
        hidden_size=hidden,
        num_heads=r.int("n_head", "num_attention_heads"),
        vocab_size=r.int("vocab_size"),
        ffn_size=4 * hidden,
        ffn_kind="mlp",
        activation="gelu",
        tie_embeddings=r.bool("tie_word_embeddings", True),
        position="alibi",
        max_seq_len=r.int("seq_length", default=2048),
        norm="layernorm",
        norm_bias=True,
        embedding_norm=True,
        qkv_bias=True,
        out_bias=True,
        mlp_bias=True,
    )


def _falcon(r: _Reader, name: str | None) -> ModelSpec:
    hidden = r.int("hidden_size")
    heads = r.int("num_attention_heads", "n_head")
    new_arch = r.bool("new_decoder_architecture", False)
    multi_query = r.bool("multi_query", True)
    # transformers FalconAttention: the new architecture has num_kv_heads K/V heads; the old one
    # is multi-query (1 K/V head) or plain multi-head (its fused QKV is 3·hidden wide).
    if new_arch:
        kv = r.int("num_kv_heads", "n_head_kv", default=heads)
    else:
        kv = 1 if multi_query else heads
    parallel = r.bool("parallel_attn", True)
    n_ln = r.cfg.get("num_ln_in_parallel_attn")
    if n_ln is None and new_arch:
        n_ln = 2
    norms = 2 if (not parallel or n_ln == 2) else 1
    bias = r.bool("bias", False)
    alibi = r.bool("alibi", False)
    return ModelSpec(
        name=_name(r, name),
        num_layers=r.int("num_hidden_layers", "n_layer"),
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=kv,
        vocab_size=r.int("vocab_size"),
        ffn_size=r.int("ffn_hidden_size", default=4 * hidden),
        ffn_kind="mlp",
        activation="gelu",
        tie_embeddings=r.bool("tie_word_embeddings", True),
        position="alibi" if alibi else "rotary",
        max_seq_len=r.int("max_position_embeddings", default=2048),
        norm="layernorm",
        norm_bias=True,
        norms_per_layer=norms,
        qkv_bias=bias,
        out_bias=bias,
        mlp_bias=bias,
        parallel_block=parallel,
    )


def _opt(r: _Reader, name: str | None) -> ModelSpec:
    hidden = r.int("hidden_size")
    proj = r.int("word_embed_proj_dim", default=hidden)
    bias = r.bool("enable_bias", True)
    pre_ln = r.bool("do_layer_norm_before", True)
    affine = r.bool("layer_norm_elementwise_affine", True)
    max_pos = r.int("max_position_embeddings", default=2048)
    return ModelSpec(
        name=_name(r, name),
        num_layers=r.int("num_hidden_layers"),
        hidden_size=hidden,
        num_heads=r.int("num_attention_heads"),
        vocab_size=r.int("vocab_size"),
        ffn_size=r.int("ffn_dim"),
        ffn_kind="mlp",
        activation=str(r.opt("activation_function", "relu")),
        tie_embeddings=r.bool("tie_word_embeddings", True),
        position="learned",
        max_seq_len=max_pos,
        # OPTLearnedPositionalEmbedding keeps 2 extra rows (an offset kept from fairseq).
        learned_position_rows=max_pos + 2,
        norm="layernorm",
        norm_bias=affine,
        norms_per_layer=2 if affine else 0,
        final_norm=affine and pre_ln and not r.bool("_remove_final_layer_norm", False),
        qkv_bias=bias,
        out_bias=bias,
        mlp_bias=bias,
        embed_proj_dim=proj if proj != hidden else None,
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
    return _llama_like(r, name, qkv_bias=bias, out_bias=bias, qk_norm="head",
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


def _gemma3_text(r: _Reader, name: str | None) -> ModelSpec:
    bias = r.bool("attention_bias", False)
    layers = r.int("num_hidden_layers")
    pattern = r.int("sliding_window_pattern", default=6)
    return _llama_like(
        r, name, tie_default=True, qkv_bias=bias, out_bias=bias, norms_per_layer=4,
        act_key="hidden_activation", act_default="gelu_pytorch_tanh", qk_norm="head",
        head_dim=r.int("head_dim", default=256), norm_placement="sandwich",
        sliding_window=r.int("sliding_window", default=4096),
        layer_types=_layer_types(r, layers, _every_nth_full(pattern)))


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


READERS: dict[str, Callable[[_Reader, str | None], ModelSpec]] = {
    "llama": _llama,
    "mistral": _mistral,
    "mixtral": _mixtral,
    "qwen2": _qwen2,
    "qwen2_moe": _qwen2_moe,
    "gemma": _gemma,
    "gemma2": _gemma2,
    "gpt2": _gpt2,
    "gpt_neox": _gpt_neox,
    "gptj": _gptj,
    "bloom": _bloom,
    "falcon": _falcon,
    "opt": _opt,
    "phi3": _phi3,
    "qwen3": _qwen3,
    "qwen3_moe": _qwen3,
    "qwen3_next": _qwen3_next,
    "qwen3_5_text": _qwen3_next,
    "qwen3_5_moe_text": _qwen3_next,
    "deepseek_v2": _deepseek_v2,
    "deepseek_v3": _deepseek_v3,
    "gemma3_text": _gemma3_text,
    "gpt_oss": _gpt_oss,
    "llama4_text": _llama4_text,
    "olmo": _olmo,
    "olmo2": _olmo2,
    "olmo3": _olmo3,
    "glm4": _glm4,
    "glm4_moe": _glm4_moe,
    "phimoe": _phimoe,
    "cohere": _cohere,
    "cohere2": _cohere2,
    "granite": _granite,
    "starcoder2": _starcoder2,
    "dbrx": _dbrx,
    "gpt_bigcode": _gpt_bigcode,
    "mamba": _mamba1,
    "falcon_mamba": _mamba1,
    "mamba2": _mamba2,
}

# Multimodal wrappers: the language model's config sits under `text_config`; llmsizer counts the
# language model and says what it leaves out.
WRAPPERS: dict[str, tuple[str, str]] = {
    "gemma3": ("gemma3_text", "the SigLIP vision tower and multimodal projector"),
    "llama4": ("llama4_text", "the vision encoder and multimodal projector"),
    "mistral3": ("mistral", "the Pixtral vision encoder and multimodal projector"),
    "qwen3_5": ("qwen3_5_text", "the vision encoder"),
    "qwen3_5_moe": ("qwen3_5_moe_text", "the vision encoder"),
}


def supported_model_types() -> list[str]:
    return sorted(set(READERS) | set(WRAPPERS))


def spec_from_hf_config(source: str | os.PathLike[str] | Config, name: str | None = None) -> ModelSpec:
    cfg, origin = load_config(source)
    model_type = cfg.get("model_type")
    if model_type is None:
        raise ConfigError(f"{origin}: missing field 'model_type' "
                          f"(supported: {', '.join(supported_model_types())})")
    excluded = None
    if model_type in WRAPPERS and isinstance(cfg.get("text_config"), dict):
        inner_type, excluded = WRAPPERS[str(model_type)]
        text = dict(cfg["text_config"])
        text.setdefault("model_type", inner_type)
        # Some wrappers keep tie_word_embeddings at the top level only.
        if "tie_word_embeddings" in cfg and "tie_word_embeddings" not in text:
            text["tie_word_embeddings"] = cfg["tie_word_embeddings"]
        if name is None:
            name = str(cfg.get("_name_or_path") or cfg.get("name") or model_type)
        cfg, origin, model_type = text, f"{origin} text_config", text["model_type"]
    reader = READERS.get(str(model_type))
    if reader is None:
        # Only a spelling of a supported type (case, '-' for '_') is suggested: a different
        # architecture with a similar name (qwen3 vs qwen2) would be silently wrong.
        key = str(model_type).strip().lower().replace("-", "_")
        hint = f"did you mean {key!r}?" if key in READERS else None
        raise SpecError("model_type", model_type,
                        "one of " + ", ".join(supported_model_types())
                        + " (a different architecture cannot be read as one of these)", hint)
    spec = reader(_Reader(cfg, origin), name)
    if excluded:
        spec.extras["excluded"] = f"{excluded} (not counted: language model only)"
    return spec
