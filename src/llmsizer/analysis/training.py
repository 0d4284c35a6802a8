"""Training step time, throughput, MFU/HFU and time-to-train.

step time = (m + (pp-1)/V) · t_microbatch                (pipeline with its bubble; Narayanan 2021)
          + exposed data-parallel communication          (what the backward cannot hide)
          + optimizer step                               (memory-bound update of the shard)
t_microbatch = the slowest stage's forward + backward (+ recomputation) of one micro-batch, each op
through the roofline and efficiency model (llmsizer.analysis.efficiency), plus its tensor-,
expert- and context-parallel communication and pipeline hand-offs. The arithmetic lives in
llmsizer.analysis.step, shared with the planner.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmsizer.analysis import comm, frameworks, step
from llmsizer.analysis.cluster import Cluster
from llmsizer.analysis.efficiency import Efficiency
from llmsizer.analysis.flops import StepFlops, training_step_flops
from llmsizer.analysis.layer_costs import recomputes_gathers
from llmsizer.analysis.memory import TrainingMemory, group_and_variants, memory_from_result
from llmsizer.analysis.op_costs import (
    CUDA_GRAPHS,
    EAGER_ELEMENTWISE,
    FP8_RECIPES,
    FP8_RESCALE_BYTES,
    fp8_gathers,
)
from llmsizer.errors import SpecError
from llmsizer.graph import build_graph
from llmsizer.specs.model import ModelSpec
from llmsizer.specs.parallel import Parallelism
from llmsizer.specs.precision import Optimizer, TrainingPrecision

__all__ = ["Cluster", "StepTime", "TrainingResult", "train_step"]


@dataclass(frozen=True)
class StepTime:
    compute_s: float  # forward + backward + recomputation of all micro-batches, no bubble
    bubble_s: float
    tp_comm_s: float
    ep_comm_s: float
    cp_comm_s: float
    pp_comm_s: float
    dp_comm_exposed_s: float
    dp_comm_total_s: float
    optimizer_s: float
    tp_comm_total_s: float = 0.0  # before the framework's overlap (tp_comm_s: what shows)
    pp_comm_total_s: float = 0.0
    ep_comm_total_s: float = 0.0
    # compute lost while hidden collectives hold SMs beside it (Efficiency.overlap_slowdown)
    contention_s: float = 0.0

    def hidden(self) -> dict[str, tuple[float, float]]:
        """Communication terms as (total, exposed) seconds: what the framework hides is the
        difference."""
        return {"tensor-parallel": (self.tp_comm_total_s, self.tp_comm_s),
                "pipeline p2p": (self.pp_comm_total_s, self.pp_comm_s),
                "expert all-to-all": (max(self.ep_comm_total_s, self.ep_comm_s), self.ep_comm_s),
                "data-parallel": (self.dp_comm_total_s, self.dp_comm_exposed_s)}

    @property
    def total_s(self) -> float:
        return (self.compute_s + self.bubble_s + self.tp_comm_s + self.ep_comm_s + self.cp_comm_s
                + self.pp_comm_s + self.dp_comm_exposed_s + self.optimizer_s + self.contention_s)


@dataclass(frozen=True)
class TrainingResult:
    spec: ModelSpec
    par: Parallelism
    seq: int
    memory: TrainingMemory
    capacity_bytes: float
    step_flops: StepFlops  # for the global batch
    time: StepTime
    peak_flops: float
    assumptions: dict[str, str] = field(default_factory=dict)
    precision: TrainingPrecision | None = None
    opt: Optimizer | None = None
    activations: str = "megatron"
    flash: bool = True
    framework: str = frameworks.DEFAULT

    @property
    def fits(self) -> bool:
        return self.memory.peak.total <= self.capacity_bytes

    @property
    def shortfall_bytes(self) -> float:
        return max(0.0, self.memory.peak.total - self.capacity_bytes)

    @property
    def tokens_per_step(self) -> int:
        return self.par.global_batch * self.seq

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_step / self.time.total_s

    @property
    def mfu(self) -> float:
        return self.step_flops.model_flops / (self.time.total_s * self.par.world_size
                                              * self.peak_flops)

    @property
    def hfu(self) -> float:
        return self.step_flops.hardware_flops / (self.time.total_s * self.par.world_size
                                                 * self.peak_flops)


# the busiest expert-parallel rank's tokens over the mean: at most every token on one rank of a
# 64-way expert-parallel group
MAX_MOE_IMBALANCE = 64
# the frameworks that implement the expert all-to-all overlap (Megatron-Core's)
A2A_OVERLAP_FRAMEWORKS = tuple(n for n in frameworks.PROFILES
                               if n.startswith(("megatron", "nemo")))


def train_step(spec: ModelSpec, par: Parallelism, precision: TrainingPrecision, opt: Optimizer,
               seq: int, cluster: Cluster, eff: Efficiency | None = None, *,
               activations: str = "megatron", attention_backward: str = "flash",
               mfu_attention: str = "auto", framework_overhead: float | None = None,
               dp_overlap: bool = True, framework: str = frameworks.DEFAULT,
               fp8_recipe: str = "delayed", moe_imbalance: float = 1.0,
               moe_dispatcher: str = "alltoall", moe_a2a_overlap: bool = False,
               cuda_graphs: str = "none") -> TrainingResult:
    """One training step of `par` (see the module docstring). `framework` names the profile
    whose overlaps apply (llmsizer.analysis.frameworks); `fp8_recipe` what FP8 casts cost;
    `moe_imbalance` the busiest expert-parallel rank's tokens over the mean (1: balanced);
    `moe_dispatcher` how tokens reach their experts (comm.MOE_DISPATCHERS); `moe_a2a_overlap`
    Megatron-Core's expert all-to-all overlap across micro-batches; `cuda_graphs` what CUDA
    graphs capture (op_costs.CUDA_GRAPHS), whose kernels then cost no launch each."""
    eff = eff or Efficiency.for_accelerator(cluster.accelerator)
    prof = frameworks.profile(framework)
    if fp8_recipe not in FP8_RECIPES:
        raise SpecError("fp8_recipe", fp8_recipe, "one of " + ", ".join(FP8_RECIPES))
    if not 1 <= moe_imbalance <= MAX_MOE_IMBALANCE:  # NaN fails too
        raise SpecError("moe_imbalance", moe_imbalance,
                        f"a number from 1 (balanced) to {MAX_MOE_IMBALANCE}")
    check_moe_runtime(moe_dispatcher, moe_a2a_overlap, prof.name, par)
    if cuda_graphs not in CUDA_GRAPHS:
        raise SpecError("cuda_graphs", cuda_graphs, "one of " + ", ".join(CUDA_GRAPHS))
    st = step.Setting(spec, seq, precision, opt, cluster, eff, activations, attention_backward,
                      step.DEFAULT_FRAMEWORK_OVERHEAD if framework_overhead is None
                      else framework_overhead, dp_overlap, prof.name, fp8_recipe,
                      moe_imbalance, moe_dispatcher, moe_a2a_overlap, cuda_graphs)
    g, v = group_and_variants(par)
    r = step.evaluate(st, g, v)
    memory = memory_from_result(st, g, r)
    time = StepTime(
        compute_s=float(r.compute_s[0]), bubble_s=float(r.bubble_s[0]),
        tp_comm_s=float(r.tp_comm_s[0]), ep_comm_s=float(r.ep_comm_s[0]),
        cp_comm_s=float(r.cp_comm_s[0]), pp_comm_s=float(r.pp_comm_s[0]),
        dp_comm_exposed_s=float(r.dp_comm_exposed_s[0]),
        dp_comm_total_s=float(r.dp_comm_total_s[0]), optimizer_s=float(r.optimizer_s[0]),
        tp_comm_total_s=float(r.tp_comm_total_s[0]), pp_comm_total_s=float(r.pp_comm_total_s[0]),
        ep_comm_total_s=float(r.ep_comm_total_s[0]), contention_s=float(r.contention_s[0]))
    if mfu_attention == "auto":
        # The numerator counts the attention pairs the timed kernels compute: flash kernels skip
        # masked tiles (causal), eager ones compute the full square (dense). Counting dense pairs
        # against causal time is how an MFU above 100 % comes about.
        mfu_attention = "causal" if attention_backward == "flash" else "dense"
    step_flops = training_step_flops(
        spec, par.global_batch, seq, par.recompute,  # type: ignore[arg-type]
        mfu_attention,  # type: ignore[arg-type]
        "flash" if attention_backward == "flash" else "eager")
    assumptions = eff.describe()
    assumptions |= memory.assumptions
    assumptions["attention"] = (f"{attention_backward} kernels (time); MFU counts {mfu_attention} "
                                "attention")
    if attention_backward != "flash":
        assumptions["attention"] += (
            "; unfused: Q·Kᵀ and P·V as batched products at the matrix-product ceiling, the "
            "softmax's read and write of the a·s² scores between them (the attention kernels' "
            "efficiency above is for flash kernels)")
    assumptions["loss"] = (
        f"{'compiled' if prof.compiled_loss else prof.loss} cross entropy: {prof.loss_bytes:g} "
        "bytes per logit element, forward and backward, beside the output head's products "
        "(frameworks.LOSS_BYTES)")
    gathers_fuse = frameworks.async_tp_fuses_gathers(precision.compute_dtype, fp8_recipe)
    assumptions["framework"] = (f"{prof.name}: {_overlaps(prof, dp_overlap, gathers_fuse)} "
                                f"({prof.source})")
    if prof.attention == "fa2" and eff.fa2_attention_ratio < 1:
        assumptions["attention kernel"] = (
            f"FlashAttention-2 ({prof.name}): {eff.fa2_attention_ratio:.3f} of the generation's "
            "measured kernel (catalog/data/generations.json fa2_attention_ratio)")
    if not prof.fused_elementwise:
        assumptions["element-wise ops"] = (
            f"unfused PyTorch ops ({prof.name}; +compile fuses them): RMSNorm moves "
            f"{EAGER_ELEMENTWISE['rmsnorm']:g}x, rotary {EAGER_ELEMENTWISE['rotary']:g}x, the "
            f"gated activation {EAGER_ELEMENTWISE['gated']:.2f}x a fused kernel's bytes "
            "(op_costs.EAGER_ELEMENTWISE)")
    attn_op = next((layer.attention for layer in build_graph(spec).layers if layer.attention),
                   None)
    if attn_op is not None and attention_backward == "flash":
        factor = eff.head_dim_factor(attn_op.head_dim, prof.attention == "fa2")
        if factor < 1:
            assumptions["attention head dimension"] = (
                f"{attn_op.head_dim:g}: {factor:.3f} of the kernel's efficiency at 128 "
                "(catalog/data/generations.json attention_half_head_dim)")
    if spec.moe is not None:
        assumptions["moe"] = ("balanced routing" if moe_imbalance == 1 else
                              f"the busiest expert-parallel rank gets {moe_imbalance:g}× the mean "
                              "tokens (its experts' products and all-to-all gate the step)") + (
            "; dispatch by NCCL all-to-all, one copy per (token, expert)"
            if moe_dispatcher == "alltoall" else
            f"; dispatch by {moe_dispatcher}: one copy per destination rank, across nodes one "
            "per destination node (deepseek-ai/DeepEP docs/legacy.md)") + (
            "; all-to-all of each micro-batch under another's compute (Megatron-Core "
            "--overlap-moe-expert-parallel-comm)" if moe_a2a_overlap else "")
    assumptions["kernel launches"] = _launches(st, par)
    if recomputes_gathers(prof.name, par.tp, par.sequence_parallel, par.recompute):
        assumptions["recomputation"] = (
            "per-op selective: every other product and the element-wise ops rebuilt, and the "
            "forward's tensor-parallel all-gathers run again (torchtitan saves reduce-scatter "
            "outputs, not all-gather ones)")
    if precision.compute_dtype == "fp8":
        assumptions["fp8"] = (f"{fp8_recipe} scaling: linear layers' products in FP8, attention "
                              "and the output layer in bf16, casts as memory streams (one for "
                              "the input q/k/v or gate/up share)" + (
                                  "; sequence-parallel inputs cast on their shard and "
                                  "all-gathered in FP8" if fp8_gathers(fp8_recipe, par.tp,
                                                                       par.sequence_parallel)
                                  else "") + (
            "; row-wise scales applied by a kernel after each backward product (torchao: "
            "cuBLAS tensorwise GEMM, then the scaling)" if fp8_recipe in FP8_RESCALE_BYTES
            else ""))
    assumptions["inter-node"] = (f"{cluster.nic_bytes_s / 1e9:g} GB/s per GPU per direction "
                                 "(one NIC per GPU; hierarchical collectives)")
    return TrainingResult(spec, par, seq, memory, cluster.accelerator.memory_bytes, step_flops,
                          time, cluster.accelerator.peak(precision.compute_dtype), assumptions,
                          precision, opt, activations, attention_backward == "flash", prof.name)


def check_moe_runtime(dispatcher: str, a2a_overlap: bool, framework: str,
                      par: Parallelism | None = None) -> None:
    """The MoE dispatcher and all-to-all overlap settings, as the frameworks accept them; with
    a layout `par`, what Megatron-Core's overlap requires of it (transformer_config.py: a
    pipeline only with virtual stages, no full recomputation)."""
    if dispatcher not in comm.MOE_DISPATCHERS:
        raise SpecError("moe_dispatcher", dispatcher, "one of " + ", ".join(comm.MOE_DISPATCHERS))
    if not a2a_overlap:
        return
    if frameworks.base_name(framework) not in A2A_OVERLAP_FRAMEWORKS:
        raise SpecError("moe_a2a_overlap", a2a_overlap,
                        "only with a Megatron-Core framework (" + ", ".join(
                            A2A_OVERLAP_FRAMEWORKS) + f"), not {framework}")
    if par is None:
        return
    if par.pp > 1 and par.schedule != "interleaved":
        raise SpecError("moe_a2a_overlap", a2a_overlap, "with pipeline parallelism only under "
                        f"an interleaved schedule (Megatron-Core), not {par.schedule}")
    if par.recompute == "full":
        raise SpecError("moe_a2a_overlap", a2a_overlap, "without full recomputation "
                        "(Megatron-Core refuses the combination)")


def _launches(st: step.Setting, par: Parallelism) -> str:
    """The kernels a micro-batch launches per layer and what each launch costs, in words."""
    from llmsizer.analysis.layer_costs import setting_kernels

    counts = sorted({setting_kernels(st, i, par.ep) for i in range(st.spec.num_layers)})
    kinds = " or ".join(f"{f} forward + {b} backward" for f, b in counts)
    per_expert = frameworks.profile(st.framework).expert_gemm == "per-expert"
    return (f"{kinds} kernels per layer and micro-batch, "
            f"{st.eff.kernel_overhead_s * 1e6:.3g} µs of launch and tail each"
            + ("" if st.cuda_graphs == "none" else
               f" (CUDA graphs: {st.cuda_graphs}; captured kernels cost none)")
            + ("; one GEMM launched per local expert (Transformer Engine GroupedLinear)"
               if st.spec.moe is not None and per_expert else ""))


def _overlaps(prof: frameworks.Profile, dp_overlap: bool, gathers_fuse: bool = True) -> str:
    """The profile's overlaps in words (`gathers_fuse`: frameworks.async_tp_fuses_gathers)."""
    if not dp_overlap:
        return "no data-parallel overlap (--no-dp-overlap)"
    parts = [name for name, on in (
        ("gradient reduction under backward", prof.overlap_grad_reduce),
        ("parameter gather under the next forward", prof.overlap_param_gather),
        ("ZeRO-3 per-layer prefetch", prof.prefetch_params),
        ("TP communication under the linear layers" + (
            "" if prof.tp_overlap_backward else " (forward passes only: async TP" + (
                "" if gathers_fuse else "; its all-gathers serial: they do not fuse with the "
                "products under row-wise FP8 scales, pytorch/pytorch#149990") + ")"),
         prof.tp_comm_overlap),
        ("pipeline p2p on its own stream (interleaved)", prof.overlap_p2p)) if on]
    said = "overlaps " + ", ".join(parts) if parts else "no overlap"
    if prof.p2p_transfers != 2:
        said += (f"; pipeline sends and receives one at a time, blocking: {prof.p2p_transfers} "
                 "activation transfers per micro-batch on the critical path")
    return said
