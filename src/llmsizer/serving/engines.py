"""Serving engines as data: batch limits, KV pool sizing, scheduling policy and host overheads.

Every default names where it comes from. Short forms: `vllm` = vllm-project/vllm (V1 engine),
`sgl` = sgl-project/sglang@001067f, `trtllm` = NVIDIA/TensorRT-LLM@fcd3f31, `lmdeploy` =
InternLM/lmdeploy@0043859 (TurboMind backend). Values that depend on the GPU are resolved by
`engine_profile(name, acc)`; flags (`--max-num-seqs`, `--max-num-batched-tokens`) override them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from llmsizer.errors import SpecError
from llmsizer.specs.hardware import Accelerator

GiB = 2**30
ENGINES = ("vllm", "sglang", "trtllm", "lmdeploy")

KvPoolRule = Literal["utilization", "static", "free"]
Admission = Literal["on-demand", "reserve"]


@dataclass(frozen=True)
class EngineProfile:
    """How one engine schedules and where its KV pool comes from.

    kv_pool:
      "utilization" — memory_fraction · device memory − weights − workspace − overhead (vLLM's
                      gpu_memory_utilization budget minus what its profiling run measures);
      "static"      — memory_fraction · device memory − weights (SGLang's mem_fraction_static
                      covers weights and KV pool; activations and graphs live outside it);
      "free"        — memory_fraction · (device memory − weights − workspace − overhead)
                      (a fraction of what is free after loading: TRT-LLM, LMDeploy).
    admission:
      "on-demand" — blocks are taken as a sequence grows; when none are left the newest running
                    request is preempted and recomputed later (vLLM V1, SGLang retraction);
      "reserve"   — a request is admitted only when blocks for prompt + output are free, so no
                    request is ever evicted (TRT-LLM GUARANTEED_NO_EVICT).
    mixed_batches: decode tokens and prefill (chunk) tokens share one step. When False the engine
      runs a prefill-only step whenever a prefill can be scheduled and decodes otherwise.
    """

    name: str
    max_num_seqs: int
    max_num_batched_tokens: int
    block_size: int  # tokens per KV block (page)
    kv_pool: KvPoolRule
    memory_fraction: float
    mixed_batches: bool
    chunked_prefill: bool
    admission: Admission
    step_overhead_s: float  # host (scheduler, input preparation) time per step not hidden
    seq_overhead_s: float  # host time per scheduled sequence per step
    max_seqs_from_pool: bool = False  # SGLang: max_running_requests = min(pool tokens // 2, 4096)
    prefix_caching: bool = True  # whole cached blocks of a shared prefix skip their prefill
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def with_limits(self, max_num_seqs: int | None, max_num_batched_tokens: int | None
                    ) -> EngineProfile:
        out = self
        if max_num_batched_tokens is not None:
            out = replace(out, max_num_batched_tokens=max_num_batched_tokens)
        if max_num_seqs is not None:
            out = replace(out, max_num_seqs=max_num_seqs, max_seqs_from_pool=False)
        return out


def _is_large_non_a100(acc: Accelerator) -> bool:
    # vLLM's _set_default_args: device memory >= 70 GiB and the device name not an A100.
    return acc.memory_bytes >= 70 * GiB and "a100" not in acc.name.lower()


def engine_profile(name: str, acc: Accelerator) -> EngineProfile:
    """The profile of engine `name` on `acc`, with its documented defaults."""
    key = name.lower()
    if key == "vllm":
        big = _is_large_non_a100(acc)
        return EngineProfile(
            "vllm", max_num_seqs=1024 if big else 256,
            max_num_batched_tokens=8192 if big else 2048, block_size=16,
            kv_pool="utilization", memory_fraction=0.9, mixed_batches=True, chunked_prefill=True,
            admission="on-demand", step_overhead_s=126e-6, seq_overhead_s=4e-6,
            sources={
                "max_num_seqs / max_num_batched_tokens": "vllm vllm/engine/arg_utils.py "
                "_set_default_args, OpenAI server: 1024/8192 on >=70 GiB non-A100 GPUs, "
                "256/2048 otherwise",
                "block_size, gpu_memory_utilization": "vllm vllm/config/cache.py: 16 tokens; "
                "0.9 in released versions (0.92 at vllm@002f10e)",
                "scheduling": "vllm@00024d3 vllm/v1/core/sched/scheduler.py: running first, "
                "then waiting, chunked prefill, preempt newest by recompute",
                "prefix caching": "vllm vllm/config/cache.py: enable_prefix_caching True; "
                "full blocks only (docs.vllm.ai design/prefix_caching)",
                "host overheads": "inference-sim/inference-sim@f90a1e3 docs/guide/"
                "latency-models.md: fitted on H100 vLLM traces, 126 us/step, 4 us/request",
            })
    if key == "sglang":
        gib = acc.memory_bytes / GiB
        chunk = 2048 if gib < 35 else 8192 if gib < 160 else 16384
        return EngineProfile(
            "sglang", max_num_seqs=4096, max_num_batched_tokens=chunk, block_size=1,
            kv_pool="static", memory_fraction=0.88, mixed_batches=False, chunked_prefill=True,
            admission="on-demand", step_overhead_s=0.0, seq_overhead_s=0.0,
            max_seqs_from_pool=True,
            sources={
                "chunked_prefill_size": "sgl python/sglang/srt/server_args.py: 2048 (<35 GB), "
                "8192 (<160 GB), 16384 (>=160 GB)",
                "mem_fraction_static": "sgl server_args.py fallback 0.88 (the auto rule reserves "
                "more for larger chunks)",
                "max_running_requests": "sgl python/sglang/srt/managers/scheduler.py: "
                "max_total_num_tokens // 2, capped by the request pool (<= 4096)",
                "scheduling": "sgl: prefill batches first, decode otherwise "
                "(enable_mixed_chunk off); page_size 1; decode retraction when KV runs out",
                "prefix caching": "sgl: radix cache on by default (page size 1)",
                "host overheads": "overlap scheduler hides host work (lmsys.org/blog/"
                "2024-12-04-sglang-v0-4: zero-overhead batch scheduler)",
            })
    if key == "trtllm":
        return EngineProfile(
            "trtllm", max_num_seqs=2048, max_num_batched_tokens=8192, block_size=32,
            kv_pool="free", memory_fraction=0.9, mixed_batches=True, chunked_prefill=False,
            admission="reserve", step_overhead_s=0.0, seq_overhead_s=0.0,
            sources={
                "max_batch_size / max_num_tokens": "trtllm tensorrt_llm/llmapi/llm_args.py: "
                "2048 / 8192",
                "tokens_per_block, enable_chunked_prefill": "trtllm llm_args.py KvCacheConfig: "
                "32; chunked prefill off",
                "free_gpu_memory_fraction": "trtllm llm_args.py: 0.9 of memory free after load",
                "scheduling": "in-flight batching, GUARANTEED_NO_EVICT capacity scheduler "
                "(TRT-LLM docs, Useful Runtime Options)",
                "prefix caching": "trtllm llm_args.py KvCacheConfig.enable_block_reuse True",
                "host overheads": "assumed 0 (C++ executor); not measured",
            })
    if key == "lmdeploy":
        n = acc.name.lower()
        batch = (384 if any(k in n for k in ("a100", "a800"))
                 else 1024 if any(k in n for k in ("h100", "h800", "h200")) else 128)
        return EngineProfile(
            "lmdeploy", max_num_seqs=batch, max_num_batched_tokens=8192, block_size=64,
            kv_pool="free", memory_fraction=0.8, mixed_batches=True, chunked_prefill=False,
            admission="on-demand", step_overhead_s=0.0, seq_overhead_s=0.0,
            prefix_caching=False,
            sources={
                "prefix caching": "lmdeploy messages.py: enable_prefix_caching False",
                "max_batch_size": "lmdeploy lmdeploy/utils.py get_max_batch_size: A100/A800 "
                "384, H100/H800/H200 1024, other CUDA devices 128",
                "max_prefill_token_num, cache_block_seq_len, cache_max_entry_count":
                "lmdeploy lmdeploy/messages.py TurbomindEngineConfig: 8192, 64, 0.8 of free "
                "memory",
                "scheduling": "TurboMind persistent batch; split-fuse chunking off by default "
                "(num_tokens_per_iter 0, max_prefill_iters 1); preemption modelled as vLLM's",
                "host overheads": "assumed 0 (C++ engine); not measured",
            })
    raise SpecError("engine", name, "one of " + ", ".join(ENGINES))
