"""plan-serve on the simulator: the deployment with the most goodput per GPU at a target rate.

For every tensor × pipeline layout that holds the model (TP inside a node), every sequence limit
(max-num-seqs) and every step token budget (max-num-batched-tokens: the prefill chunk) in a small
grid, the fewest replicas meeting the SLOs at the target rate are found by simulation
(search.min_replicas: the P-th percentile of TTFT and TPOT within the SLOs, DistServe's goodput
definition, arXiv 2401.09670). Candidates are ranked by goodput per GPU (requests/s meeting both
SLOs, as vllm bench serve's --goodput counts them, per GPU of the deployment; with a price per
GPU-hour that is goodput per unit of money as well, since every candidate runs on the same GPU),
ties by fewer GPUs, then lower P-th percentile TTFT.

The search is bounded: TP in {1, 2, 4, 8, 16} within a node, PP in {2, 4} only at the largest
such TP (PP as the cross-node dimension), × 3 sequence limits × 3 chunk sizes — at most 63
candidates — each a doubling-then-bisection over replicas within --gpus; the step-time table is
built once per layout and shared by its batch-limit variants. Candidates whose simulations come
out identical (the limits never bound) are shown once, with the larger limits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmsizer.errors import SpecError
from llmsizer.serving import search

TPS = (1, 2, 4, 8, 16)
PPS = (1, 2, 4)
SEQS = (64, 256, 1024)
CHUNKS = (2048, 8192, 16384)
MIN_REQUESTS_PER_REPLICA = 200


@dataclass(frozen=True)
class Candidate:
    tp: int
    pp: int
    replicas: int
    max_num_seqs: int
    max_num_batched_tokens: int
    ttft_s: float  # at the percentile
    tpot_s: float
    goodput_requests_per_s: float
    output_tokens_per_s: float
    kv_pool_tokens: int
    result: Any

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.replicas

    @property
    def goodput_per_gpu(self) -> float:
        return self.goodput_requests_per_s / self.gpus

    def as_dict(self, price: float | None) -> dict[str, Any]:
        out = {"tp": self.tp, "pp": self.pp, "replicas": self.replicas, "gpus": self.gpus,
               "max_num_seqs": self.max_num_seqs,
               "max_num_batched_tokens": self.max_num_batched_tokens,
               "ttft_s": self.ttft_s, "tpot_s": self.tpot_s,
               "goodput_requests_per_s": self.goodput_requests_per_s,
               "goodput_requests_per_s_per_gpu": self.goodput_per_gpu,
               "output_tokens_per_s": self.output_tokens_per_s,
               "output_tokens_per_s_per_gpu": self.output_tokens_per_s / self.gpus,
               "kv_pool_tokens_per_instance": self.kv_pool_tokens}
        if price is not None:
            good_tokens = self.output_tokens_per_s * (
                self.goodput_requests_per_s / max(self.result.requests_per_s, 1e-30))
            out["cost_per_hour"] = price * self.gpus
            out["cost_per_million_good_output_tokens"] = (
                price * self.gpus / 3600 / good_tokens * 1e6 if good_tokens > 0 else None)
            out["goodput_requests_per_hour_per_unit_cost"] = (
                self.goodput_requests_per_s * 3600 / (price * self.gpus) if price > 0 else None)
        return out


def layouts(spec: Any, gpus: int, gpus_per_node: int) -> list[tuple[int, int]]:
    from llmsizer.analysis.params import validate_parallel

    def valid(tp: int, pp: int) -> bool:
        try:
            validate_parallel(spec, tp, pp)
        except SpecError:
            return False
        return True

    tps = [tp for tp in TPS if tp <= min(gpus, gpus_per_node) and valid(tp, 1)]
    out = [(tp, 1) for tp in tps]
    # Pipeline stages only once tensor parallelism fills a node: PP is the cross-node dimension
    # (its hand-offs are point-to-point), TP inside a node.
    top = max(tps, default=0)
    for pp in PPS[1:]:
        for tp in TPS:
            if tp * pp <= gpus and tp <= gpus_per_node and (tp == top or not tps) \
                    and valid(tp, pp):
                out.append((tp, pp))
    return out


def plan(spec: Any, acc: Any, base_cfg: Any, engine: Any, eff: Any, *, gpus: int, qps: float,
         make_workload: Callable[[int], Any], percentile: float, slo_ttft_s: float | None,
         slo_tpot_s: float | None, requests: int, gpus_per_node: int = 8,
         speculation: Any = None, progress: Callable[[int, int], None] | None = None
         ) -> tuple[list[Candidate], int, int]:
    """(candidates meeting the SLOs within `gpus`, best first; candidates tried; simulations
    run)."""
    from dataclasses import replace

    from llmsizer.analysis.serving_sim import simulate

    grid = [(tp, pp, s, c) for tp, pp in layouts(spec, gpus, gpus_per_node)
            for s in SEQS for c in CHUNKS]
    found: list[Candidate] = []
    sims = 0
    fits_memory: dict[tuple[int, int], bool] = {}
    for i, (tp, pp, seqs, chunk) in enumerate(grid):
        if progress:
            progress(i, len(grid))
        if fits_memory.get((tp, pp)) is False:
            continue
        cfg = replace(base_cfg, tp=tp, pp=pp)
        eng = engine.with_limits(seqs, chunk)
        per = tp * pp
        limit = gpus // per

        def run(n: int, cfg: Any = cfg, eng: Any = eng) -> Any:
            nonlocal sims
            sims += 1
            return simulate(spec, acc, cfg, eng,
                            make_workload(max(requests, MIN_REQUESTS_PER_REPLICA * n)),
                            replicas=n, eff=eff, slo_ttft_s=slo_ttft_s, slo_tpot_s=slo_tpot_s,
                            gpus_per_node=gpus_per_node, speculation=speculation,
                            cost_tokens=max(CHUNKS))

        try:
            first = run(1)
        except SpecError:  # no room for a KV cache, a request longer than the pool, …
            fits_memory[(tp, pp)] = False
            continue
        fits_memory[(tp, pp)] = True
        # a replica cannot complete more than its saturated rate: start near qps / that
        ok1 = search.meets(first, percentile, slo_ttft_s, slo_tpot_s).meets
        start = 1 if ok1 else max(2, math.ceil(qps / max(first.requests_per_s, 1e-9) * 0.8))
        if start > limit:
            start = limit
        found_n = search.min_replicas(
            lambda n, first=first: first if n == 1 else run(n), percentile, slo_ttft_s, slo_tpot_s,
            start=min(start, limit), limit=limit)
        if not found_n.result:
            continue
        r = found_n.result
        ttft, tpot = search.at_percentile(r, percentile)
        found.append(Candidate(tp, pp, int(found_n.value), r.max_num_seqs,
                               eng.max_num_batched_tokens, ttft, tpot,
                               r.goodput_requests_per_s, r.throughput_tokens_per_s,
                               r.pool.tokens, r))
    if progress:
        progress(len(grid), len(grid))
    # Best goodput per GPU, then fewer GPUs, lower latency; among candidates whose simulations
    # came out the same (the batch limits never bound), the larger limits (more headroom).
    found.sort(key=lambda c: (-round(c.goodput_per_gpu, 9), c.gpus, round(c.ttft_s, 9),
                              round(c.tpot_s, 9), -c.max_num_seqs, -c.max_num_batched_tokens))
    unique: list[Candidate] = []
    seen = set()
    for c in found:
        key = (c.tp, c.pp, c.replicas, round(c.ttft_s, 9), round(c.tpot_s, 9),
               round(c.goodput_requests_per_s, 9))
        if key not in seen:
            seen.add(key)
            unique.append(c)
    return unique, len(grid), sims
