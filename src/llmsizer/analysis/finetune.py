"""Fine-tuning on one GPU or many: full, LoRA, DoRA and QLoRA memory and step time.

Full fine-tuning is training: memory and time come from llmsizer.analysis.training (ZeRO stages
and ZeRO-Offload accepted on one GPU, as DeepSpeed runs them). With adapters (Hu et al. 2021,
LoRA; Liu et al. 2024, DoRA; Dettmers et al. 2023, QLoRA) the base model is frozen:

- weights: the base in bf16, int8 or 4-bit NF4/FP4 as bitsandbytes stores it
  (llmsizer.specs.precision.FrozenFormat; embeddings, norms, biases and lm_head stay 16-bit, as
  transformers' bitsandbytes integration keeps them), plus the adapters in fp32 (PEFT's
  autocast_adapter_dtype);
- gradients and optimizer states for the adapters only (fp32; no separate master copy);
- activations: what a frozen layer still keeps for the gradient of its input, without the inputs
  of frozen projections (their weight gradients are not computed) and the normalised outputs of
  frozen norms, plus each adapter's own saved tensors: the fp32 copy of its input that PEFT casts
  to the adapter dtype (one per adapter when the model runs in 16 bits; shared by adapters
  reading the same tensor in fp32 models) and the rank-wide input of B (measured with
  saved_tensors_hooks, tests/test_verify_peft.py);
- time: the full step's compute without the frozen weights' gradient products, plus the
  adapters' products, plus dequantizing each 4-bit/8-bit weight before its forward and backward
  product (bitsandbytes dequantizes to the compute dtype, then multiplies), plus the adapters'
  optimizer step.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from llmsizer.analysis.activations import layer_activations, output_activations
from llmsizer.analysis.cluster import Cluster
from llmsizer.analysis.efficiency import Efficiency, gemm_efficiency, op_time
from llmsizer.analysis.finetune_targets import Adapter, adapters
from llmsizer.analysis.frameworks import DDP_BUCKET_BYTES
from llmsizer.analysis.op_costs import linear_time
from llmsizer.analysis.params import count_params
from llmsizer.analysis.training import TrainingResult, train_step
from llmsizer.errors import SpecError
from llmsizer.graph import Gemm, Op, build_graph
from llmsizer.specs.model import ModelSpec
from llmsizer.specs.parallel import Parallelism
from llmsizer.specs.precision import (
    DOUBLE_QUANT_SHARED_BYTES,
    FrozenFormat,
    Optimizer,
    TrainingPrecision,
    frozen_format,
)

Method = Literal["full", "lora", "qlora", "dora"]
METHODS = ("full", "lora", "qlora", "dora")
ADAPTER_BYTES = 4  # PEFT casts adapters to fp32 under a 16-bit base (autocast_adapter_dtype)
DDP_BUCKETS = 2 * DDP_BUCKET_BYTES  # torch DDP: two 25 MiB gradient buckets in flight
# Inputs that feed several adapters as one tensor (fp32 models share one copy among them).
_SHARED_INPUT = {"q_proj": "attn", "k_proj": "attn", "v_proj": "attn", "q_a_proj": "attn",
                 "kv_a_proj": "attn", "in_proj_qkvz": "mixer", "in_proj_ba": "mixer",
                 "in_proj": "mixer", "gate_proj": "ffn", "up_proj": "ffn"}
# Saved tensors only a trainable weight needs (frozen: not kept).
_WEIGHT_GRAD_ONLY = {
    "hf": ("attention RMSNorm normalised output", "MLP RMSNorm normalised output",
           "Q/K/V projection input", "gate/up projection input", "down projection input"),
    "megatron": ("QKV projection input", "MLP input", "down projection input"),
}


@dataclass(frozen=True)
class FineTune:
    """What is trained and how the frozen base is stored."""

    method: Method = "lora"
    rank: int = 16
    alpha: float = 32
    targets: tuple[str, ...] = ("all-linear",)
    base: FrozenFormat = field(default_factory=lambda: frozen_format("bf16"))
    model_type: str = "llama"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SpecError("method", self.method, "full, lora, qlora or dora")
        if not isinstance(self.rank, int) or not 1 <= self.rank <= 65536:
            raise SpecError("lora_rank", self.rank, "an integer from 1 to 65,536")

    @property
    def dora(self) -> bool:
        return self.method == "dora"

    @classmethod
    def of(cls, method: str, *, rank: int = 16, alpha: float = 32,
           targets: tuple[str, ...] = ("all-linear",), base: str | None = None,
           double_quant: bool = True, model_type: str = "llama") -> FineTune:
        if method not in METHODS:
            raise SpecError("method", method, "full, lora, qlora or dora")
        default = "nf4" if method == "qlora" else "bf16"
        fmt = frozen_format(base or default, double_quant)
        if method == "qlora" and fmt.bits != 4:
            raise SpecError("base_weights", base, "nf4 or fp4 with --method qlora")
        return cls(method, rank, alpha, targets, fmt, model_type)  # type: ignore[arg-type]


@dataclass(frozen=True)
class FineTuneResult:
    ft: FineTune
    spec: ModelSpec
    par: Parallelism
    seq: int
    trainable_params: int
    total_params: int
    adapters: tuple[Adapter, ...]
    memory: dict[str, float]  # weights, gradients, optimizer, activations, other, total
    memory_parts: dict[str, float]
    host_bytes: float
    nvme_bytes: float
    capacity_bytes: float
    step_time_s: float
    step_parts_s: dict[str, float]
    training: TrainingResult  # the full-training evaluation of the same layout
    assumptions: dict[str, str]

    @property
    def fits(self) -> bool:
        return self.memory["total"] <= self.capacity_bytes

    @property
    def shortfall_bytes(self) -> float:
        return max(0.0, self.memory["total"] - self.capacity_bytes)

    @property
    def tokens_per_step(self) -> int:
        return self.par.global_batch * self.seq

    def time_to_train_s(self, tokens: float) -> float:
        return tokens / self.tokens_per_step * self.step_time_s


def default_activations(spec: ModelSpec) -> str:
    """Fine-tuning runs Hugging Face models: their measured convention where it applies."""
    return "hf-sdpa" if spec.ffn_kind == "gated" and spec.norm == "rmsnorm" else "megatron"


def _quantized(op: Op) -> bool:
    """transformers' bitsandbytes integration replaces every nn.Linear but the output head."""
    return op.kind in ("linear", "router") and op.name != "lm_head" and bool(op.weights)


def frozen_weight_bytes(spec: ModelSpec, fmt: FrozenFormat) -> tuple[float, float]:
    """(bytes of the frozen base on one device, of which in the quantized linear weights)."""
    total = quant = 0.0
    for _, op in build_graph(spec).all_ops():
        for w in op.weights:
            if fmt.bits < 16 and _quantized(op) and w.name == "weight" and len(w.shape) == 2:
                b = op.instances * fmt.tensor_bytes(*w.shape)
                quant += b
            else:
                b = op.instances * w.numel * (fmt.bits // 8 if fmt.bits >= 16 else 2)
            total += b
    if fmt.bits == 4 and fmt.double_quant:
        total += DOUBLE_QUANT_SHARED_BYTES
        quant += DOUBLE_QUANT_SHARED_BYTES
    return total, quant


def _adapter_rows(a: Adapter, tokens: float) -> float:
    """Rows an adapter's products see: each token reaches top-k of E experts."""
    return tokens * a.module.active if a.module.instances > 1 else tokens


def adapter_activation_bytes(ads: list[Adapter], tokens: float, act_bytes: float,
                             attention_output_kept: bool = False) -> float:
    """The adapters' saved tensors in one layer for `tokens` tokens: the fp32 copy of each
    input (shared by adapters reading one tensor when no cast happens; in fp32 the attention
    output a fused kernel keeps is o_proj's input already) and B's rank-wide input; DoRA also
    keeps its base and adapter outputs (an estimate, not measured)."""
    total = 0.0
    shared: set[str] = {"attn_out"} if attention_output_kept else set()
    for a in ads:
        rows = _adapter_rows(a, tokens)
        leaf_op = a.module.ops[0].rsplit(".", 1)[-1]
        group = _SHARED_INPUT.get(leaf_op, "attn_out" if leaf_op == "o_proj" else None)
        if act_bytes != ADAPTER_BYTES or group is None or group not in shared:
            total += ADAPTER_BYTES * rows * a.module.fan_in
            if group is not None:
                shared.add(group)
        total += ADAPTER_BYTES * rows * a.rank
        if a.dora:
            total += (ADAPTER_BYTES + act_bytes) * rows * a.module.fan_out
    return total


def lora_layer_bytes(spec: ModelSpec, index: int, ads: list[Adapter], batch: int, seq: int,
                     convention: str, act_bytes: float, recompute: str) -> float:
    """Bytes one layer keeps for backward with a frozen base and these adapters.

    The first layer's input comes from a frozen embedding and needs no gradient: its first norm
    keeps nothing (unless recomputation makes the input require grad, as transformers'
    gradient checkpointing does with enable_input_require_grads)."""
    base = layer_activations(spec, batch, seq, convention=convention, act_bytes=act_bytes,
                             recompute=recompute, moe_layer=spec.is_moe_layer(index), flash=True)
    if recompute == "full":
        return base.bytes
    family = "megatron" if convention == "megatron" else "hf"
    drop = set(_WEIGHT_GRAD_ONLY[family])
    if convention == "hf-eager":
        drop.add("output projection input")  # kept only by o_proj; SDPA keeps its own output
    if index == 0:
        drop |= {"attention RMSNorm fp32 input copy", "attention RMSNorm fp32 rsqrt",
                 "attention LayerNorm input"}
    kept = sum(s.bytes for s in base.saved if s.name not in drop)
    return kept + adapter_activation_bytes(ads, batch * seq, act_bytes,
                                           attention_output_kept=convention != "hf-eager")


def lora_output_bytes(spec: ModelSpec, batch: int, seq: int, convention: str,
                      act_bytes: float, recompute: str) -> float:
    """Outside the layers with a frozen embedding and head: no token ids for the embedding's
    gradient, no lm_head input, no normalised output of the final norm."""
    out = output_activations(spec, batch, seq, convention=convention, act_bytes=act_bytes,
                             recompute=recompute)
    total = out.bytes
    for s in out.saved:
        if s.name in ("input ids (int64)", "lm_head input", "output projection input"):
            total -= s.bytes
        elif s.name.startswith("final RMSNorm"):
            total -= s.activation_bytes  # the normalised output: kept only for the weight's grad
    return total


def _layer_adapters(spec: ModelSpec, ads: list[Adapter]) -> dict[int, list[Adapter]]:
    """Adapters of each layer (an adapter spans the layers of one kind)."""
    g = build_graph(spec)
    by_layer: dict[int, list[Adapter]] = {i: [] for i in range(spec.num_layers)}
    for a in ads:
        comps = set(a.module.ops)
        for layer in g.layers:
            if id(layer.ops) == a.module.kind_id and any(op.component in comps
                                                         for op in layer.ops):
                by_layer[layer.index].append(a)
    return by_layer


def _adapter_time(a: Adapter, tokens: float, cluster: Cluster, eff: Efficiency,
                  peak: float) -> float:
    """Forward + backward (input and weight gradients) of A then B on one device."""
    acc = cluster.accelerator
    rows = _adapter_rows(a, tokens) / max(1, a.module.instances)
    t = 0.0
    for k, n in ((a.module.fan_in, a.rank), (a.rank, a.module.fan_out)):
        g = Gemm(rows, k, n, a.module.instances)
        t += 3 * op_time(g.flops, ADAPTER_BYTES * (g.weight_elements + g.activation_elements),
                         peak, acc.memory_bandwidth_bytes_s, gemm_efficiency(g, eff, acc), eff)
    return t * a.module.layers


def finetune(spec: ModelSpec, ft: FineTune, par: Parallelism, precision: TrainingPrecision,
             opt: Optimizer, seq: int, cluster: Cluster, eff: Efficiency | None = None, *,
             activations: str | None = None,
             framework_overhead: float | None = None) -> FineTuneResult:
    """Memory per device and step time of fine-tuning `spec` as `ft` on `par`."""
    eff = eff or Efficiency.for_accelerator(cluster.accelerator)
    conv = activations or default_activations(spec)
    if par.tp * par.pp * par.cp * par.ep != 1 and ft.method != "full":
        raise SpecError("gpus", par.world_size, "data parallelism only with adapters (PEFT)")
    full = train_step(spec, par, precision, opt, seq, cluster, eff, activations=conv,
                      framework_overhead=framework_overhead)
    total = count_params(spec).total
    peak = full.memory.peak
    assumptions = dict(full.assumptions)
    if ft.method == "full":
        mem = {"weights": peak.weights, "gradients": peak.gradients,
               "optimizer": peak.optimizer, "activations": peak.activations,
               "other": peak.other}
        mem["total"] = sum(mem.values())
        t = full.time
        parts = {"compute": t.compute_s + t.bubble_s + t.contention_s, "communication": t.tp_comm_s
                 + t.ep_comm_s + t.cp_comm_s + t.pp_comm_s + t.dp_comm_exposed_s,
                 "optimizer": t.optimizer_s}
        return FineTuneResult(ft, spec, par, seq, total, total, (), mem, dict(peak.other_parts),
                              peak.host_bytes, peak.nvme_bytes, full.capacity_bytes,
                              t.total_s, parts, full, assumptions)

    ads = adapters(spec, ft.model_type, ft.targets, ft.rank, ft.dora)
    trainable = sum(a.params for a in ads)
    e = 4 if precision.compute_dtype == "fp32" else 2
    mb, n_d = par.micro_batch, par.dp
    frozen, quant = frozen_weight_bytes(spec, ft.base)
    weights = frozen + ADAPTER_BYTES * trainable
    grads = ADAPTER_BYTES * trainable / (n_d if par.zero >= 2 else 1)
    optim = opt.state_bytes(replace(precision, optimizer_state_dtype_bytes=4)) * trainable / (
        n_d if par.zero >= 1 else 1)
    host = 0.0
    if "optimizer" in par.offload:
        host, optim, grads = optim + grads, 0.0, 0.0
    by_layer = _layer_adapters(spec, ads)
    acts = sum(lora_layer_bytes(spec, i, by_layer[i], mb, seq, conv, e, par.recompute)
               for i in range(spec.num_layers))
    acts += lora_output_bytes(spec, mb, seq, conv, e, par.recompute)
    other = {"framework overhead": peak.other_parts.get("framework overhead", 0.0)}
    if par.recompute == "full":
        other["recompute working set"] = max(
            lora_layer_bytes(spec, i, by_layer[i], mb, seq, conv, e, "none")
            for i in range(spec.num_layers))
    g = build_graph(spec)
    if ft.base.bits < 16:
        # One weight dequantized to the compute dtype at a time (bitsandbytes dequantize_4bit).
        other["dequantized weight"] = 2 * max(
            w.numel for _, op in g.all_ops() if _quantized(op) for w in op.weights)
    if n_d > 1:
        other["gradient buckets"] = min(DDP_BUCKETS, ADAPTER_BYTES * trainable)
    mem = {"weights": weights, "gradients": grads, "optimizer": optim, "activations": acts,
           "other": sum(other.values())}
    mem["total"] = sum(mem.values())

    # ---- time: the full step without frozen weight gradients, plus adapters and dequant ----
    acc = cluster.accelerator
    peak_flops = acc.sustained_peak(precision.compute_dtype)
    tokens = mb * seq
    frozen_wgrad = sum(linear_time(op, tokens, 1, 1, acc, precision.compute_dtype, e, eff)
                       for _, op in g.all_ops() if op.kind in ("linear", "router"))
    adapter_s = sum(_adapter_time(a, tokens, cluster, eff, peak_flops) for a in ads)
    bw = acc.memory_bandwidth_bytes_s * eff.memory_ceiling
    passes = 3 if par.recompute == "full" else 2
    dequant_s = 0.0
    if ft.base.bits < 16:
        q_elems = sum(op.instances * w.numel for _, op in g.all_ops() if _quantized(op)
                      for w in op.weights if w.name == "weight")
        dequant_s = passes * (quant + 2 * q_elems) / bw  # read packed + scales, write bf16
    accum = par.grad_accum
    compute = full.time.compute_s - accum * frozen_wgrad + accum * (adapter_s + dequant_s)
    grad_b = 2 if precision.gradient_bytes == 2 else 4
    comm_s = full.time.dp_comm_exposed_s * ADAPTER_BYTES * trainable / (grad_b * total)
    shard = trainable / (n_d if par.zero >= 1 else 1)
    traffic = shard * (2 * opt.state_bytes(precision) + 2 * ADAPTER_BYTES)
    opt_s = traffic / (cluster.host_update_bytes_s if "optimizer" in par.offload else bw)
    parts = {"compute": compute, "communication": comm_s, "optimizer": opt_s,
             "dequantize": accum * dequant_s, "adapters": accum * adapter_s}
    assumptions |= {
        "adapters": f"fp32 (PEFT autocast_adapter_dtype), rank {ft.rank}, alpha {ft.alpha:g}, "
                    "lora_dropout 0",
        "frozen base": f"{ft.base.name} ({ft.base.source})",
        "activations": f"{conv} with a frozen base and the adapters' saved tensors",
    }
    return FineTuneResult(ft, spec, par, seq, trainable, total, tuple(ads), mem, other, host,
                          0.0, full.capacity_bytes, compute + comm_s + opt_s, parts, full,
                          assumptions)
