"""Catalogs of models and accelerators: reviewed data files, every entry with its source.

Lookup is case-insensitive and accepts aliases and Hugging Face repo ids; an unknown name gets
"did you mean ...". Wherever a name is accepted, a path to a JSON file is accepted too: a Hugging
Face `config.json` (or a folder holding one), or a file in the catalog's own entry format.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from llmsizer.errors import LlmsizerError, SpecError, UnknownNameError
from llmsizer.specs.hardware import Accelerator
from llmsizer.specs.model import ModelSpec


class CatalogError(LlmsizerError):
    """A catalog or user file that is malformed."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    display_name: str
    family: str
    aliases: tuple[str, ...]
    hf_repo: str | None
    source: str
    config: dict[str, Any]
    published_params: dict[str, Any] | None

    def spec(self) -> ModelSpec:
        return _model_spec(self.name)


def _normalize(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip().lower())


def _read_data(filename: str) -> list[dict[str, Any]]:
    text = resources.files("llmsizer.catalog").joinpath("data", filename).read_text("utf-8")
    data = json.loads(text)
    assert isinstance(data, list)
    return data


@cache
def _models() -> dict[str, ModelEntry]:
    out = {}
    for raw in _read_data("models.json"):
        entry = ModelEntry(
            name=raw["name"],
            display_name=raw.get("display_name", raw["name"]),
            family=raw.get("family", ""),
            aliases=tuple(raw.get("aliases", ())),
            hf_repo=raw.get("hf_repo"),
            source=raw["source"],
            config=raw["config"],
            published_params=raw.get("published_params"),
        )
        out[entry.name] = entry
    return out


@cache
def _model_index() -> dict[str, str]:
    index: dict[str, str] = {}
    for entry in _models().values():
        keys = [entry.name, entry.display_name, *entry.aliases]
        if entry.hf_repo:
            keys.append(entry.hf_repo)
        for key in keys:
            index[_normalize(key)] = entry.name
    return index


@cache
def _model_spec(name: str) -> ModelSpec:
    from llmsizer.specs.hf import spec_from_hf_config

    entry = _models()[name]
    spec = spec_from_hf_config(entry.config, name=entry.name)
    return _with_source(spec, entry.source)


def _with_source(spec: ModelSpec, source: str) -> ModelSpec:
    from dataclasses import replace

    return replace(spec, source=source)


def list_models() -> list[ModelEntry]:
    return list(_models().values())


def model_entry(name: str) -> ModelEntry | None:
    """The catalog entry a name or alias refers to, or None."""
    key = _model_index().get(_normalize(name))
    return _models()[key] if key else None


def _looks_like_path(name: str) -> bool:
    from llmsizer.files import is_directory, is_existing_path

    return (name.endswith(".json") or ("/" in name and is_existing_path(name))
            or is_directory(name) or len(name.encode()) > 255)


def get_model(name_or_path: str | dict[str, Any] | ModelSpec, origin: str = "dict") -> ModelSpec:
    """A ModelSpec from a catalog name/alias/HF repo id, a config.json path or dict, or a spec.

    `origin` names where a dict came from (a file, a case) in error messages."""
    if isinstance(name_or_path, ModelSpec):
        return name_or_path
    if isinstance(name_or_path, dict):
        return _model_from_dict(name_or_path, origin)
    entry = model_entry(name_or_path)
    if entry is not None:
        return entry.spec()
    if _looks_like_path(name_or_path):
        from llmsizer.specs.hf import load_config

        data, origin = load_config(name_or_path)
        return _model_from_dict(data, origin)
    known = [e.name for e in _models().values()] + [a for e in _models().values() for a in e.aliases]
    raise UnknownNameError("model", name_or_path, known, "llmsizer models")


# ModelSpec fields as the keys of a Hugging Face config.json name them, for errors that name
# what the user wrote rather than llmsizer's internal field.
_CONFIG_KEYS = {
    "num_layers": "num_hidden_layers (n_layer)", "hidden_size": "hidden_size (n_embd)",
    "num_heads": "num_attention_heads (n_head)", "num_kv_heads": "num_key_value_heads",
    "ffn_size": "intermediate_size (n_inner)", "vocab_size": "vocab_size",
    "max_seq_len": "max_position_embeddings (n_positions)", "head_dim": "head_dim",
    "moe.top_k": "num_experts_per_tok", "moe.num_experts": "num_local_experts (num_experts)",
    "moe.moe_layers": "the MoE layer keys", "moe.shared_experts": "n_shared_experts",
}


def _model_from_dict(data: dict[str, Any], origin: str) -> ModelSpec:
    """A spec from a config dict; errors name `origin` (the file) and the config's key."""
    from llmsizer.specs.hf import spec_from_hf_config

    try:
        if "config" in data and isinstance(data["config"], dict):  # a catalog-format entry
            spec = spec_from_hf_config(data["config"], name=data.get("name") or origin,
                                       origin=origin)
            return _with_source(spec, str(data.get("source", origin)))
        name = data.get("name") or data.get("_name_or_path") or Path(origin).parent.name or origin
        return _with_source(spec_from_hf_config(data, name=str(name), origin=origin), origin)
    except SpecError as e:
        key = _CONFIG_KEYS.get(e.field, e.field)
        raise CatalogError(f"{origin}: {key} = {e.value!r} is not allowed: {e.allowed}") from None
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise CatalogError(f"{origin}: not a model config this version reads ({e})") from None


# ---------------------------------------------------------------------------------------------
# Accelerators
# ---------------------------------------------------------------------------------------------

_MEMORY_UNITS = {"GB": 10**9, "GiB": 2**30, "TB": 10**12, "TiB": 2**40}


def accelerator_from_dict(raw: dict[str, Any], origin: str = "catalog") -> Accelerator:
    """Build an Accelerator from an entry of accelerators.json (or a user file in that format)."""
    name = raw.get("name")
    where = f"{origin}: accelerator {name!r}" if name else origin

    def need(key: str) -> Any:
        if raw.get(key) is None:
            raise CatalogError(f"{where}: missing field {key!r}")
        return raw[key]

    memory = need("memory")
    if isinstance(memory, dict):
        unit = memory.get("unit")
        if unit not in _MEMORY_UNITS:
            raise SpecError(f"{name}.memory.unit", unit, "one of " + ", ".join(_MEMORY_UNITS))
        memory_bytes = int(raw.get("memory_bytes") or memory["value"] * _MEMORY_UNITS[unit])
        # datasheet text, e.g. "80GB", when the entry keeps it apart from value + unit
        stated = str(raw.get("memory_stated") or f"{memory['value']} {unit}")
    else:
        raise CatalogError(f"{where}: field 'memory' must be {{\"value\": ..., \"unit\": \"GB\"}}")
    peaks = {k: float(v) * 1e12 for k, v in (need("peak_tflops") or {}).items() if v is not None}
    if not {"bf16", "fp16"} & set(peaks):
        raise CatalogError(f"{where}: peak_tflops needs a bf16 or fp16 figure (the roofline and "
                           "the training recipes use one)")
    link = raw.get("intra_node_link") or {}
    try:
        return Accelerator(
            name=str(need("name")),
            display_name=str(raw.get("display_name", name)),
            vendor=str(raw.get("vendor", "")),
            peak_flops=peaks,
            memory_bytes=memory_bytes,
            memory_bandwidth_bytes_s=float(need("memory_bandwidth_gb_s")) * 1e9,
            memory_stated=stated + (f" {raw['memory_type']}" if raw.get("memory_type") else ""),
            intra_node_link_bytes_s=(float(link["bandwidth_gb_s"]) * 1e9
                                     if link.get("bandwidth_gb_s") else None),
            intra_node_link_name=str(link.get("name", "")),
            sm_count=raw.get("sm_count"),
            tensor_cores_per_sm=raw.get("tensor_cores_per_sm"),
            fp16_flops_per_tensor_core_per_clock=raw.get(
                "dense_fp16_flops_per_tensor_core_per_clock"),
            boost_clock_mhz=raw.get("boost_clock_mhz"),
            tdp_w=raw.get("tdp_w"),
            power_limit_w=raw.get("power_limit_w"),
            aliases=tuple(raw.get("aliases", ())),
            sources=dict(raw.get("sources", {})),
            notes=str(raw.get("notes", "")),
            extras={k: v for k, v in raw.items() if k in ("architecture", "form_factor",
                                                           "memory_note", "pcie", "memory_type",
                                                           "nvlink_domain",
                                                           "measured_matmul")},
        )
    except (TypeError, ValueError) as e:
        if isinstance(e, LlmsizerError):
            raise
        raise CatalogError(f"{where}: {e}") from None


@cache
def _accelerators() -> dict[str, Accelerator]:
    return {raw["name"]: accelerator_from_dict(raw) for raw in _read_data("accelerators.json")}


@cache
def _accelerator_index() -> dict[str, str]:
    index: dict[str, str] = {}
    for acc in _accelerators().values():
        for key in (acc.name, acc.display_name, *acc.aliases):
            index[_normalize(key)] = acc.name
    return index


def list_accelerators() -> list[Accelerator]:
    return list(_accelerators().values())


def get_accelerator(name_or_path: str | dict[str, Any] | Accelerator) -> Accelerator:
    """An Accelerator from a catalog name/alias, or a path to a JSON file in the catalog format."""
    if isinstance(name_or_path, Accelerator):
        return name_or_path
    if isinstance(name_or_path, dict):
        return accelerator_from_dict(name_or_path, "dict")
    key = _accelerator_index().get(_normalize(name_or_path))
    if key:
        return _accelerators()[key]
    from llmsizer.files import is_existing_path, read_json

    if name_or_path.endswith(".json") or is_existing_path(name_or_path) \
            or len(name_or_path.encode()) > 255:
        return accelerator_from_dict(read_json(name_or_path, "gpu", CatalogError), name_or_path)
    known = [a.name for a in _accelerators().values()] + [
        x for a in _accelerators().values() for x in a.aliases]
    raise UnknownNameError("GPU", name_or_path, known, "llmsizer gpus")


# ---------------------------------------------------------------------------------------------
# Position limits (read from the config, rope scaling included)
# ---------------------------------------------------------------------------------------------

def position_limit(name_or_path: str, spec: ModelSpec) -> tuple[int, str]:
    """The longest sequence a model's config supports, and how it is derived.

    max_position_embeddings (n_positions), times a rope_scaling "factor" of the linear, dynamic
    and yarn kinds over original_max_position_embeddings where given (transformers'
    rope_config_validation); "llama3" scaling already states the extended limit."""
    config: dict[str, Any] | None = None
    entry = model_entry(name_or_path)
    if entry is not None:
        config = entry.config
    elif _looks_like_path(name_or_path):
        from llmsizer.specs.hf import load_config

        data, _ = load_config(name_or_path)
        config = data["config"] if isinstance(data.get("config"), dict) else data
    limit, how = spec.max_seq_len, "max_position_embeddings"
    rope = (config or {}).get("rope_scaling")
    if isinstance(rope, dict):
        kind = str(rope.get("rope_type") or rope.get("type") or "")
        factor = rope.get("factor")
        if kind in ("linear", "dynamic", "yarn", "longrope") and isinstance(factor, (int, float)) \
                and not isinstance(factor, bool) and factor > 1:
            base = rope.get("original_max_position_embeddings") or spec.max_seq_len
            if isinstance(base, int) and base * factor > limit:
                limit = int(base * factor)
                how = f"{base:,} positions × {kind} rope scaling factor {factor:g}"
    return limit, how
