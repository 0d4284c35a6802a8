"""Exports of a training layout.

DeepSpeed keys follow the DeepSpeed configuration JSON reference (deepspeed.ai/docs/config-json);
Megatron-LM flags follow megatron/training/arguments.py; the launcher is torchrun's
(pytorch.org/docs/stable/elastic/run.html).
"""

from __future__ import annotations

import shlex
from typing import Any

from llmsizer.errors import SpecError
from llmsizer.specs.model import ModelSpec
from llmsizer.specs.parallel import Parallelism
from llmsizer.specs.precision import TrainingPrecision


def deepspeed_config(par: Parallelism, precision: TrainingPrecision, *,
                     gradient_clipping: float = 1.0) -> tuple[dict[str, Any], list[str]]:
    """(ds_config dict, warnings). DeepSpeed's JSON covers data parallelism, ZeRO and offload;
    tensor/pipeline parallelism come from the training code (e.g. Megatron-DeepSpeed flags)."""
    warnings = []
    if par.zero >= 2 and par.pp > 1:
        raise SpecError("export", "deepspeed", f"a layout DeepSpeed runs: its pipeline engine "
                        f"accepts ZeRO stage 0 or 1, not {par.zero} with pp={par.pp} "
                        "(plan with --framework deepspeed)")
    cfg: dict[str, Any] = {
        "train_batch_size": par.global_batch,
        "train_micro_batch_size_per_gpu": par.micro_batch,
        "gradient_accumulation_steps": par.grad_accum,
        "gradient_clipping": gradient_clipping,
    }
    if precision.compute_dtype == "bf16":
        cfg["bf16"] = {"enabled": True}
    elif precision.compute_dtype == "fp16":
        cfg["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16}
    zero: dict[str, Any] = {"stage": par.zero}
    if par.zero:
        zero |= {"overlap_comm": True, "contiguous_gradients": True,
                 "reduce_bucket_size": 500_000_000}
    if par.zero == 3:
        zero |= {"stage3_prefetch_bucket_size": 50_000_000,
                 "stage3_param_persistence_threshold": 100_000}
    if "optimizer" in par.offload:
        zero["offload_optimizer"] = {"device": par.offload_device, "pin_memory": True}
    if "params" in par.offload:
        zero["offload_param"] = {"device": par.offload_device, "pin_memory": True}
    cfg["zero_optimization"] = zero
    if par.recompute != "none":
        cfg["activation_checkpointing"] = {"partition_activations": par.tp > 1,
                                           "contiguous_memory_optimization": False,
                                           "cpu_checkpointing": False}
        if par.recompute == "selective":
            warnings.append("DeepSpeed checkpoints whole layers: selective recomputation comes "
                            "from the model code (Megatron-DeepSpeed --recompute-granularity "
                            "selective)")
    if par.tp > 1 or par.pp > 1 or par.cp > 1 or par.ep > 1:
        warnings.append(f"tp={par.tp} pp={par.pp} cp={par.cp} ep={par.ep} are set by the "
                        "training code, not ds_config.json (Megatron-DeepSpeed: "
                        "--tensor-model-parallel-size, --pipeline-model-parallel-size)")
    return cfg, warnings


def megatron_args(spec: ModelSpec, par: Parallelism, precision: TrainingPrecision, seq: int
                  ) -> tuple[list[str], list[str]]:
    """(Megatron-LM command-line arguments, warnings)."""
    warnings = []
    if par.zero >= 2 or par.offload:
        raise SpecError("export", "megatron", "a layout Megatron-LM runs: its distributed "
                        f"optimizer is ZeRO-1 and it has no offload flag here (the plan has "
                        f"ZeRO-{par.zero}{' with offload' if par.offload else ''}; plan with "
                        "--framework megatron)")
    if par.schedule == "gpipe":
        raise SpecError("export", "megatron", "a 1F1B or interleaved schedule (Megatron-LM has "
                        "no GPipe schedule; plan with --framework megatron)")
    a = [
        "--num-layers", str(spec.num_layers),
        "--hidden-size", str(spec.hidden_size),
        "--num-attention-heads", str(spec.num_heads),
        "--ffn-hidden-size", str(spec.ffn_size),
        "--seq-length", str(seq),
        "--max-position-embeddings", str(max(seq, spec.max_seq_len)),
        "--tensor-model-parallel-size", str(par.tp),
        "--pipeline-model-parallel-size", str(par.pp),
        "--micro-batch-size", str(par.micro_batch),
        "--global-batch-size", str(par.global_batch),
    ]
    if spec.head_dim and spec.head_size * spec.num_heads != spec.hidden_size:
        a += ["--kv-channels", str(spec.head_size)]
    if spec.kv_heads != spec.num_heads:
        a += ["--group-query-attention", "--num-query-groups", str(spec.kv_heads)]
    if spec.ffn_kind == "gated":
        a.append("--swiglu")
    if spec.norm == "rmsnorm":
        a += ["--normalization", "RMSNorm"]
    if spec.position == "rotary":
        a += ["--position-embedding-type", "rope"]
    if not spec.tie_embeddings:
        a.append("--untie-embeddings-and-output-weights")
    if not (spec.qkv_bias or spec.out_bias or spec.mlp_bias):
        a.append("--disable-bias-linear")
    if par.cp > 1:
        a += ["--context-parallel-size", str(par.cp)]
    if par.ep > 1:
        a += ["--expert-model-parallel-size", str(par.ep)]
    if spec.moe is not None:
        a += ["--num-experts", str(spec.moe.num_experts), "--moe-router-topk",
              str(spec.moe.top_k)]
    if par.schedule == "interleaved":
        a += ["--num-layers-per-virtual-pipeline-stage",
              str(spec.num_layers // (par.pp * par.virtual_stages))]
    if par.sequence_parallel:
        a.append("--sequence-parallel")
    if par.recompute == "selective":
        a += ["--recompute-granularity", "selective"]
    elif par.recompute == "full":
        a += ["--recompute-granularity", "full", "--recompute-method", "uniform",
              "--recompute-num-layers", "1"]
    if par.zero >= 1:
        a.append("--use-distributed-optimizer")
    if precision.compute_dtype == "bf16":
        a.append("--bf16")
    elif precision.compute_dtype == "fp16":
        a.append("--fp16")
    if precision.name == "mixed-fp32-grads":
        a.append("--accumulate-allreduce-grads-in-fp32")
    return a, warnings


def torchrun_command(par: Parallelism, gpus_per_node: int, script: str = "pretrain_gpt.py",
                     script_args: list[str] | None = None) -> str:
    nodes = max(1, par.world_size // gpus_per_node)
    per_node = min(par.world_size, gpus_per_node)
    parts = ["torchrun", f"--nnodes={nodes}", f"--nproc-per-node={per_node}"]
    if nodes > 1:
        parts += ["--node-rank=$NODE_RANK", "--master-addr=$MASTER_ADDR", "--master-port=29500"]
    parts.append(script)
    parts += [shlex.quote(x) for x in (script_args or [])]
    return " ".join(parts)


def torchtitan_toml(par: Parallelism, precision: TrainingPrecision, seq: int) -> str:
    """The [parallelism], [training] and [activation_checkpoint] sections of a torchtitan job
    config (torchtitan/config/job_config.py) for exactly this layout."""
    if par.zero == 1:
        raise SpecError("export", "torchtitan", "ZeRO 0, 2 or 3 (FSDP2 has no ZeRO-1)")
    if par.offload and par.offload != frozenset({"optimizer", "params"}):
        raise SpecError("export", "torchtitan", "no offload or parameters + optimizer together "
                        "(FSDP2 CPU offload)")
    replicate, shard = (par.dp, 1) if par.zero == 0 else (1, par.dp)
    schedule = {"gpipe": "GPipe", "1f1b": "1F1B", "interleaved": "Interleaved1F1B"}[par.schedule]
    lines = [
        "[parallelism]",
        f"data_parallel_replicate_degree = {replicate}",
        f"data_parallel_shard_degree = {shard}",
        f"fsdp_reshard_after_forward = \"{'always' if par.zero == 3 else 'never'}\"",
        f"tensor_parallel_degree = {par.tp}",
        f"pipeline_parallel_degree = {par.pp}",
        f"pipeline_parallel_schedule = \"{schedule}\"",
        f"context_parallel_degree = {par.cp}",
        f"expert_parallel_degree = {par.ep}",
        "",
        "[training]",
        f"local_batch_size = {par.micro_batch * par.grad_accum}",
        f"global_batch_size = {par.global_batch}",
        f"seq_len = {seq}",
        f"mixed_precision_param = \"{'bfloat16' if precision.compute_dtype == 'bf16' else 'float32'}\"",
        f"enable_cpu_offload = {'true' if par.offload else 'false'}",
        "",
        "[activation_checkpoint]",
        f"mode = \"{par.recompute}\"",
    ]
    if par.pp > 1:
        lines.insert(7, f"pipeline_parallel_microbatch_size = {par.micro_batch}")
    return "\n".join(lines)
