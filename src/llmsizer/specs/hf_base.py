"""The shared parts of the Hugging Face config readers: loading a file, field access that names
the file and the field in its errors, and the Llama- and GPT-2-shaped builders most readers
start from."""

from __future__ import annotations

import os
from typing import Any

from llmsizer.errors import LlmsizerError
from llmsizer.specs.model import ModelSpec

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

    def cap(self, key: str, default: float) -> float | None:
        """A soft-capping constant: `default` when the key is absent (the config class's
        default), None when it is null (capping off), else a positive number."""
        v = self.cfg.get(key, default)
        if v is None:
            return None
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v < float("inf"):
            raise ConfigError(f"{self.origin}: {key}={v!r} is not allowed: a positive number "
                              "or null")
        return float(v)

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


# transformers' GemmaRMSNorm / Gemma2RMSNorm / Gemma3RMSNorm (x̂·(1 + w) in fp32) and the
# embeddings' √h scale (GemmaModel.forward: `normalizer`)
_GEMMA_NORMS = {"norm_unit_offset": True, "embedding_scale": True}


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
