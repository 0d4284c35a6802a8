"""Exports of a fine-tuning run.

- peft: a PEFT `LoraConfig` (peft.LoraConfig(**json["lora_config"])) and, for a quantized base,
  the transformers `BitsAndBytesConfig` keys (BitsAndBytesConfig(**json["bnb_config"]));
  field names from PEFT's LoraConfig and transformers' BitsAndBytesConfig references.
- deepspeed: the ds_config of llmsizer.export.training (ZeRO and offload on any GPU count).
- accelerate: an `accelerate config` file for FSDP (fsdp_config keys of accelerate's
  FullyShardedDataParallelPlugin: sharding strategy, CPU offload, activation checkpointing).
"""

from __future__ import annotations

import json
from typing import Any

from llmsizer.errors import SpecError
from llmsizer.export.training import deepspeed_config
from llmsizer.specs.precision import Optimizer, TrainingPrecision

FSDP_STRATEGY = {0: "NO_SHARD", 2: "SHARD_GRAD_OP", 3: "FULL_SHARD"}


def lora_config(r: Any) -> dict[str, Any]:
    """PEFT LoraConfig keyword arguments for the adapters `r` was sized with."""
    ft = r.ft
    targets: Any = "all-linear" if ft.targets == ("all-linear",) else list(ft.targets)
    return {"r": ft.rank, "lora_alpha": ft.alpha, "lora_dropout": 0.0,
            "target_modules": targets, "use_dora": ft.dora, "bias": "none",
            "task_type": "CAUSAL_LM"}


def bnb_config(r: Any, precision: TrainingPrecision) -> dict[str, Any] | None:
    """transformers BitsAndBytesConfig keyword arguments for the frozen base, or None (16-bit)."""
    base = r.ft.base
    if base.bits >= 16:
        return None
    if base.bits == 8:
        return {"load_in_8bit": True}
    return {"load_in_4bit": True, "bnb_4bit_quant_type": base.name,
            "bnb_4bit_use_double_quant": base.double_quant,
            "bnb_4bit_compute_dtype": "bfloat16" if precision.compute_dtype == "bf16"
            else "float16"}


def accelerate_fsdp(r: Any, precision: TrainingPrecision) -> dict[str, Any]:
    """An accelerate config (YAML-compatible dict) running exactly r's layout with FSDP."""
    par = r.par
    if par.zero == 1:
        raise SpecError("export", "accelerate", "ZeRO 0, 2 or 3: FSDP has no ZeRO-1 "
                        "(NO_SHARD, SHARD_GRAD_OP, FULL_SHARD); export deepspeed")
    if par.offload and (par.offload != frozenset({"optimizer", "params"}) or par.zero != 3
                        or par.offload_device != "cpu"):
        raise SpecError("export", "accelerate", "FSDP offloads parameters, gradients and "
                        "optimizer together to the CPU (--zero 3 --offload optimizer,params); "
                        "export deepspeed for other offloads")
    return {
        "compute_environment": "LOCAL_MACHINE", "distributed_type": "FSDP",
        "num_processes": par.dp, "num_machines": 1,
        "mixed_precision": {"bf16": "bf16", "fp16": "fp16"}.get(precision.compute_dtype, "no"),
        "fsdp_config": {
            "fsdp_version": 2,
            "fsdp_sharding_strategy": FSDP_STRATEGY[par.zero],
            "fsdp_reshard_after_forward": par.zero == 3,
            "fsdp_offload_params": bool(par.offload),
            "fsdp_activation_checkpointing": par.recompute == "full",
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_state_dict_type": "SHARDED_STATE_DICT",
        },
    }


def _yaml(d: dict[str, Any], indent: int = 0) -> str:
    lines = []
    for k, v in d.items():
        if isinstance(v, dict):
            lines.append(" " * indent + f"{k}:")
            lines.append(_yaml(v, indent + 2))
        else:
            lines.append(" " * indent + f"{k}: {json.dumps(v)}")
    return "\n".join(lines)


def finetune_export(kind: str, r: Any, precision: TrainingPrecision, opt: Optimizer,
                    model: str) -> str:
    if kind == "peft":
        if r.ft.method == "full":
            raise SpecError("export", kind, "deepspeed or accelerate for --method full")
        return json.dumps({"model": model, "lora_config": lora_config(r),
                           "bnb_config": bnb_config(r, precision),
                           "optimizer": opt.name}, indent=2)
    if kind == "deepspeed":
        cfg, _ = deepspeed_config(r.par, precision)
        return json.dumps(cfg, indent=2)
    if kind == "accelerate":
        return _yaml(accelerate_fsdp(r, precision))
    raise SpecError("export", kind, "peft, deepspeed or accelerate")
