"""Data-parallel attention with expert parallelism: how SGLang and vLLM serve DeepSeek-V3.

An instance of n GPUs (`--tp n --dp-attention`, SGLang's `--tp n --dp n
--enable-dp-attention --ep n`; vLLM's `--data-parallel-size n --enable-expert-parallel`) runs
attention and the dense layers data-parallel: every rank holds the whole attention weights, its
own requests and its own KV cache (MLA's latent cannot be split over heads, so tensor
parallelism would replicate it on every rank instead: SGLang v0.4 blog, "Data Parallelism
Attention", lmsys.org/blog/2024-12-04-sglang-v0-4). The routed experts are sharded whole over
the n ranks (expert parallelism, ep = n); before each MoE layer every rank dispatches each of its
tokens to the ranks of its top-k experts and afterwards combines their outputs: two all-to-alls
of tokens·top_k·hidden activations per MoE layer (vLLM RFC #16037; DeepSeek-V3 report
arXiv 2412.19437 §3.4).

The model here, per step of the whole instance (the MoE all-to-all keeps the ranks in step):
  * the instance's batch is split evenly over the n ranks (requests dealt round-robin), so
    attention, the dense linears and the lm_head of one rank see 1/n of its tokens, sequences
    and context — these are forward_pass's ops at tensor parallelism 1, evaluated at T/n tokens;
  * each rank's routed experts are E/n whole experts fed by the whole group's T·top_k routed
    rows: graph.Op.rank_gemm(T/n, tp=1, ep=n) (expected experts touched, rows per expert);
  * dispatch + combine: 2 · analysis/comm.py all_to_all_s(T/n · top_k · hidden · 2 bytes, n)
    per MoE layer over the link n ranks span;
  * memory per rank: the non-expert weights whole, 1/n of the routed experts' weights, and a KV
    pool of its own; the instance's scheduler holds n ranks' pools, sequence and token limits.
Load imbalance between ranks and between experts is not modelled (balanced routing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from llmsizer.analysis import comm
from llmsizer.analysis.efficiency import Efficiency, gemm_efficiency, roofline
from llmsizer.analysis.inference import ServingConfig, _linear_timing, _topology
from llmsizer.errors import SpecError
from llmsizer.graph import build_graph
from llmsizer.serving.step_cost import AttentionGroup, StepCost
from llmsizer.specs.hardware import Accelerator
from llmsizer.specs.model import ModelSpec

ACTIVATION_BYTES = 2  # bf16 dispatch and combine


@dataclass(frozen=True)
class DpAttention:
    """`ranks` GPUs per instance: attention data-parallel over them, experts over ep = ranks."""

    ranks: int

    @property
    def ep(self) -> int:
        return self.ranks


def check(spec: ModelSpec, tp: int, pp: int, ep: int | None) -> DpAttention:
    """The flags --dp-attention [--ep N] with --tp n: a MoE model, ep = n, no pipeline."""
    moe = spec.moe
    if moe is None:
        raise SpecError("dp-attention", spec.name, "a mixture-of-experts model (experts to "
                        "shard over the ranks)")
    if pp != 1:
        raise SpecError("pp", pp, "1 with --dp-attention")
    if ep is not None and ep != tp:
        raise SpecError("ep", ep, f"equal to --tp ({tp}) with --dp-attention: the experts are "
                        "sharded over all the instance's GPUs")
    if moe.num_experts % tp:
        raise SpecError("ep", tp, f"a divisor of {spec.name}'s {moe.num_experts} experts")
    return DpAttention(tp)


def _expert_ops(spec: ModelSpec):  # type: ignore[no-untyped-def]
    """(layer index, op) of every routed-expert op."""
    return [(layer.index, op) for layer in build_graph(spec).layers for op in layer.ops
            if op.expert_parallel]


def expert_weight_bytes(spec: ModelSpec, cfg: ServingConfig) -> float:
    """Bytes of all routed experts' weights in the serving format, unsharded."""
    fmt = cfg.weights.bytes_per_param() if cfg.weights else 2.0
    return fmt * sum(op.rank_params(1, 1)[0] for _, op in _expert_ops(spec))


def rank_config(cfg: ServingConfig) -> ServingConfig:
    """One rank's attention side: tensor parallelism 1."""
    return replace(cfg, tp=1)


class DpEpStepCost(StepCost):
    """StepCost of a DP-attention + EP instance; `tokens`, `rows`, contexts are the instance's
    (all ranks), tables and attention coefficients one rank's at 1/n of them."""

    def __init__(self, spec: ModelSpec, acc: Accelerator, cfg: ServingConfig, eff: Efficiency,
                 dpa: DpAttention, *, max_tokens: int, gpus_per_node: int = 8,
                 step_overhead_s: float = 0.0, seq_overhead_s: float = 0.0):
        n = dpa.ranks
        one = rank_config(cfg)
        super().__init__(spec, acc, one, eff, max_tokens=math.ceil(max_tokens / n) + 1,
                         gpus_per_node=gpus_per_node, step_overhead_s=step_overhead_s,
                         seq_overhead_s=seq_overhead_s)
        self.ranks = n
        topo = _topology(acc, gpus_per_node, eff)
        link = topo.link_for(n, 1)
        dtype = one.weights.compute_dtype if one.weights else "bf16"
        peak = acc.sustained_peak(dtype if dtype in acc.peak_flops else "bf16")
        bw = acc.memory_bandwidth_bytes_s
        w_bytes = one.weights.bytes_per_param() if one.weights else 2.0
        experts = _expert_ops(spec)
        moe_layers = len({i for i, _ in experts})
        top_k = spec.moe.top_k if spec.moe else 0
        self.a2a_s: list[float] = []
        for j, t in enumerate(self.grid):
            delta = 0.0
            for _, op in experts:  # swap the whole experts for this rank's E/n of them
                delta -= _linear_timing(op, t, one, acc, peak, bw, w_bytes, 2.0, eff)[2]
                g = op.rank_gemm(t, 1, n)
                nbytes = g.weight_elements * w_bytes + g.activation_elements * 2.0
                delta += roofline(g.flops, nbytes, peak, bw, gemm_efficiency(g, eff, acc),
                                  eff)[0]
            a2a = 2 * moe_layers * comm.all_to_all_s(t * top_k * spec.hidden_size
                                                     * ACTIVATION_BYTES, n, link, eff)
            self.a2a_s.append(a2a)
            self.body_s[j] += delta + a2a
        # one rank's share of the instance's attention: every term scales by 1/n
        self.groups = [AttentionGroup(g.window, g.layers, g.flops_per_pair / n,
                                      g.bytes_per_key / n, g.bytes_per_token / n,
                                      g.bytes_per_step, g.flops_per_token / n)
                       for g in self.groups]
        self.largest_group = max(self.groups, key=lambda x: x.layers)
        self.link_name = link.name

    def body(self, tokens: float) -> float:
        return self._table(self.body_s, tokens / self.ranks)

    def head(self, rows: float) -> float:
        return self._table(self.head_s, rows / self.ranks)
