"""What each training framework overlaps with what, and how it buckets its collectives.

A framework profile states, for the step model (llmsizer.analysis.step), which communication
runs concurrently with which compute — the difference between a step dominated by data-parallel
traffic and one that hides it — with the defaults each framework's documentation gives or its
published performance recipes use (stated per field). The layouts a framework accepts (ZeRO
stages, schedules, parallelism kinds) are in `Framework` of llmsizer.analysis.planner.

Overlap of bucketed traffic with compute, written once here: G seconds of communication in nb
equal buckets, the i-th ready after i/nb of T seconds of compute and sent one after another,
finish at max(T + G/nb, G + T/nb); what shows beyond T is max(G + T/nb − T, G/nb).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from llmsizer.errors import SpecError

# Framework defaults for gradient buckets (the time model's bucket count and the memory model's
# bucket buffers both read these)
DDP_BUCKET_BYTES = 25 * 2**20  # torch DDP bucket_cap_mb default (25 MiB)
DEEPSPEED_REDUCE_BUCKET = 5e8  # elements: DeepSpeed reduce_bucket_size default
DEEPSPEED_PREFETCH = 5e7  # elements: DeepSpeed stage3_prefetch_bucket_size default
_DDP_ELEMENTS = DDP_BUCKET_BYTES / 2  # a 25 MiB bucket of 2-byte gradients
# FSDP2 mixed precision as torchtitan configures it: gradients reduced in fp32
# (training.mixed_precision_reduce = "float32", torchtitan config_manager.py)
FSDP_REDUCE_BYTES = 4


@dataclass(frozen=True)
class Profile:
    name: str
    # gradient reduction (all-reduce, or reduce-scatter with a sharded optimizer) under backward
    overlap_grad_reduce: bool
    # the sharded optimizer's parameter all-gather under the next step's forward
    overlap_param_gather: bool
    # ZeRO-3 / FSDP: gather the next layer's parameters during this layer's compute
    prefetch_params: bool
    # tensor-parallel all-gathers/reduce-scatters pipelined with the linear layers' products
    # (when on: Transformer Engine's userbuffers, forward and backward, or PyTorch's async TP)
    tp_comm_overlap: bool
    # pipeline send/receive on their own stream (Megatron: automatic with interleaving)
    overlap_p2p: bool
    # what "selective" recomputation re-runs: the attention core (Megatron-LM, Korthikanti et al.
    # 2022) or every other matrix product's output and the element-wise ops around them
    # (torchtitan's per-op SAC)
    selective: str
    # gradients held for the whole step in a persistent buffer (Megatron's contiguous grad
    # buffer, DeepSpeed's partitions) or allocated by the backward and freed by
    # zero_grad(set_to_none=True) (PyTorch's default), so that without accumulation they never
    # coexist with all the activations
    persistent_grads: bool
    # fp32 tensors of the logits' size the loss backward allocates beside the saved ones:
    # Megatron's vocab-parallel cross entropy reuses its saved softmax in place (0); PyTorch's
    # cross_entropy on fp32 logits allocates the gradient and one intermediate (2, measured with
    # torch.distributed._tools.mem_tracker on a transformers Llama: tests/test_verify_memory.py)
    loss_backward_copies: int
    bucket_elements: float  # gradient bucket, elements (see `buckets`)
    bucket_per_dp_rank: float  # … or this many elements per data-parallel rank, if larger
    source: str
    # ZeRO-3 under pipeline parallelism (torch.distributed.pipelining with FSDP2, as torchtitan
    # runs it): a stage's parameters stay gathered from its forward to its backward
    # (reshard_after_forward=False when PP is on), and gradients accumulate unsharded, in the
    # fp32 reduce dtype, until the last micro-batch's backward reduce-scatters them
    # (PipelineStage: set_requires_gradient_sync(last_backward))
    pp_unsharded: bool = False
    # sharded data parallelism (ZeRO-1/2/3) communicates per wrapped unit — one transformer block
    # — rather than in fixed-size buckets (FSDP: each FlatParameter / fully_shard module is one
    # all-gather and one reduce-scatter; pytorch docs notes/fsdp.html)
    per_unit_collectives: bool = False
    # ZeRO-3 as FSDP runs it: the root unit — what no wrapped block holds: the embedding, the
    # final norm and the output head — is not resharded after its forward, so its gathered
    # parameters stay from the forward through the backward beside the blocks' (FSDP1:
    # torch/distributed/fsdp/_runtime_utils.py _post_forward_reshard, "Do not free the root's
    # parameters in the post-forward"; FSDP2: _fully_shard/_fsdp_state.py _lazy_init, "For the
    # root, do not reshard after forward")
    root_gathered: bool = False
    # the fused attention kernel it runs: the generation's measured one ("measured": Transformer
    # Engine's cuDNN / FlashAttention-3 class on Hopper), or FlashAttention-2 (PyTorch's SDPA
    # flash backend, the flash-attn 2 package), which Efficiency.fa2_attention_ratio scales to
    attention: str = "measured"
    # the cross-entropy compiled with the model (torch.compile): kept and allocated as the fused
    # kernel does (graph_saved.Saving.compiled_loss) — torchtitan compiles its loss with
    # --training.compile from 2025 (torchtitan/components/loss.py build_cross_entropy_loss
    # @ e7c0cae; at 9dec370, Dec 2024, train.py still left it eager: "compiling loss function
    # causes CUDA errors, turning off for now")
    compiled_loss: bool = False
    # bytes the loss moves per element of the (rank's) logits, forward and backward, beyond
    # the output head's products (LOSS_BYTES: Megatron's unfused vocab-parallel cross entropy,
    # PyTorch's eager cross_entropy on fp32 logits, or a fused kernel); a compiled loss
    # (compiled_loss) runs as the fused one
    loss: str = "fused"
    # how the routed experts' products are launched: one GEMM kernel per local expert
    # ("per-expert": Transformer Engine's GroupedLinear, which Megatron-Core's --moe-grouped-gemm
    # runs, loops over the experts issuing one cuBLAS GEMM each on 4 streams —
    # transformer_engine/common/gemm/cublaslt_gemm.cpp multi_stream_cublas_gemm), or one grouped
    # kernel for all of them ("grouped": torch._grouped_mm / CUTLASS grouped GEMM)
    expert_gemm: str = "grouped"
    # pipeline hand-offs without sequence parallelism: each tensor-parallel rank sends its 1/t
    # share of the (replicated) activation and the receiving stage all-gathers it over NVLink
    # (Megatron-LM's scatter/gather optimization, Narayanan et al. 2021 sec. 4.1, on by default
    # from Megatron-LM@72e4230bb5, Feb 2021, in megatron/p2p_communication.py; Megatron-Core's
    # p2p never had it), or every rank sends the whole tensor (DeepSpeed's pipeline engine,
    # Megatron-Core)
    p2p_scatter_gather: bool = False
    # element-wise ops (norms, rotary, the gated activation) run fused — Transformer Engine's
    # and Megatron's fused kernels, or torch.compile — or as the unfused PyTorch ops a model's
    # code writes (op_costs.EAGER_ELEMENTWISE): torchtitan compiles only with
    # --training.compile (torchtitan docs), plain FSDP runs the model as written
    fused_elementwise: bool = True
    # what TP overlap covers: the backward's communication too (Transformer Engine's
    # userbuffers overlap the data-gradient GEMMs' all-gathers and reduce-scatters), or the
    # forward passes' only: PyTorch's async TP (torch.compile's micro-pipeline pass, which
    # torchtitan's --parallelism.enable_async_tensor_parallel turns on) sped the forward of
    # Llama 3 8B up ~29 % and the whole step ~8 % (PyTorch dev-discuss "Introducing Async Tensor
    # Parallelism in PyTorch", 2024), the forward's share of the step; torchtitan's June 2025
    # tables show 8-9 % in bf16 (benchmarks/asyncTP_llama3_h100_2025-06_torchtitan.md)
    tp_overlap_backward: bool = True
    # pipeline hand-offs on a micro-batch's critical path, in transfers of one activation: 2
    # when a stage's send and receive run together (Megatron's batched send_forward_recv_backward
    # and its mirror: one activation and one gradient each way per micro-batch), 4 when each send
    # and each receive is its own blocking transfer that waits for its peer (DeepSpeed's
    # PipelineEngine runs TrainSchedule's SendGrad, RecvActivation, RecvGrad and SendActivation
    # one after another, deepspeed/runtime/pipe/schedule.py and engine.py; a timeline of that
    # schedule with rendezvous transfers puts 3.7-3.8 of them per micro-batch on the critical
    # path at MT-NLG's and BLOOM's shapes, tests/test_time_mechanisms.py)
    p2p_transfers: int = 2

    @property
    def loss_kind(self) -> str:
        """The cross entropy it runs (LOSS_BYTES): a compiled loss as the fused kernel."""
        return "fused" if self.compiled_loss else self.loss

    @property
    def loss_bytes(self) -> float:
        """Bytes its cross entropy moves per logit element, forward and backward."""
        return LOSS_BYTES[self.loss_kind]

    def buckets(self, params: float, dp: int) -> float:
        """Gradient buckets of `params` parameters at data-parallel size `dp`."""
        size = max(self.bucket_elements, self.bucket_per_dp_rank * dp)
        return max(1.0, float(np.ceil(params / size)))


# Bytes per logit element the cross-entropy moves, forward and backward, counted op by op:
# "megatron-unfused": Megatron's vocab-parallel cross entropy (megatron/core/tensor_parallel/
# cross_entropy.py, and Megatron-DeepSpeed's copy) on logits cast to fp32 (read 2, write 4),
# max (4), subtract the max (4 + 4), exp in place (4 + 4), sum (4), divide in place (4 + 4);
# backward: multiply the saved softmax by the loss gradient in place (4 + 4), cast back to
# bf16 (4 + 2): 52. Megatron-LM's --cross-entropy-loss-fusion is off by default.
# "eager": torch.nn.functional.cross_entropy on fp32 logits (torchtitan's loss before 2025,
# transformers' LlamaForCausalLM, Composer's): the cast (2 + 4), log_softmax's forward kernel
# (aten cunn_SoftMaxForward: a pass for the max, one for the sum of exponentials, one reading
# and writing the output: 16), nll_loss's backward zero-filling its gradient (4),
# log_softmax's backward (a pass for the sum, one reading both and writing: 16), the cast back
# (4 + 2): 48.
# "fused": one kernel each way over the fp32 logits (written, read by the softmax, read by the
# backward: 12), as Megatron's fused cross entropy (Megatron-Bridge GPTModelProvider
# cross_entropy_loss_fusion=True, NeMo's recipes) and a compiled loss run it.
LOSS_BYTES = {"megatron-unfused": 52.0, "eager": 48.0, "fused": 12.0}

# PyTorch's async TP (torch.compile's micro-pipeline pass, Profile.tp_overlap_backward off)
# fuses each all-gather with the product that reads it and each product with the
# reduce-scatter of its output. Under torchao's row-wise FP8 scales only the second fuses: "the
# matmul-reduce-scatters were being fused properly - however, the all-gather-matmul patterns
# were NOT" (pytorch/pytorch#149990, opened 2025-03-25, still open), so the forward's gathers
# run serially. The FP8 recipes this holds for:
ASYNC_TP_UNFUSED_GATHERS = frozenset({"rowwise"})


def async_tp_fuses_gathers(compute_dtype: str, fp8_recipe: str) -> bool:
    """Whether PyTorch's async TP overlaps the forward's all-gathers with their products at
    this precision (ASYNC_TP_UNFUSED_GATHERS)."""
    return not (compute_dtype == "fp8" and fp8_recipe in ASYNC_TP_UNFUSED_GATHERS)


_MEGATRON_SOURCE = (
    "Megatron-LM megatron/training/arguments.py (--overlap-grad-reduce, --overlap-param-gather, "
    "--tp-comm-overlap; P2P overlap automatic with the interleaved schedule) and megatron/core/"
    "distributed/distributed_data_parallel_config.py (bucket = max(40M, 1M·dp) parameters); "
    "the overlap flags as its performance examples set them")
PROFILES: dict[str, Profile] = {
    # ZeRO-3 in Megatron is Megatron-FSDP (--use-megatron-fsdp): per-module parameter
    # all-gathers overlapped with compute (megatron/core/distributed/fsdp/src/README.md,
    # "Communication Overlapping"; --fsdp-double-buffer)
    "megatron": Profile("megatron", True, True, True, False, True, "attention", True, 0, 40e6, 1e6,
                        _MEGATRON_SOURCE + "; Megatron-FSDP overlaps parameter all-gathers and "
                        "gradient reduce-scatters (megatron/core/distributed/fsdp/src/README.md)",
                        expert_gemm="per-expert", loss="megatron-unfused"),
    # NeMo's performance recipes switch on Transformer Engine's userbuffer TP overlap
    "nemo": Profile("nemo", True, True, True, True, True, "attention", True, 0, 40e6, 1e6,
                    _MEGATRON_SOURCE + "; NeMo performance recipes: tp_comm_overlap on; "
                    "Megatron-FSDP overlaps parameter all-gathers and gradient reduce-scatters "
                    "(megatron/core/distributed/fsdp/src/README.md)", expert_gemm="per-expert"),
    # DeepSpeed: overlap_comm defaults to True only for ZeRO-3; reduce_bucket_size 5e8 elements
    # (deepspeed/runtime/zero/config.py)
    "deepspeed": Profile("deepspeed", False, False, True, False, False, "attention", True, 2,
                         DEEPSPEED_REDUCE_BUCKET, 0,
                         "DeepSpeed deepspeed/runtime/zero/config.py: overlap_comm True only for "
                         "stage 3, reduce_bucket_size 5e8, stage3_prefetch_bucket_size 5e7; "
                         "pipeline sends and receives blocking, one at a time "
                         "(deepspeed/runtime/pipe/schedule.py TrainSchedule)", p2p_transfers=4,
                         loss="megatron-unfused"),
    # FSDP (1 and 2, and what is built on them): with SHARD_GRAD_OP / reshard_after_forward=False
    # (ZeRO-2) the sharded parameters are all-gathered unit by unit in the next forward, prefetched
    # under the previous unit's compute (pytorch docs notes/fsdp.html "FSDP Prefetch Nuances"), so
    # the parameter gather overlaps the forward.
    # FSDP2: backward prefetch always, forward keeps two all-gathers in flight; DDP's 25 MiB
    # buckets for replicated gradients (pytorch docs notes/fsdp.html; torch DDP bucket_cap_mb)
    "fsdp2": Profile("fsdp2", True, True, True, False, False, "attention", False, 2,
                     _DDP_ELEMENTS, 0,
                     "PyTorch FSDP2 (fully_shard): per-layer all-gather prefetch and reduce-"
                     "scatter under backward; DDP bucket_cap_mb 25; the model's element-wise "
                     "ops unfused unless +compile", per_unit_collectives=True,
                     fused_elementwise=False, tp_overlap_backward=False, root_gathered=True,
                     loss="eager"),
    "fsdp1": Profile("fsdp1", True, True, True, False, False, "attention", False, 2,
                     _DDP_ELEMENTS, 0,
                     "PyTorch FSDP1: BACKWARD_PRE prefetch, forward prefetch implicit, "
                     "limit_all_gathers; the model's element-wise ops unfused unless +compile",
                     per_unit_collectives=True, fused_elementwise=False,
                     tp_overlap_backward=False, root_gathered=True, loss="eager"),
    # torchtitan = FSDP2 (+ TP/PP); async TP is opt-in (torch.compile + symmetric memory); its
    # selective activation checkpointing "op" policy saves the outputs of attention and of every
    # other matmul, so backward re-runs the rest (torchtitan/models/llama3/infra/parallelize.py,
    # _apply_ac_to_transformer_block: mm outputs saved only on odd counts)
    "torchtitan": Profile("torchtitan", True, True, True, False, False, "every-other-matmul",
                          False, 2, _DDP_ELEMENTS, 0,
                          "pytorch/torchtitan docs/fsdp.md; async TP opt-in "
                          "(benchmarks/asyncTP_llama3_h100_2025-06_torchtitan.md); op-level "
                          "selective AC (models/llama3/infra/parallelize.py); with PP, FSDP "
                          "does not reshard after forward (parallelize_llama.py apply_fsdp) and "
                          "gradients sync only on the last backward (torch.distributed."
                          "pipelining stage.py); attention through PyTorch's SDPA, whose CUDA "
                          "backend order puts FlashAttention-2 first and cuDNN last "
                          "(aten/src/ATen/native/transformers/cuda/sdp_utils.cpp, 2024-25)",
                          pp_unsharded=True, per_unit_collectives=True, attention="fa2",
                          fused_elementwise=False, tp_overlap_backward=False,
                          root_gathered=True, loss="eager"),
    # llm-foundry trains with Composer's FSDP1 (FULL_SHARD, activation checkpointing options)
    "foundry": Profile("foundry", True, True, True, False, False, "attention", False, 2,
                       _DDP_ELEMENTS, 0,
                       "mosaicml/llm-foundry scripts/train/yamls: Composer FSDP (FULL_SHARD); "
                       "MPT attn_impl 'flash' = the flash-attn 2 package",
                       per_unit_collectives=True, attention="fa2", fused_elementwise=False,
                       tp_overlap_backward=False, root_gathered=True, loss="eager"),
}
DEFAULT = "megatron"
# what a validation case's "framework" may name that has no profile of its own
ALIASES = {"maxtext": "fsdp2", "other": "megatron", "colossalai": "deepspeed",
           "nanotron": "megatron"}


# switches a run may turn on or off over its framework's defaults: "megatron+tp-comm-overlap",
# "deepspeed+overlap-grad-reduce", "nemo-tp-comm-overlap" (a leading "-" turns one off)
SWITCHES = {"tp-comm-overlap": "tp_comm_overlap", "overlap-grad-reduce": "overlap_grad_reduce",
            "overlap-param-gather": "overlap_param_gather", "overlap-p2p": "overlap_p2p",
            "prefetch-params": "prefetch_params", "compile-loss": "compiled_loss",
            "p2p-scatter-gather": "p2p_scatter_gather", "compile": "fused_elementwise"}


def _split_switches(name: str) -> tuple[str, list[str]]:
    """("megatron", ["+tp-comm-overlap"]) from "megatron+tp-comm-overlap" (aliases resolved)."""
    import re

    base, *mods = re.split(r"(?=[+-](?:" + "|".join(SWITCHES) + r")\b)", name.lower())
    return ALIASES.get(base, base), mods


def base_name(name: str) -> str:
    """The framework a name with switches names ("megatron+tp-comm-overlap" -> "megatron")."""
    return _split_switches(name)[0]


@lru_cache(maxsize=256)
def profile(name: str) -> Profile:
    """The profile called `name` (case-insensitive), with any "+switch"/"-switch" suffixes
    applied; an error naming the choices otherwise."""
    key, mods = _split_switches(name)
    if key not in PROFILES:
        raise SpecError("framework", name, "one of " + ", ".join(PROFILES)
                        + " (optionally +/-" + ", +/-".join(SWITCHES) + ")")
    prof = PROFILES[key]
    if not mods:
        return prof
    changes: dict[str, bool] = {SWITCHES[m[1:]]: m[0] == "+" for m in mods}
    return replace(prof, name=key + "".join(mods), **changes)  # type: ignore[arg-type]


def saving_recompute(framework: str, recompute: str) -> str:
    """The recomputation the activation model applies for the user's `--recompute` under
    `framework`: "selective" means torchtitan's per-op policy ("selective-op") there, the
    attention core elsewhere."""
    if recompute == "selective" and profile(framework).selective == "every-other-matmul":
        return "selective-op"
    return recompute


def exposed(comm: np.ndarray | float, compute: np.ndarray | float,
            buckets: np.ndarray | float) -> np.ndarray:
    """Seconds of `comm` (in `buckets` equal parts, each ready after its share of `compute`)
    that show beyond `compute`: max(G + T/nb − T, G/nb) (module docstring)."""
    g, t, nb = (np.asarray(x, dtype=float) for x in (comm, compute, buckets))
    return np.maximum(g + t / nb - t, g / nb) * (g > 0)
