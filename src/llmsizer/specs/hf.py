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
from llmsizer.specs.model import ModelSpec, MoESpec

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

    def int(self, *keys: str, default: int | None = None) -> int:
        v = self.req(*keys) if default is None else self.opt(keys[0], default)
        if not isinstance(v, int) or isinstance(v, bool):
            raise SpecError(keys[0], v, f"an integer in {self.origin}")
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
                act_default: str = "silu", **extra: Any) -> ModelSpec:
    heads = r.int("num_attention_heads")
    head_dim = r.cfg.get("head_dim")
    return ModelSpec(
        name=_name(r, name),
        num_layers=r.int("num_hidden_layers"),
        hidden_size=r.int("hidden_size"),
        num_heads=heads,
        num_kv_heads=r.int("num_key_value_heads", default=heads),
        head_dim=head_dim if head_dim is not None else None,
        ffn_size=r.int("intermediate_size"),
        vocab_size=r.int("vocab_size") if vocab_default is None else r.int("vocab_size",
                                                                            default=vocab_default),
        ffn_kind="gated",
        activation=_gated_act(r, act_key, act_default),
        tie_embeddings=bool(r.opt("tie_word_embeddings", tie_default)),
        position="rotary",
        max_seq_len=r.int("max_position_embeddings", default=2048),
        norm="rmsnorm",
        norms_per_layer=norms_per_layer,
        qkv_bias=qkv_bias,
        out_bias=out_bias,
        mlp_bias=mlp_bias,
        **extra,
    )


def _llama(r: _Reader, name: str | None) -> ModelSpec:
    bias = bool(r.opt("attention_bias", False))
    return _llama_like(r, name, qkv_bias=bias, out_bias=bias, mlp_bias=bool(r.opt("mlp_bias", False)))


def _mistral(r: _Reader, name: str | None) -> ModelSpec:
    return _llama_like(r, name, sliding_window=r.cfg.get("sliding_window") or None)


def _qwen2(r: _Reader, name: str | None) -> ModelSpec:
    window = r.cfg.get("sliding_window") if r.opt("use_sliding_window", False) else None
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
    experts = r.int("num_experts", default=60)
    step = r.int("decoder_sparse_step", default=1)
    dense_only = set(r.opt("mlp_only_layers", []))
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
    qkv_bias = bool(r.opt("qkv_bias", True))
    return _llama_like(r, name, qkv_bias=qkv_bias, moe=moe)


def _gemma(r: _Reader, name: str | None) -> ModelSpec:
    bias = bool(r.opt("attention_bias", False))
    return _llama_like(r, name, tie_default=True, qkv_bias=bias, out_bias=bias,
                       act_key="hidden_activation" if "hidden_activation" in r.cfg else "hidden_act",
                       act_default="gelu_pytorch_tanh")


def _gemma2(r: _Reader, name: str | None) -> ModelSpec:
    bias = bool(r.opt("attention_bias", False))
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
    return _gpt_family(r, name, tie_embeddings=bool(r.opt("tie_word_embeddings", True)),
                       position="learned",
                       max_seq_len=r.int("n_positions", "max_position_embeddings"),
                       qkv_bias=True, out_bias=True, mlp_bias=True)


def _gpt_neox(r: _Reader, name: str | None) -> ModelSpec:
    bias = bool(r.opt("attention_bias", True))
    return ModelSpec(
        name=_name(r, name),
        num_layers=r.int("num_hidden_layers"),
        hidden_size=r.int("hidden_size"),
        num_heads=r.int("num_attention_heads"),
        vocab_size=r.int("vocab_size"),
        ffn_size=r.int("intermediate_size"),
        ffn_kind="mlp",
        activation=str(r.opt("hidden_act", "gelu")),
        tie_embeddings=bool(r.opt("tie_word_embeddings", False)),
        position="rotary",
        max_seq_len=r.int("max_position_embeddings", default=2048),
        norm="layernorm",
        norm_bias=True,
        qkv_bias=bias,
        out_bias=bias,
        mlp_bias=True,
        parallel_block=bool(r.opt("use_parallel_residual", True)),
    )


def _gptj(r: _Reader, name: str | None) -> ModelSpec:
    # transformers GPTJBlock: one LayerNorm feeding attention and MLP in parallel; q/k/v/out
    # without biases, fc_in/fc_out with; an untied lm_head with a bias.
    return _gpt_family(r, name, tie_embeddings=bool(r.opt("tie_word_embeddings", False)),
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
        tie_embeddings=bool(r.opt("tie_word_embeddings", True)),
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
    new_arch = bool(r.opt("new_decoder_architecture", False))
    multi_query = bool(r.opt("multi_query", True))
    # transformers FalconAttention: the new architecture has num_kv_heads K/V heads; the old one
    # is multi-query (1 K/V head) or plain multi-head (its fused QKV is 3·hidden wide).
    if new_arch:
        kv = r.int("num_kv_heads", "n_head_kv", default=heads)
    else:
        kv = 1 if multi_query else heads
    parallel = bool(r.opt("parallel_attn", True))
    n_ln = r.cfg.get("num_ln_in_parallel_attn")
    if n_ln is None and new_arch:
        n_ln = 2
    norms = 2 if (not parallel or n_ln == 2) else 1
    bias = bool(r.opt("bias", False))
    alibi = bool(r.opt("alibi", False))
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
        tie_embeddings=bool(r.opt("tie_word_embeddings", True)),
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
    bias = bool(r.opt("enable_bias", True))
    pre_ln = bool(r.opt("do_layer_norm_before", True))
    affine = bool(r.opt("layer_norm_elementwise_affine", True))
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
        tie_embeddings=bool(r.opt("tie_word_embeddings", True)),
        position="learned",
        max_seq_len=max_pos,
        # OPTLearnedPositionalEmbedding keeps 2 extra rows (an offset kept from fairseq).
        learned_position_rows=max_pos + 2,
        norm="layernorm",
        norm_bias=affine,
        norms_per_layer=2 if affine else 0,
        final_norm=affine and pre_ln and not r.opt("_remove_final_layer_norm", False),
        qkv_bias=bias,
        out_bias=bias,
        mlp_bias=bias,
        embed_proj_dim=proj if proj != hidden else None,
    )


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
}


def spec_from_hf_config(source: str | os.PathLike[str] | Config, name: str | None = None) -> ModelSpec:
    cfg, origin = load_config(source)
    model_type = cfg.get("model_type")
    if model_type is None:
        raise ConfigError(f"{origin}: missing field 'model_type' "
                          f"(supported: {', '.join(sorted(READERS))})")
    reader = READERS.get(str(model_type))
    if reader is None:
        from llmsizer.errors import did_you_mean

        hint = did_you_mean(str(model_type), READERS)
        raise SpecError("model_type", model_type,
                        "one of " + ", ".join(sorted(READERS)),
                        f"did you mean {hint[0]!r}?" if hint else None)
    spec = reader(_Reader(cfg, origin), name)
    return spec
