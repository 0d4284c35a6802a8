"""Export of a serving layout as `vllm serve` arguments (docs.vllm.ai, engine arguments)."""

from __future__ import annotations

import json
import math
import shlex
from typing import Any

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


# ---------------------------------------------------------------------------------------------
# Launch commands for a simulated plan (plan-serve --qps … --export vllm|sglang|trtllm).
# Every flag below is one the engine documents; tests/test_plan_serve.py holds the same lists.
#   vLLM:    https://docs.vllm.ai/en/v0.8.5/serving/engine_args.html (vllm serve engine args:
#            --tensor-parallel-size, --pipeline-parallel-size, --max-num-seqs,
#            --max-num-batched-tokens, --max-model-len, --gpu-memory-utilization, --block-size,
#            --kv-cache-dtype {auto,fp8,fp8_e5m2,fp8_e4m3}, --quantization, --speculative-config)
#   SGLang:  https://docs.sglang.io/advanced_features/server_arguments.html
#            (python -m sglang.launch_server: --model-path, --tp-size, --pp-size,
#            --max-running-requests, --chunked-prefill-size, --context-length,
#            --mem-fraction-static, --kv-cache-dtype, --quantization, --speculative-algorithm,
#            --speculative-num-steps, --speculative-num-draft-tokens,
#            --speculative-draft-model-path)
#   TensorRT-LLM: https://nvidia.github.io/TensorRT-LLM/0.18.2/commands/trtllm-serve.html
#            (trtllm-serve MODEL: --backend, --tp_size, --pp_size, --max_batch_size,
#            --max_num_tokens, --max_seq_len, --kv_cache_free_gpu_memory_fraction)
# ---------------------------------------------------------------------------------------------

SERVING_EXPORTS = ("vllm", "sglang", "trtllm")


def _instances_comment(instances: int, gpus_each: int, engine: str, gpus_per_node: int) -> str:
    total = instances * gpus_each
    where = ("on one node" if total <= gpus_per_node else
             f"over {math.ceil(total / gpus_per_node)} nodes of {gpus_per_node} GPUs")
    return (f"# launch {instances} instance{'s' if instances != 1 else ''} of this command "
            f"({gpus_each} GPU{'s' if gpus_each != 1 else ''} each, {total} in all, {where}; "
            f"a different port / CUDA_VISIBLE_DEVICES each) behind one load balancer "
            f"that deals requests round-robin, as the plan was simulated")


def launch_command(kind: str, model_id: str, *, tp: int, pp: int, max_num_seqs: int,
                   max_num_batched_tokens: int, max_model_len: int, memory_fraction: float,
                   kv_fp8: bool, weights: str, instances: int, gpus_per_node: int = 8,
                   speculation: Any = None) -> str:
    """The command that launches one instance of a plan, after a comment saying how many."""
    q = shlex.quote(model_id)
    if kind == "vllm":
        parts = ["vllm", "serve", q, "--tensor-parallel-size", str(tp),
                 "--pipeline-parallel-size", str(pp), "--max-num-seqs", str(max_num_seqs),
                 "--max-num-batched-tokens", str(max_num_batched_tokens),
                 "--max-model-len", str(max_model_len),
                 "--gpu-memory-utilization", f"{memory_fraction:g}", "--block-size", "16"]
        if kv_fp8:
            parts += ["--kv-cache-dtype", "fp8"]
        if weights == "fp8":
            parts += ["--quantization", "fp8"]
        if speculation is not None:
            cfg: dict[str, Any] = {"num_speculative_tokens": speculation.k}
            if speculation.draft is not None:
                cfg = {"model": _hf_id(speculation.draft.name), **cfg}
            else:
                cfg = {"method": "eagle" if speculation.method == "eagle" else
                       "deepseek_mtp", **cfg}
            parts += ["--speculative-config", shlex.quote(json.dumps(cfg, separators=(",", ":")))]
    elif kind == "sglang":
        parts = ["python", "-m", "sglang.launch_server", "--model-path", q,
                 "--tp-size", str(tp), "--pp-size", str(pp),
                 "--max-running-requests", str(max_num_seqs),
                 "--chunked-prefill-size", str(max_num_batched_tokens),
                 "--context-length", str(max_model_len),
                 "--mem-fraction-static", f"{memory_fraction:g}"]
        if kv_fp8:
            parts += ["--kv-cache-dtype", "fp8_e4m3"]
        if weights == "fp8":
            parts += ["--quantization", "fp8"]
        if speculation is not None:
            algo = "EAGLE" if speculation.draft is None else "STANDALONE"
            parts += ["--speculative-algorithm", algo,
                      "--speculative-num-steps", str(speculation.k),
                      "--speculative-num-draft-tokens", str(speculation.k + 1)]
            if speculation.draft is not None:
                parts += ["--speculative-draft-model-path", _hf_id(speculation.draft.name)]
    elif kind == "trtllm":
        parts = ["trtllm-serve", q, "--backend", "pytorch", "--tp_size", str(tp),
                 "--pp_size", str(pp), "--max_batch_size", str(max_num_seqs),
                 "--max_num_tokens", str(max_num_batched_tokens),
                 "--max_seq_len", str(max_model_len),
                 "--kv_cache_free_gpu_memory_fraction", f"{memory_fraction:g}"]
    else:
        raise ValueError(kind)
    return _instances_comment(instances, tp * pp, kind, gpus_per_node) + "\n" + " ".join(parts)


def _hf_id(name: str) -> str:
    return hf_model_id(name)[0]


def hf_model_id(name: str) -> tuple[str, bool]:
    """The Hugging Face repo id of a catalog model (its entry's hf_repo), and whether one was
    found; otherwise the name as given (a path to a config.json, or a model without a repo)."""
    from llmsizer.catalog import model_entry

    try:
        entry = model_entry(name)
    except Exception:  # a path or an unknown name: launch what the user named
        entry = None
    if entry is not None and entry.hf_repo:
        return entry.hf_repo, True
    return name, False
