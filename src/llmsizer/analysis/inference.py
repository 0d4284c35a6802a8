"""Serving: memory per device, per-op roofline for prefill and decode, TTFT/TPOT/throughput,
maximum concurrency and batch sweeps.

Every op of the graph is timed as max(FLOPs / (peak · matmul efficiency), bytes / (bandwidth ·
memory efficiency)) (Williams et al. 2009, "Roofline"); decode steps also pay a per-kernel launch
overhead. Prefill is normally compute-bound and decode memory-bound (seeds 001, 003).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

from llmsizer.analysis import comm
from llmsizer.analysis.efficiency import (
    KERNELS_PER_LAYER_EXTRA,
    Efficiency,
    gemm_efficiency,
    roofline,
    vector_peak,
)
from llmsizer.analysis.flops import layer_pairs
from llmsizer.analysis.kvcache import KVCache
from llmsizer.analysis.params import shard_params
from llmsizer.errors import SpecError
from llmsizer.graph import CACHE_LAYOUTS, LayerGraph, Op, build_graph
from llmsizer.specs.hardware import Accelerator
from llmsizer.specs.model import ModelSpec
from llmsizer.specs.precision import WeightFormat

GiB = 2**30
DEFAULT_RUNTIME_OVERHEAD = 1 * GiB  # CUDA context, NCCL buffers, CUDA graphs (vLLM: ~1-2 GiB)


@dataclass(frozen=True)
class ServingConfig:
    tp: int = 1
    pp: int = 1
    weights: WeightFormat | None = None  # None: the model's bf16
    kv_dtype_bytes: float = 2
    mem_util: float = 0.9  # vLLM --gpu-memory-utilization
    block_size: int | None = 16  # vLLM paged KV block
    runtime_overhead: float = DEFAULT_RUNTIME_OVERHEAD
    prefill_chunk: int = 8192  # tokens in one prefill pass (workspace sizing)
    flash: bool = True
    kv_layout: str = "engine"  # graph.CacheLayout: engine (vLLM/SGLang), hf, expanded
    # MLA decode: fold W_UK/W_UV into the query/output (vLLM, SGLang) instead of up-projecting
    # the cached latent of every context token at every step
    mla_absorb: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.mem_util <= 1:
            raise SpecError("mem-util", self.mem_util, "a fraction in (0, 1]")
        for name in ("tp", "pp", "prefill_chunk"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise SpecError(name, v, "a positive integer")
        if self.runtime_overhead < 0:
            raise SpecError("overhead", self.runtime_overhead, "0 or more bytes")
        if self.kv_layout not in CACHE_LAYOUTS:
            raise SpecError("--kv-layout", self.kv_layout, "one of " + ", ".join(CACHE_LAYOUTS))

    def kv_cache(self, spec: ModelSpec, layers: tuple[int, ...] | None = None,
                 paged: bool = True) -> KVCache:
        return KVCache(spec, self.kv_dtype_bytes, self.tp, layers,
                       self.block_size if paged else None, self.kv_layout)  # type: ignore[arg-type]


@dataclass(frozen=True)
class OpCost:
    layer: int | None
    op: str
    flops: float
    bytes: float
    time_s: float
    bound: str  # "compute" | "memory"


@dataclass(frozen=True)
class PassCost:
    """One forward pass (a prefill, or one decode step) on one device, all stages in series."""

    ops: tuple[OpCost, ...]
    comm_s: float
    overhead_s: float

    @property
    def flops(self) -> float:
        return sum(o.flops for o in self.ops)

    @property
    def bytes(self) -> float:
        return sum(o.bytes for o in self.ops)

    @property
    def compute_s(self) -> float:
        return sum(o.time_s for o in self.ops)

    @property
    def time_s(self) -> float:
        return self.compute_s + self.comm_s + self.overhead_s

    @property
    def bound(self) -> str:
        mem = sum(o.time_s for o in self.ops if o.bound == "memory")
        return "memory" if mem > self.compute_s / 2 else "compute"


@dataclass(frozen=True)
class ServingMemory:
    weights: float
    kv_cache: float
    workspace: float
    overhead: float
    capacity: float  # mem_util · device memory

    @property
    def total(self) -> float:
        return self.weights + self.kv_cache + self.workspace + self.overhead


def weight_bytes_per_device(spec: ModelSpec, cfg: ServingConfig) -> float:
    """Layer linears in the serving format; embeddings, lm_head and norms in 16-bit."""
    fmt_bytes = cfg.weights.bytes_per_param() if cfg.weights else 2.0
    shards = shard_params(spec, cfg.tp, cfg.pp)
    graph = build_graph(spec)
    worst = 0.0
    for s, layers in enumerate(shards.stage_layers):
        linear = 0.0
        for i in layers:
            for op in graph.layers[i].ops:
                if op.kind == "linear" and op.weights:
                    linear += op.rank_params(cfg.tp, 1)[0]
        other = shards.per_stage[s] - linear
        worst = max(worst, linear * fmt_bytes + other * 2.0)
    return worst


def workspace_bytes(spec: ModelSpec, cfg: ServingConfig) -> float:
    """Transient activations of one prefill chunk: the widest live set of one layer (the outputs
    of its column-parallel projections — Q/K/V, the FFN's gate and up — and the residual stream)
    plus the last tokens' logits (fp32)."""
    t = cfg.prefill_chunk
    graph = build_graph(spec)
    widest = 0.0
    for layer in graph.layers:
        width = 2.0 * spec.hidden_size
        for op in layer.ops:
            if op.kind == "linear" and op.weights and op.weights[0].shard == "column":
                width += op.rank_dims(cfg.tp)[1] * op.active
        widest = max(widest, width)
    vocab_rank = graph.head[-1].rank_dims(cfg.tp)[1]
    return 2 * t * widest + 4 * 256 * vocab_rank


def serving_memory(spec: ModelSpec, acc: Accelerator, cfg: ServingConfig, batch: int,
                   max_seq: int) -> ServingMemory:
    kv = cfg.kv_cache(spec, _stage_layers(spec, cfg)[0])
    return ServingMemory(weight_bytes_per_device(spec, cfg), kv.bytes_for(max_seq, batch),
                         workspace_bytes(spec, cfg), cfg.runtime_overhead,
                         cfg.mem_util * acc.memory_bytes)


def _stage_layers(spec: ModelSpec, cfg: ServingConfig) -> tuple[tuple[int, ...], ...]:
    return shard_params(spec, cfg.tp, cfg.pp).stage_layers


def max_concurrency(spec: ModelSpec, acc: Accelerator, cfg: ServingConfig, max_seq: int) -> int:
    """Requests of `max_seq` tokens whose KV cache fits beside weights, workspace and overhead."""
    mem = serving_memory(spec, acc, cfg, 0, max_seq)
    free = mem.capacity - mem.weights - mem.workspace - mem.overhead
    kv = cfg.kv_cache(spec, _stage_layers(spec, cfg)[0])
    per_request = kv.bytes_for(max_seq, 1)
    return max(0, math.floor(free / per_request)) if free > 0 else 0


# ---------------------------------------------------------------------------------------------
# Roofline of one pass
# ---------------------------------------------------------------------------------------------

def forward_pass(spec: ModelSpec, acc: Accelerator, cfg: ServingConfig, eff: Efficiency,
                 batch: int, new_tokens: int, context: int, *, topology: comm.Topology,
                 decode: bool) -> PassCost:
    """Cost on one device of `batch` sequences each adding `new_tokens` over `context` positions
    (context includes the new tokens). Pipeline stages run one after another for one batch."""
    graph = build_graph(spec)
    dtype = cfg.weights.compute_dtype if cfg.weights else "bf16"
    peak = acc.sustained_peak(dtype if dtype in acc.peak_flops else "bf16")
    w_bytes = cfg.weights.bytes_per_param() if cfg.weights else 2.0
    e = 2.0
    tokens = batch * new_tokens
    bw = acc.memory_bandwidth_bytes_s
    ops: list[OpCost] = []
    kernels = 0
    # MLA decode over the latent cache: absorbed (kv_b_proj folded into the attention op) or
    # up-projecting every cached latent with kv_b_proj at every step.
    latent = decode and cfg.kv_layout != "expanded" and spec.mla is not None
    absorbed = latent and cfg.mla_absorb
    for layer in graph.layers:
        for op in layer.ops:
            if op.kind in ("linear", "router"):
                if latent and op.name == "kv_b_proj":
                    if absorbed:
                        continue  # its weights are read by the absorbed attention below
                    rows = batch * _kept(layer, context)
                    ops.append(_linear_cost(op, layer.index, rows, cfg, acc, peak, bw, w_bytes,
                                            e, eff))
                else:
                    ops.append(_linear_cost(op, layer.index, tokens, cfg, acc, peak, bw, w_bytes,
                                            e, eff))
                kernels += 1
            elif op.kind == "attention":
                if absorbed:
                    kv_b = next(o for o in layer.ops if o.name == "kv_b_proj")
                    ops.append(_absorbed_attention_cost(op, kv_b, layer, batch, new_tokens,
                                                        context, cfg, peak, bw, w_bytes, e, eff))
                else:
                    ops.append(_attention_cost(op, layer, batch, new_tokens, context, cfg, peak,
                                               bw, e, eff))
                kernels += 1
            elif op.kind in ("scan", "conv"):
                ops.append(_stream_cost(op, layer.index, tokens, cfg, acc, bw, e, eff))
                kernels += 1
        kernels += KERNELS_PER_LAYER_EXTRA
    head = graph.head[-1]
    # Serving computes logits only for each sequence's last position.
    ops.append(_linear_cost(head, None, batch, cfg, acc, peak, bw, 2.0, e, eff))
    # Tensor parallelism: 2 all-reduces of the residual stream per layer; pipeline hand-offs.
    tp_link = topology.link_for(cfg.tp, 1)
    act = e * tokens * spec.hidden_size
    comm_s = 2 * spec.num_layers * comm.all_reduce_s(act, cfg.tp, tp_link, eff)
    if cfg.pp > 1:
        pp_link = topology.link_for(cfg.pp, cfg.tp)
        comm_s += (cfg.pp - 1) * comm.p2p_s(act, pp_link, eff)
    overhead = kernels * eff.kernel_overhead_s if decode else 0.0
    return PassCost(tuple(ops), comm_s, overhead)


def _linear_cost(op: Op, layer: int | None, tokens: int, cfg: ServingConfig, acc: Accelerator,
                 peak: float, bw: float, w_bytes: float, e: float, eff: Efficiency) -> OpCost:
    """One linear op on one device: its product from the graph (MoE: only the experts that
    receive a token are read), weights once, activations in and out."""
    flops, nbytes, t, bound = _linear_timing(op, tokens, cfg, acc, peak, bw, w_bytes, e, eff)
    return OpCost(layer, op.component, flops, nbytes, t, bound)


@lru_cache(maxsize=65536)
def _linear_timing(op: Op, tokens: int, cfg: ServingConfig, acc: Accelerator, peak: float,
                   bw: float, w_bytes: float, e: float, eff: Efficiency
                   ) -> tuple[float, float, float, str]:
    """(FLOPs, bytes, seconds, bound) of `_linear_cost`: the same op repeats in every layer."""
    g = op.rank_gemm(tokens, cfg.tp)
    nbytes = g.weight_elements * w_bytes + g.activation_elements * e
    t, bound = roofline(g.flops, nbytes, peak, bw, gemm_efficiency(g, eff, acc), eff)
    return g.flops, nbytes, t, bound


def _kept(layer: LayerGraph, context: int) -> int:
    """Cached positions one query of `layer` reads (its window or chunk)."""
    visible = layer.keys_visible
    return context if visible is None else min(context, visible)


def _absorbed_attention_cost(op: Op, kv_b: Op, layer: LayerGraph, batch: int, new: int,
                             context: int, cfg: ServingConfig, peak: float, bw: float,
                             w_bytes: float, e: float, eff: Efficiency) -> OpCost:
    """MLA decode with weight absorption: the latent cache read once, W_UK/W_UV (kv_b_proj's
    weights) read once, the products of `graph.Op.rank_absorbed_flops`."""
    heads, _ = op.rank_heads(cfg.tp)
    pairs = batch * layer_pairs(layer, new, context, "causal")
    flops = op.rank_absorbed_flops(batch * new, cfg.tp, pairs)
    kv_read = batch * _kept(layer, context) * op.cache_elements_per_token(cfg.tp) * \
        cfg.kv_dtype_bytes
    weights = kv_b.rank_gemm(batch * new, cfg.tp).weight_elements * w_bytes
    qo = e * batch * new * heads * (op.latent_dim + op.kv_rank)
    t, bound = roofline(flops, kv_read + weights + qo, peak, bw, eff.attention_efficiency, eff)
    return OpCost(layer.index, "attention.core (absorbed)", flops, kv_read + weights + qo, t,
                  bound)


def _attention_cost(op: Op, layer: LayerGraph, batch: int, new: int, context: int,
                    cfg: ServingConfig, peak: float, bw: float, e: float,
                    eff: Efficiency) -> OpCost:
    heads, _ = op.rank_heads(cfg.tp)
    pairs = batch * layer_pairs(layer, new, context, "causal")
    flops = op.rank_forward_flops(0, cfg.tp, pairs=pairs)
    kept = _kept(layer, context)
    kv_read = batch * kept * op.cache_elements_per_token(cfg.tp) * cfg.kv_dtype_bytes
    qo = e * batch * new * heads * (op.qk_dim + op.v_dim)
    nbytes = kv_read + qo
    if not cfg.flash:
        nbytes += 2 * e * batch * heads * new * kept  # scores written and read back
    t, bound = roofline(flops, nbytes, peak, bw, eff.attention_efficiency, eff)
    return OpCost(layer.index, "attention.core", flops, nbytes, t, bound)


def _stream_cost(op: Op, layer: int, tokens: int, cfg: ServingConfig, acc: Accelerator,
                 bw: float, e: float, eff: Efficiency) -> OpCost:
    """A recurrent scan or convolution: its inputs/outputs streamed, its state read and written
    once per step (decode) at the fp32 CUDA-core rate."""
    flops = op.rank_forward_flops(tokens, cfg.tp)
    nbytes = op.rank_stream_bytes(tokens, cfg.tp, e) + 2 * 4 * op.state_elements(cfg.tp)
    t, bound = roofline(flops, nbytes, vector_peak(acc), bw, 1.0, eff)
    return OpCost(layer, op.component, flops, nbytes, t, bound)


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ServingResult:
    spec: ModelSpec
    acc: Accelerator
    cfg: ServingConfig
    batch: int
    prompt: int
    output: int
    max_seq: int
    memory: ServingMemory
    kv_bytes_per_token: float  # average per token of a max_seq sequence (windows, state included)
    max_concurrency: int
    prefill: PassCost
    decode: PassCost  # at the mean context prompt + output/2
    eff: Efficiency = field(default_factory=Efficiency)
    assumptions: dict[str, str] = field(default_factory=dict)
    kv_bytes_per_token_all_layers: float = 0.0  # a token inside every layer's window
    state_bytes_per_sequence: float = 0.0  # linear-attention / SSM layers

    @property
    def ttft_s(self) -> float:
        return self.prefill.time_s

    @property
    def tpot_s(self) -> float:
        return self.decode.time_s

    @property
    def e2e_latency_s(self) -> float:
        return self.ttft_s + max(0, self.output - 1) * self.tpot_s

    @property
    def throughput_tokens_per_s(self) -> float:
        """Output tokens per second for the batch, over its whole lifetime."""
        return self.batch * self.output / self.e2e_latency_s

    @property
    def decode_tokens_per_s(self) -> float:
        return self.batch / self.tpot_s

    @property
    def requests_per_s(self) -> float:
        return self.batch / self.e2e_latency_s

    @property
    def fits(self) -> bool:
        return self.memory.total <= self.memory.capacity


def serve(spec: ModelSpec, acc: Accelerator, cfg: ServingConfig, *, batch: int, prompt: int,
          output: int, max_seq: int | None = None, eff: Efficiency | None = None,
          gpus_per_node: int = 8) -> ServingResult:
    for name, v in (("batch", batch), ("prompt", prompt), ("output", output)):
        if not isinstance(v, int) or v < 1:
            raise SpecError(name, v, "a positive integer")
    max_seq = max_seq or prompt + output
    if max_seq < prompt + output:
        raise SpecError("max-seq", max_seq, f"at least prompt + output ({prompt + output})")
    if cfg.tp * cfg.pp > gpus_per_node and cfg.tp > gpus_per_node:
        raise SpecError("tp", cfg.tp, f"at most gpus-per-node ({gpus_per_node})")
    eff = eff or Efficiency.for_accelerator(acc, workload="serving")
    topo = _topology(acc, gpus_per_node, eff)
    mem = serving_memory(spec, acc, cfg, batch, max_seq)
    prefill = forward_pass(spec, acc, cfg, eff, batch, prompt, prompt, topology=topo, decode=False)
    mid = prompt + max(1, output // 2)
    decode = forward_pass(spec, acc, cfg, eff, batch, 1, mid, topology=topo, decode=True)
    kv = cfg.kv_cache(spec, _stage_layers(spec, cfg)[0], paged=False)
    assumptions = eff.describe() | {
        "runtime overhead": f"{cfg.runtime_overhead / GiB:.2f} GiB per device (--overhead)",
        "memory utilization": f"{cfg.mem_util:.0%} of device memory usable (--mem-util)",
        "batching": "the whole batch is prefilled together, then decodes in lock-step; TPOT at "
                    "the mean context prompt + output/2",
        "weights": (cfg.weights.name + " (" + cfg.weights.source + ")") if cfg.weights else "bf16",
    }
    return ServingResult(spec, acc, cfg, batch, prompt, output, max_seq, mem,
                         kv.bytes_per_token_at(max_seq), max_concurrency(spec, acc, cfg, max_seq),
                         prefill, decode, eff, assumptions, kv.bytes_per_token,
                         kv.state_bytes_per_sequence)


def _topology(acc: Accelerator, gpus_per_node: int, eff: Efficiency) -> comm.Topology:
    intra = (acc.intra_node_link_bytes_s or 64e9) / 2
    return comm.Topology(gpus_per_node,
                         comm.Link(acc.intra_node_link_name or "PCIe", intra,
                                   eff.collective_latency_s, eff.comm_efficiency,
                                   log_latency=True),
                         comm.Link("network", 50e9, 2 * eff.collective_latency_s,
                                   eff.inter_node_efficiency, log_latency=True))


def compute_bound_batch(spec: ModelSpec, acc: Accelerator, cfg: ServingConfig, context: int,
                        eff: Efficiency | None = None, limit: int = 4096) -> int | None:
    """Smallest decode batch whose step is compute-bound (arithmetic intensity past the ridge)."""
    eff = eff or Efficiency.for_accelerator(acc, workload="serving")
    topo = _topology(acc, 8, eff)
    b = 1
    while b <= limit:
        p = forward_pass(spec, acc, cfg, eff, b, 1, context, topology=topo, decode=True)
        if p.bound == "compute":
            return b
        b *= 2
    return None
