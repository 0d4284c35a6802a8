"""llmsizer's prediction for exactly the run that was measured, and the gap between them."""

from __future__ import annotations

import math
from typing import Any

from llmsizer.specs.hardware import Accelerator
from llmsizer.specs.model import ModelSpec


def relative_error(predicted: float, measured: float) -> float | None:
    """(predicted − measured) / measured; None when nothing was measured."""
    if not measured or not math.isfinite(measured) or not math.isfinite(predicted):
        return None
    return (predicted - measured) / measured


def training(spec: ModelSpec, acc: Accelerator, calibration: str | None, *, device: str,
             nproc: int, strategy: str, micro_batch: int, seq: int,
             framework_overhead: float) -> Any:
    """train_step for the measured layout: data parallel over the processes (FSDP2 = ZeRO-3),
    fp32 on a CPU, bf16 mixed precision on a GPU, AdamW, Hugging Face SDPA layers (activation
    convention hf-sdpa, flash-style attention kernels). On a CPU the gradient all-reduce runs on
    the same cores as the backward (gloo copies and sums on them), so nothing hides it
    (dp_overlap off); a GPU's NCCL kernels overlap the backward."""
    from llmsizer.analysis.cluster import Cluster
    from llmsizer.analysis.efficiency import Efficiency
    from llmsizer.analysis.training import train_step
    from llmsizer.errors import SpecError
    from llmsizer.specs.parallel import Parallelism
    from llmsizer.specs.precision import optimizer, training_precision

    eff = Efficiency.for_accelerator(acc, calibration=calibration, workload="training")
    par = Parallelism(dp=nproc, zero=3 if strategy == "fsdp2" else 0, micro_batch=micro_batch)
    precision = training_precision("fp32" if device == "cpu" else "mixed")
    cluster = Cluster(acc, gpus_per_node=max(8, nproc))
    # transformers' SDPA layers where llmsizer has their byte-exact convention (Llama-style:
    # RMSNorm, gated FFN), else Korthikanti et al.'s with flash attention (GPT-2 style)
    for convention in ("hf-sdpa", "megatron"):
        try:
            return train_step(spec, par, precision, optimizer("adamw"), seq, cluster, eff,
                              activations=convention, attention_backward="flash",
                              framework_overhead=framework_overhead,
                              dp_overlap=device != "cpu")
        except SpecError as e:
            if convention != "hf-sdpa" or e.field != "activations":
                raise
    raise AssertionError("unreachable")


def serving(spec: ModelSpec, acc: Accelerator, calibration: str | None, *, device: str,
            batch: int, prompt: int, output: int, runtime_overhead: float = 0.0) -> Any:
    """serve() for one static batch on one device: fp32 weights and KV cache on a CPU, bf16 on
    a GPU; no paging (transformers' dynamic cache); `runtime_overhead`: the process's memory
    besides weights, cache and activations."""
    from llmsizer.analysis.efficiency import Efficiency
    from llmsizer.analysis.inference import ServingConfig, serve
    from llmsizer.specs.precision import weight_format

    eff = Efficiency.for_accelerator(acc, calibration=calibration, workload="serving")
    cpu = device == "cpu"
    cfg = ServingConfig(weights=weight_format("fp32" if cpu else "bf16"),
                        kv_dtype_bytes=4 if cpu else 2, block_size=None,
                        runtime_overhead=runtime_overhead)
    return serve(spec, acc, cfg, batch=batch, prompt=prompt, output=output, eff=eff)
