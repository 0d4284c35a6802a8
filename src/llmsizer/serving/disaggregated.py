"""Disaggregated prefill and decode: x prefill instances, y decode instances, KV moved between.

A request is prefilled on a prefill instance (dealt round-robin in arrival order; that instance
runs the engine's scheduler on prompts alone: one output token each), its prompt's KV cache is
sent to a decode instance (dealt round-robin in the order prefills finish), and decoded there.
As vLLM's disaggregated serving does, the decode instance holds the transferred KV in blocks of
its own and recomputes the prompt's last token to produce the first output token (a full cache
hit still computes one token for the logits: vllm/v1/core/kv_cache_manager.py
`get_computed_blocks`, `max_cache_hit_length = request.num_tokens - 1`), so

    TTFT = queueing + prefill on the prefill pool + KV transfer + the decode instance's first step

and TTFT ≥ prefill + transfer always. DistServe (OSDI'24, arXiv 2401.09670 §2–3) and Splitwise
(ISCA'24, arXiv 2311.18677) describe the same pipeline.

Transfer: every rank of the prefill instance sends its shard of the prompt's KV (bytes per token
per device from the pool's block bytes, i.e. the KV-cache model) to the decode ranks, all ranks
in parallel over their own links; the time is the larger of the per-device send and receive
shares over one link, plus the link's latency (analysis/comm.py p2p_s). The link is NVLink when
both pools fit in one NVLink domain (--gpus-per-node), else one NIC per GPU across nodes.
Transfers queue FIFO on the sending instance's links and on the receiving instance's links.
Not modelled: prefill-side KV held until the transfer ends (it is freed when the prefill ends),
overlap of the transfer with the prefill's last layers (layer-wise streaming).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from llmsizer.analysis import comm
from llmsizer.analysis.efficiency import Efficiency
from llmsizer.analysis.inference import ServingConfig, _topology
from llmsizer.errors import SpecError
from llmsizer.serving.engines import EngineProfile
from llmsizer.serving.scheduler import ReplicaTrace, run_replica
from llmsizer.serving.workload import Workload
from llmsizer.specs.hardware import Accelerator
from llmsizer.specs.model import ModelSpec


@dataclass(frozen=True)
class Disaggregation:
    prefill_instances: int
    decode_instances: int
    prefill_tp: int
    decode_tp: int

    def __post_init__(self) -> None:
        for name in ("prefill_instances", "decode_instances", "prefill_tp", "decode_tp"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise SpecError(name.replace("_", "-"), v, "a positive integer")

    def gpus(self, pp: int) -> int:
        return (self.prefill_instances * self.prefill_tp
                + self.decode_instances * self.decode_tp) * pp


def parse_disaggregate(text: str) -> tuple[int, int]:
    """"2P:6D" (or "2:6"): prefill and decode instance counts."""
    m = re.fullmatch(r"\s*(\d+)\s*[pP]?\s*:\s*(\d+)\s*[dD]?\s*", text)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise SpecError("disaggregate", text, "XP:YD with positive counts, e.g. 1P:3D")
    return int(m.group(1)), int(m.group(2))


@dataclass(frozen=True)
class PoolUse:
    """One pool's instances and how busy they were."""

    role: str  # "prefill" | "decode"
    instances: int
    tp: int
    pp: int
    kv_pool_tokens: int
    busy_fraction: float  # mean over instances of busy time / benchmark duration
    kv_cache_utilization: float  # time-averaged share of blocks in use
    steps: int
    preemptions: int

    def as_dict(self) -> dict[str, object]:
        return {"role": self.role, "instances": self.instances, "tp": self.tp, "pp": self.pp,
                "gpus": self.instances * self.tp * self.pp,
                "kv_pool_tokens_per_instance": self.kv_pool_tokens,
                "busy_fraction": self.busy_fraction,
                "kv_cache_utilization": self.kv_cache_utilization,
                "steps": self.steps, "preemptions": self.preemptions}


@dataclass(frozen=True)
class TransferStats:
    link: str
    link_bytes_s: float  # effective, per device
    bytes_per_token: float  # the whole prompt's KV, all ranks
    send_bytes_per_token_per_device: float
    recv_bytes_per_token_per_device: float
    transfer_s: np.ndarray  # per request: the transfer itself
    wait_s: np.ndarray  # per request: queued for a link
    link_busy_fraction: float

    def as_dict(self) -> dict[str, object]:
        def dist(v: np.ndarray) -> dict[str, float]:
            p50, p90, p99 = np.percentile(v, [50, 90, 99])
            return {"mean": float(v.mean()), "p50": float(p50), "p90": float(p90),
                    "p99": float(p99)}

        return {"link": self.link, "link_bytes_per_s_per_device": self.link_bytes_s,
                "kv_bytes_per_prompt_token": self.bytes_per_token,
                "send_bytes_per_token_per_device": self.send_bytes_per_token_per_device,
                "receive_bytes_per_token_per_device": self.recv_bytes_per_token_per_device,
                "transfer_s": dist(self.transfer_s), "link_wait_s": dist(self.wait_s),
                "link_busy_fraction": self.link_busy_fraction,
                "source": "per-device KV shard bytes / link bandwidth + latency "
                          "(analysis/comm.py p2p_s), FIFO per instance"}


@dataclass(frozen=True)
class DisaggregatedInfo:
    plan: Disaggregation
    prefill: PoolUse
    decode: PoolUse
    transfer: TransferStats
    prefill_done_s: np.ndarray  # per request: the prefill instance finished its prompt
    decode_arrival_s: np.ndarray  # per request: its KV is on the decode instance

    def as_dict(self) -> dict[str, object]:
        return {"prefill_instances": self.plan.prefill_instances,
                "decode_instances": self.plan.decode_instances,
                "prefill_tp": self.plan.prefill_tp, "decode_tp": self.plan.decode_tp,
                "prefill_pool": self.prefill.as_dict(), "decode_pool": self.decode.as_dict(),
                "kv_transfer": self.transfer.as_dict()}


def transfer_link(acc: Accelerator, eff: Efficiency, gpus_per_node: int, total_gpus: int
                  ) -> comm.Link:
    """NVLink when both pools fit in one NVLink domain, else one NIC per GPU."""
    topo = _topology(acc, gpus_per_node, eff)
    return topo.intra if total_gpus <= gpus_per_node else topo.inter


def _pool_use(role: str, traces: list[ReplicaTrace], tp: int, pp: int, tokens: int,
              blocks: int, duration: float) -> PoolUse:
    n = len(traces)
    busy = sum(tr.busy_s for tr in traces) / (n * duration) if duration > 0 else 0.0
    kv = (sum(tr.kv_block_seconds for tr in traces) / (n * duration * blocks)
          if duration > 0 and blocks else 0.0)
    return PoolUse(role, n, tp, pp, tokens, busy, kv, sum(tr.steps for tr in traces),
                   sum(tr.preemptions for tr in traces))


def simulate_disaggregated(spec: ModelSpec, acc: Accelerator, cfg: ServingConfig,
                           engine: EngineProfile, workload: Workload, plan: Disaggregation, *,
                           eff: Efficiency, slo_ttft_s: float | None, slo_tpot_s: float | None,
                           gpus_per_node: int, progress=None):  # type: ignore[no-untyped-def]
    """The request stream through x prefill and y decode instances (module docstring)."""
    from llmsizer.analysis import serving_sim as sim

    if workload.concurrency is not None:
        raise SpecError("disaggregate", f"{plan.prefill_instances}P:{plan.decode_instances}D",
                        "an open loop of arrivals (--qps or a trace), not --concurrency")
    cfg_p, cfg_d = replace(cfg, tp=plan.prefill_tp), replace(cfg, tp=plan.decode_tp)
    pool_p, seqs_p = sim.instance_limits(spec, acc, cfg_p, engine)
    pool_d, seqs_d = sim.instance_limits(spec, acc, cfg_d, engine)
    sim._check_requests(spec, engine, pool_d, workload)
    sim._check_requests(spec, engine, pool_p, replace(
        workload, output_tokens=(1,) * workload.requests))
    tokens = engine.max_num_batched_tokens
    cost_p = sim.step_cost(spec, acc, cfg_p, eff, max(tokens, seqs_p), gpus_per_node,
                           engine.step_overhead_s, engine.seq_overhead_s)
    cost_d = sim.step_cost(spec, acc, cfg_d, eff, max(tokens, seqs_d), gpus_per_node,
                           engine.step_overhead_s, engine.seq_overhead_s)
    k = workload.requests
    prompts, outputs = list(workload.prompt_tokens), list(workload.output_tokens)
    cached = (workload.cached_tokens(engine.block_size) if engine.prefix_caching else [0] * k)
    scheduled = list(workload.arrival_s or (0.0,) * k)

    # 1. Prefill pool: each request's prompt and its first token.
    send = np.empty(k)
    done = np.empty(k)
    traces_p: list[ReplicaTrace] = []
    x = plan.prefill_instances
    for r in range(x):
        idx = list(range(r, k, x))
        tr = run_replica(cost_p, engine, pool_p.num_blocks, seqs_p, [prompts[i] for i in idx],
                         [1] * len(idx), [scheduled[i] for i in idx], None, None,
                         [cached[i] for i in idx])
        send[idx], done[idx] = tr.send_s, tr.finish_s
        traces_p.append(tr)

    # 2. KV transfer, FIFO on the sender's and the receiver's links.
    link = transfer_link(acc, eff, gpus_per_node, plan.gpus(cfg.pp))
    send_pt = pool_p.block_bytes / pool_p.block_size  # KV bytes per token per device
    recv_pt = pool_d.block_bytes / pool_d.block_size
    per_dev = max(send_pt, recv_pt)
    y = plan.decode_instances
    order = sorted(range(k), key=lambda i: (done[i], i))
    free_p = [0.0] * x
    free_d = [0.0] * y
    arrival = np.empty(k)
    xfer = np.empty(k)
    wait = np.empty(k)
    dest = [0] * k
    for n, i in enumerate(order):
        p, d = i % x, n % y
        start = max(done[i], free_p[p], free_d[d])
        t = comm.p2p_s(prompts[i] * per_dev, link)
        free_p[p] = free_d[d] = start + t
        arrival[i], xfer[i], wait[i], dest[i] = start + t, t, start - done[i], d

    # 3. Decode pool: the transferred prompt (all but its last token) arrives with the request.
    first = np.empty(k)
    finish = np.empty(k)
    traces_d: list[tuple[list[int], ReplicaTrace]] = []
    finished = [0] * y
    for d in range(y):
        idx = sorted((i for i in range(k) if dest[i] == d), key=lambda i: (arrival[i], i))
        if not idx:
            continue

        def tick(n: int, d: int = d) -> None:
            finished[d] = n
            if progress:
                progress(sum(finished))

        tr = run_replica(cost_d, engine, pool_d.num_blocks, seqs_d, [prompts[i] for i in idx],
                         [outputs[i] for i in idx], [float(arrival[i]) for i in idx], None,
                         tick, loaded=[prompts[i] - 1 for i in idx])
        first[idx], finish[idx] = tr.first_token_s, tr.finish_s
        # the client's clock: TTFT and E2E run from the request's send to the prefill pool
        traces_d.append((idx, replace(tr, send_s=[float(send[i]) for i in idx])))
    result = sim._collect(spec, acc, cfg_d, engine, y, pool_d, seqs_d, workload, slo_ttft_s,
                          slo_tpot_s, traces_d)
    duration = result.duration_s
    busy_links = float(xfer.sum()) / (x * duration) if duration > 0 else 0.0
    info = DisaggregatedInfo(
        plan,
        _pool_use("prefill", traces_p, plan.prefill_tp, cfg.pp, pool_p.tokens,
                  pool_p.num_blocks, duration),
        _pool_use("decode", [tr for _, tr in traces_d], plan.decode_tp, cfg.pp, pool_d.tokens,
                  pool_d.num_blocks, duration),
        TransferStats(link.name, link.effective_bytes_s, _whole_kv_per_token(spec, cfg),
                      send_pt, recv_pt, xfer, wait, min(1.0, busy_links)),
        done, arrival)
    return replace(result, disaggregation=info,
                   steps=result.steps + info.prefill.steps,
                   preemptions=result.preemptions + info.prefill.preemptions)


def _whole_kv_per_token(spec: ModelSpec, cfg: ServingConfig) -> float:
    """KV bytes of one token over all layers, unsharded (what a prompt token's cache weighs)."""
    return float(replace(cfg, tp=1, pp=1).kv_cache(spec, None, paged=False).bytes_per_token)


def ttft_lower_bound(info: DisaggregatedInfo, send: np.ndarray) -> np.ndarray:
    """Per request: prefill done + transfer − send, the least TTFT can be."""
    return info.prefill_done_s + info.transfer.transfer_s - send

