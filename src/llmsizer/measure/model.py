"""The model a measurement runs: its Hugging Face config (from the catalog, a config.json or a
folder), built by transformers with random weights; nothing is downloaded."""

from __future__ import annotations

import re
from typing import Any

from llmsizer.errors import SpecError

# Dropout is switched off: large-model pre-training runs without it (Llama, Mistral and Qwen
# configs set it to 0), and with it torch's SDPA leaves the fused kernel for the unfused one
# that keeps the s×s probabilities, while llmsizer's time model is of fused kernels.
_DROPOUT = re.compile(r"(dropout|pdrop)", re.IGNORECASE)


def dropout_keys(config: dict[str, Any]) -> list[str]:
    """The config's dropout probabilities (its own, and the defaults its class fills in)."""
    return [k for k, v in config.items() if _DROPOUT.search(k)
            and isinstance(v, (int, float)) and not isinstance(v, bool)]


def config_dict(name_or_path: str) -> dict[str, Any]:
    """The config.json content behind a catalog name, alias or path (what get_model reads)."""
    from llmsizer.catalog import model_entry

    entry = model_entry(name_or_path)
    if entry is not None:
        return dict(entry.config)
    from llmsizer.specs.hf import load_config

    try:
        data, _origin = load_config(name_or_path)
    except (OSError, ValueError):
        from llmsizer.catalog import get_model

        get_model(name_or_path)  # the catalog's "unknown model, did you mean" error
        raise
    return dict(data)


def build(config: dict[str, Any], dtype: Any, device: Any) -> Any:
    """transformers' causal LM for `config` with random weights and the SDPA attention path."""
    import transformers

    transformers.logging.set_verbosity_error()  # its notes would interleave with our output
    cfg = dict(config)
    model_type = cfg.pop("model_type", None)
    if not model_type:
        raise SpecError("model", "config", "a config.json with a model_type")
    for key in ("architectures", "transformers_version", "torch_dtype", "dtype"):
        cfg.pop(key, None)
    hf = transformers.AutoConfig.for_model(model_type, **cfg)
    hf.use_cache = False
    for key in dropout_keys(hf.to_dict()):
        setattr(hf, key, 0.0)
    model = transformers.AutoModelForCausalLM.from_config(hf, attn_implementation="sdpa",
                                                          dtype=dtype)
    return model.to(device)


def decoder_layers(model: Any) -> list[Any]:
    """The repeated blocks FSDP2 shards one by one (model.model.layers for Llama-style models,
    transformer.h for GPT-2-style ones)."""
    for path in ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None:
            return list(obj)
    return []
