"""ModelSpec from Hugging Face `config.json` files.

One small reader per `model_type`. Each mirrors how the matching `transformers` modeling code
builds its modules (which projections carry biases, how many norms a block has, what a missing
field defaults to), because the parameter count is checked against exactly that code in the tests
(tests/test_verify_transformers.py). Optional fields missing from a file take the defaults of the
`transformers` (5.x) configuration class of that type; the core sizes are required, so that a
truncated file is an error, not a silently different model.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from llmsizer.errors import SpecError
from llmsizer.specs import hf_classic as c
from llmsizer.specs import hf_modern as m
from llmsizer.specs.hf_base import Config, ConfigError, _Reader, load_config
from llmsizer.specs.model import ModelSpec

__all__ = ["READERS", "WRAPPERS", "Config", "ConfigError", "load_config", "spec_from_hf_config",
           "supported_model_types"]


READERS: dict[str, Callable[[_Reader, str | None], ModelSpec]] = {
    "llama": c._llama,
    "mistral": c._mistral,
    "mixtral": c._mixtral,
    "qwen2": c._qwen2,
    "qwen2_moe": c._qwen2_moe,
    "gemma": c._gemma,
    "gemma2": c._gemma2,
    "gpt2": c._gpt2,
    "gpt_neox": c._gpt_neox,
    "gptj": c._gptj,
    "bloom": c._bloom,
    "falcon": c._falcon,
    "opt": c._opt,
    "phi3": c._phi3,
    "qwen3": m._qwen3,
    "qwen3_moe": m._qwen3,
    "qwen3_next": m._qwen3_next,
    "qwen3_5_text": m._qwen3_next,
    "qwen3_5_moe_text": m._qwen3_next,
    "deepseek_v2": m._deepseek_v2,
    "deepseek_v3": m._deepseek_v3,
    "gemma3_text": m._gemma3_text,
    "gpt_oss": m._gpt_oss,
    "llama4_text": m._llama4_text,
    "olmo": m._olmo,
    "olmo2": m._olmo2,
    "olmo3": m._olmo3,
    "glm4": m._glm4,
    "glm4_moe": m._glm4_moe,
    "phimoe": m._phimoe,
    "cohere": m._cohere,
    "cohere2": m._cohere2,
    "granite": m._granite,
    "starcoder2": m._starcoder2,
    "dbrx": m._dbrx,
    "gpt_bigcode": m._gpt_bigcode,
    "mamba": m._mamba1,
    "falcon_mamba": m._mamba1,
    "mamba2": m._mamba2,
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


def spec_from_hf_config(source: str | os.PathLike[str] | Config, name: str | None = None,
                        origin: str | None = None) -> ModelSpec:
    """A ModelSpec from a config.json path, its folder, or a dict; `origin` names where a dict
    came from (the file the caller read it from) in error messages."""
    cfg, where = load_config(source)
    origin = origin if origin is not None and isinstance(source, dict) else where
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
