"""Export of a serving layout as `vllm serve` arguments (docs.vllm.ai, engine arguments)."""

from __future__ import annotations

import shlex

from llmsizer.analysis.inference import ServingConfig


def vllm_args(model: str, cfg: ServingConfig, max_num_seqs: int, max_model_len: int) -> str:
    parts = ["vllm", "serve", shlex.quote(model),
             "--tensor-parallel-size", str(cfg.tp),
             "--pipeline-parallel-size", str(cfg.pp),
             "--max-num-seqs", str(max_num_seqs),
             "--max-model-len", str(max_model_len),
             "--gpu-memory-utilization", f"{cfg.mem_util:g}"]
    if cfg.block_size:
        parts += ["--block-size", str(cfg.block_size)]
    if cfg.kv_dtype_bytes == 1:
        parts += ["--kv-cache-dtype", "fp8"]
    if cfg.weights is not None and cfg.weights.name in ("fp8",):
        parts += ["--quantization", "fp8"]
    return " ".join(parts)
