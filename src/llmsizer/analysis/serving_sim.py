"""Serving under load: a request-level simulation of continuous batching on the per-op roofline.

`simulate` sizes each replica's KV pool the engine's way (engines.py), derives the step-time model
from `forward_pass` once (serving/step_cost.py), runs the scheduler per replica
(serving/scheduler.py; requests are dealt to replicas round-robin, a closed loop's clients
likewise) and reports latency distributions and throughput as vllm bench serve does
(serving/metrics.py).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from llmsizer.analysis.efficiency import Efficiency
from llmsizer.analysis.inference import ServingConfig, serving_memory
from llmsizer.errors import SpecError
from llmsizer.serving.engines import EngineProfile
from llmsizer.serving.metrics import Distribution, binned, pooled, tpot_per_request
from llmsizer.serving.scheduler import ReplicaTrace, run_replica
from llmsizer.serving.speculative import Speculation
from llmsizer.serving.step_cost import DraftCost, StepCost
from llmsizer.serving.workload import Workload
from llmsizer.specs.hardware import Accelerator
from llmsizer.specs.model import ModelSpec

SERIES_POINTS = 60


@dataclass(frozen=True)
class KvPool:
    """One replica's KV pool per device, and what it was carved from (bytes)."""

    device_bytes: float
    weights: float
    workspace: float
    overhead: float
    pool_bytes: float
    block_bytes: float
    block_size: int
    num_blocks: int
    rule: str
    draft_weights: float = 0.0  # speculative decoding: the draft's weights in the pool's budget
    draft_block_bytes: float = 0.0  # … and its KV bytes per block (included in block_bytes)

    @property
    def tokens(self) -> int:
        return self.num_blocks * self.block_size


def draft_memory(spec: ModelSpec, acc: Accelerator, cfg: ServingConfig, block_size: int,
                 speculation: Speculation | None) -> tuple[float, float]:
    """(weights, KV bytes per block) per device of a speculative drafter: a draft model's own
    (at the target's tensor parallelism), or one decoder layer of the target (MTP/EAGLE)."""
    if speculation is None:
        return 0.0, 0.0
    if speculation.draft is not None:
        d = serving_memory(speculation.draft, acc, replace(cfg, pp=1), 1, block_size)
        return d.weights, d.kv_cache
    mem = serving_memory(spec, acc, cfg, 1, block_size)
    layers = math.ceil(spec.num_layers / cfg.pp)  # one of the last stage's layers
    return mem.weights / layers, mem.kv_cache / layers


def kv_pool(spec: ModelSpec, acc: Accelerator, cfg: ServingConfig, engine: EngineProfile,
            speculation: Speculation | None = None, dp_attention: Any = None) -> KvPool:
    """Blocks of KV cache an instance holds, sized as the engine sizes it (see EngineProfile).
    With `dp_attention` (serving/dp_attention.py) every rank sizes a pool of its own beside the
    whole attention weights and 1/n of the experts, and the instance holds n of them."""
    ranks = 1
    c = replace(cfg, block_size=None, prefill_chunk=engine.max_num_batched_tokens)
    if dp_attention is not None:
        from llmsizer.serving import dp_attention as dpa

        ranks = dp_attention.ranks
        c = replace(dpa.rank_config(c), prefill_chunk=max(1, c.prefill_chunk // ranks))
    mem = serving_memory(spec, acc, c, 1, engine.block_size)  # kv_cache: one block's bytes
    if ranks > 1:
        mem = replace(mem, weights=mem.weights - dpa.expert_weight_bytes(spec, c)
                      * (1 - 1 / ranks))
    dw, db = draft_memory(spec, acc, c, engine.block_size, speculation)
    mem = replace(mem, weights=mem.weights + dw, kv_cache=mem.kv_cache + db)
    cap, f = float(acc.memory_bytes), engine.memory_fraction
    rest = mem.weights + mem.workspace + mem.overhead
    if engine.kv_pool == "utilization":
        pool = f * cap - rest
        rule = f"{f:g} x memory - weights - workspace - overhead"
    elif engine.kv_pool == "static":
        pool = f * cap - mem.weights
        rule = f"{f:g} x memory - weights"
    else:
        pool = f * (cap - rest)
        rule = f"{f:g} x (memory - weights - workspace - overhead)"
    blocks = max(0, math.floor(pool / mem.kv_cache)) if mem.kv_cache > 0 else 0
    if ranks > 1:
        blocks *= ranks
        rule += f", per rank; x {ranks} data-parallel attention ranks"
    return KvPool(cap, mem.weights, mem.workspace, mem.overhead, max(0.0, pool), mem.kv_cache,
                  engine.block_size, blocks, rule, dw, db)


@dataclass(frozen=True)
class SimulationResult:
    spec: ModelSpec
    acc: Accelerator
    cfg: ServingConfig
    engine: EngineProfile
    replicas: int
    pool: KvPool
    max_num_seqs: int
    workload: Workload
    slo_ttft_s: float | None
    slo_tpot_s: float | None
    prompts: np.ndarray
    outputs: np.ndarray
    send_s: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    itl: np.ndarray  # pooled gaps between consecutive tokens
    duration_s: float
    kv_utilization_mean: float
    kv_utilization_max: float
    kv_series: tuple[list[float], list[float]]
    queue_mean: float
    queue_max: int
    queue_series: tuple[list[float], list[float]]
    steps: int
    preemptions: int
    speculation: Speculation | None = None
    disaggregation: Any = None  # serving/disaggregated.py DisaggregatedInfo
    expert_parallel: Any = None  # serving/dp_attention.py DpAttention

    @property
    def ttft(self) -> np.ndarray:
        return self.first_token_s - self.send_s

    @property
    def e2e(self) -> np.ndarray:
        return self.finish_s - self.send_s

    @property
    def tpot_all(self) -> np.ndarray:
        return tpot_per_request(self.ttft, self.e2e, self.outputs)

    def dist(self, metric: str) -> Distribution:
        if metric == "tpot":
            return Distribution.of(self.tpot_all[self.outputs > 1])
        return Distribution.of({"ttft": self.ttft, "e2e": self.e2e, "itl": self.itl}[metric])

    @property
    def throughput_tokens_per_s(self) -> float:
        """Output tokens per second of benchmark duration."""
        return float(self.outputs.sum()) / self.duration_s

    @property
    def total_tokens_per_s(self) -> float:
        return float(self.outputs.sum() + self.prompts.sum()) / self.duration_s

    @property
    def requests_per_s(self) -> float:
        return self.outputs.size / self.duration_s

    @property
    def goodput_requests_per_s(self) -> float:
        good = np.ones(self.outputs.size, dtype=bool)
        if self.slo_ttft_s is not None:
            good &= self.ttft <= self.slo_ttft_s
        if self.slo_tpot_s is not None:
            good &= self.tpot_all <= self.slo_tpot_s
        return int(good.sum()) / self.duration_s

    @property
    def mean_in_flight(self) -> float:
        """Σ E2E / duration: requests in the server on average (SGLang bench_serving's
        `concurrency`)."""
        return float(self.e2e.sum()) / self.duration_s


def simulate(spec: ModelSpec, acc: Accelerator, cfg: ServingConfig, engine: EngineProfile,
             workload: Workload, *, replicas: int = 1, eff: Efficiency | None = None,
             slo_ttft_s: float | None = None, slo_tpot_s: float | None = None,
             gpus_per_node: int = 8, progress: Callable[[int], None] | None = None,
             speculation: Speculation | None = None, cost_tokens: int | None = None,
             disaggregation: Any = None, dp_attention: Any = None) -> SimulationResult:
    """`cost_tokens`: tabulate step times up to this many tokens (a search that varies the
    batch limits shares one table; default: what this configuration can schedule).
    `disaggregation` (serving/disaggregated.py Disaggregation): x prefill and y decode
    instances instead of `replicas` alike ones. `dp_attention` (serving/dp_attention.py
    DpAttention): attention data-parallel over the instance's GPUs, experts over them."""
    if not isinstance(replicas, int) or replicas < 1:
        raise SpecError("replicas", replicas, "a positive integer")
    eff = eff or Efficiency.for_accelerator(acc, workload="serving")
    if disaggregation is not None:
        from llmsizer.serving.disaggregated import simulate_disaggregated

        if speculation is not None:
            raise SpecError("speculative", speculation.method, "not combined with "
                            "--disaggregate (the draft's KV transfer is not modelled)")
        return simulate_disaggregated(spec, acc, cfg, engine, workload, disaggregation,
                                      eff=eff, slo_ttft_s=slo_ttft_s, slo_tpot_s=slo_tpot_s,
                                      gpus_per_node=gpus_per_node, progress=progress)
    if dp_attention is not None:
        if speculation is not None:
            raise SpecError("speculative", speculation.method, "not combined with "
                            "--dp-attention")
        n = dp_attention.ranks  # every rank schedules its own share of the limits
        engine = replace(engine, max_num_seqs=engine.max_num_seqs * n,
                         max_num_batched_tokens=engine.max_num_batched_tokens * n)
    pool, max_seqs = instance_limits(spec, acc, cfg, engine, speculation, dp_attention)
    q = speculation.verify_tokens if speculation else 1
    _check_requests(spec, engine, pool, workload, speculation)
    cost = step_cost(spec, acc, cfg, eff, cost_tokens or max(engine.max_num_batched_tokens,
                                                              max_seqs * q),
                     gpus_per_node, engine.step_overhead_s, engine.seq_overhead_s, dp_attention)
    if speculation is not None:
        cost = speculative_cost(cost, spec, acc, cfg, eff, max(engine.max_num_batched_tokens,
                                                               max_seqs), gpus_per_node,
                                speculation)
    k = workload.requests
    cached = (workload.cached_tokens(engine.block_size) if engine.prefix_caching
              else [0] * k)
    scheduled = workload.arrival_s or (0.0,) * k
    n_rep = replicas if workload.concurrency is None else min(replicas, workload.concurrency)
    done_before = [0] * n_rep
    traces: list[tuple[list[int], ReplicaTrace]] = []
    for r in range(n_rep):
        idx = list(range(r, k, n_rep))
        cap = None
        if workload.concurrency is not None:
            cap = workload.concurrency // n_rep + (1 if r < workload.concurrency % n_rep else 0)

        def tick(done: int, r: int = r) -> None:
            done_before[r] = done
            if progress:
                progress(sum(done_before))

        tr = run_replica(cost, engine, pool.num_blocks, max_seqs,
                         [workload.prompt_tokens[i] for i in idx],
                         [workload.output_tokens[i] for i in idx],
                         [scheduled[i] for i in idx], cap, tick, [cached[i] for i in idx],
                         speculation.expected_tokens if speculation else 1.0,
                         speculation.reserved_slots if speculation else 0)
        traces.append((idx, tr))
    return replace(_collect(spec, acc, cfg, engine, n_rep, pool, max_seqs, workload, slo_ttft_s,
                            slo_tpot_s, traces), speculation=speculation,
                   expert_parallel=dp_attention)


def speculative_cost(target: StepCost, spec: ModelSpec, acc: Accelerator, cfg: ServingConfig,
                     eff: Efficiency, max_tokens: int, gpus_per_node: int,
                     speculation: Speculation) -> StepCost:
    """The target's step model verifying k + 1 tokens per sequence, with the drafter's cost."""
    out = copy.copy(target)  # the cached target model stays as it is
    out.verify = speculation.verify_tokens
    out._constant = {}  # its decode constants differ from the target's
    own = None
    if speculation.draft is not None:
        from llmsizer.analysis.params import validate_parallel

        dcfg = replace(cfg, pp=1)
        validate_parallel(speculation.draft, dcfg.tp, 1)
        own = step_cost(speculation.draft, acc, dcfg, eff, max_tokens, gpus_per_node, 0.0, 0.0)
    out.draft = DraftCost(target, speculation.k, own)
    return out


def instance_limits(spec: ModelSpec, acc: Accelerator, cfg: ServingConfig,
                    engine: EngineProfile, speculation: Speculation | None = None,
                    dp_attention: Any = None) -> tuple[KvPool, int]:
    """One instance's KV pool and the sequences it runs at once (the engine's limit; SGLang's
    from the pool; a mixed step's token budget bounds it, q tokens per decoding sequence)."""
    pool = kv_pool(spec, acc, cfg, engine, speculation, dp_attention)
    if pool.num_blocks < 1:
        raise SpecError("gpu", acc.name, f"a device with room for a KV cache ({pool.rule} is "
                        f"{pool.pool_bytes / 2**30:.2f} GiB)", "try a larger --tp or --weights "
                        "int8")
    max_seqs = engine.max_num_seqs
    if engine.max_seqs_from_pool:
        max_seqs = min(max_seqs, max(1, pool.tokens // 2))
    q = speculation.verify_tokens if speculation else 1
    if engine.mixed_batches:  # every decoding sequence takes q tokens of the step's budget
        max_seqs = max(1, min(max_seqs, engine.max_num_batched_tokens // q))
    return pool, max_seqs


_COSTS: dict[tuple[object, ...], StepCost] = {}


def step_cost(spec: ModelSpec, acc: Accelerator, cfg: ServingConfig, eff: Efficiency,
              max_tokens: int, gpus_per_node: int, step_overhead_s: float, seq_overhead_s: float,
              dp_attention: Any = None) -> StepCost:
    """The step-time model of a configuration, built once per process (sweeps and tests reuse
    it: building it runs forward_pass ~150 times)."""
    key = (spec, acc, cfg, eff, max_tokens, gpus_per_node, step_overhead_s, seq_overhead_s,
           dp_attention)
    if key not in _COSTS:
        if len(_COSTS) > 32:
            _COSTS.clear()
        if dp_attention is not None:
            from llmsizer.serving.dp_attention import DpEpStepCost

            _COSTS[key] = DpEpStepCost(spec, acc, cfg, eff, dp_attention, max_tokens=max_tokens,
                                       gpus_per_node=gpus_per_node,
                                       step_overhead_s=step_overhead_s,
                                       seq_overhead_s=seq_overhead_s)
        else:
            _COSTS[key] = StepCost(spec, acc, cfg, eff, max_tokens=max_tokens,
                                   gpus_per_node=gpus_per_node, step_overhead_s=step_overhead_s,
                                   seq_overhead_s=seq_overhead_s)
    return _COSTS[key]


def _check_requests(spec: ModelSpec, engine: EngineProfile, pool: KvPool, w: Workload,
                    speculation: Speculation | None = None) -> None:
    i = max(range(w.requests), key=lambda j: w.prompt_tokens[j] + w.output_tokens[j])
    p, o = w.prompt_tokens[i], w.output_tokens[i]
    extra = speculation.reserved_slots + speculation.k if speculation else 0
    if p + o + extra > pool.tokens:
        raise SpecError("prompt", f"{p}+{o}", f"prompt + output within the KV pool of "
                        f"{pool.tokens:,} tokens per instance", "try a larger --tp or --kv-dtype "
                        "fp8")
    if spec.max_seq_len and p + o > spec.max_seq_len:
        raise SpecError("prompt", f"{p}+{o}", f"prompt + output within {spec.name}'s context of "
                        f"{spec.max_seq_len:,} tokens")
    if not engine.chunked_prefill:
        top = max(w.prompt_tokens)
        if top > engine.max_num_batched_tokens:
            raise SpecError("max-num-batched-tokens", engine.max_num_batched_tokens,
                            f"at least the longest prompt ({top}): {engine.name} does not chunk "
                            "prefills by default")


def _collect(spec: ModelSpec, acc: Accelerator, cfg: ServingConfig, engine: EngineProfile,
             replicas: int, pool: KvPool, max_seqs: int, w: Workload, slo_ttft_s: float | None,
             slo_tpot_s: float | None, traces: list[tuple[list[int], ReplicaTrace]]
             ) -> SimulationResult:
    k = w.requests
    send, first, fin = np.empty(k), np.empty(k), np.empty(k)
    itl_v: list[np.ndarray] = []
    itl_w: list[np.ndarray] = []
    for idx, tr in traces:
        send[idx], first[idx], fin[idx] = tr.send_s, tr.first_token_s, tr.finish_s
        itl_v += tr.itl_values
        itl_w += tr.itl_weights
    duration = float(fin.max())
    kv_mean = sum(tr.kv_block_seconds for _, tr in traces) / (duration * pool.num_blocks
                                                              * len(traces))
    kv_max = max(tr.max_kv_blocks for _, tr in traces) / pool.num_blocks
    q_mean = sum(tr.queue_seconds for _, tr in traces) / duration
    q_max = max((max(tr.sample_queue, default=0) for _, tr in traces), default=0)
    kv_t: list[float] = []
    kv_f = np.zeros(SERIES_POINTS)
    q_f = np.zeros(SERIES_POINTS)
    for _, tr in traces:
        t = np.array(tr.sample_t)
        kv_t, f = binned(t, np.array(tr.sample_kv_blocks, dtype=float) / pool.num_blocks,
                         duration, SERIES_POINTS)
        kv_f += np.array(f) / len(traces) if f else 0.0
        _, qf = binned(t, np.array(tr.sample_queue, dtype=float), duration, SERIES_POINTS)
        q_f += np.array(qf) if qf else 0.0
    return SimulationResult(
        spec, acc, cfg, engine, replicas, pool, max_seqs, w, slo_ttft_s, slo_tpot_s,
        np.array(w.prompt_tokens), np.array(w.output_tokens), send, first, fin,
        pooled(itl_v, itl_w), duration, kv_mean, kv_max, (kv_t, [float(x) for x in kv_f]),
        q_mean, q_max, (kv_t, [float(x) for x in q_f]),
        sum(tr.steps for _, tr in traces), sum(tr.preemptions for _, tr in traces))
