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

Disaggregated layouts (`disaggregate` "auto": beside the colocated ones; "only": instead of
them; "off", the default: not searched) are x prefill + y decode instances
(serving/disaggregated.py) for every pair of TPs above (PP 1, both pools inside the budget), with
the largest batch limits: an instance that only prefills or only decodes has no other phase to
protect from long steps, so the limits that trade throughput for TPOT in a colocated instance
have nothing to trade. x and y are searched by serving/plan_disaggregated.py; the candidates are
ranked with the colocated ones by the same goodput per GPU.
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
DISAGGREGATE = ("off", "auto", "only")


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
    split: Any = None  # serving/disaggregated.py Disaggregation: x prefill + y decode instances

    @property
    def gpus(self) -> int:
        return self.split.gpus(self.pp) if self.split else self.tp * self.pp * self.replicas

    @property
    def layout(self) -> str:
        if self.split is None:
            return f"tp{self.tp} pp{self.pp} x{self.replicas}"
        d = self.split
        return (f"{d.prefill_instances}P tp{d.prefill_tp} + {d.decode_instances}D "
                f"tp{d.decode_tp}")

    @property
    def goodput_per_gpu(self) -> float:
        return self.goodput_requests_per_s / self.gpus

    def as_dict(self, price: float | None) -> dict[str, Any]:
        """The plan's JSON; a disaggregated plan has `tp` and `replicas` null and its instances
        under `disaggregated`."""
        d = self.split
        out = {"tp": self.tp if d is None else None, "pp": self.pp,
               "replicas": self.replicas if d is None else None, "gpus": self.gpus,
               "layout": "colocated" if d is None else "disaggregated",
               "disaggregated": None if d is None else _split_dict(self.result, d),
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


def _split_dict(r: Any, d: Any) -> dict[str, Any]:
    info = r.disaggregation
    return {"prefill_instances": d.prefill_instances, "decode_instances": d.decode_instances,
            "prefill_tp": d.prefill_tp, "decode_tp": d.decode_tp,
            "ratio": f"{d.prefill_instances}P:{d.decode_instances}D",
            "prefill_busy_fraction": info.prefill.busy_fraction,
            "decode_busy_fraction": info.decode.busy_fraction,
            "kv_transfer_link": info.transfer.link,
            "kv_transfer_mean_s": float(info.transfer.transfer_s.mean())}


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
         speculation: Any = None, progress: Callable[[int, int], None] | None = None,
         disaggregate: str = "off") -> tuple[list[Candidate], int, int]:
    """(candidates meeting the SLOs within `gpus`, best first; candidates tried; simulations
    run). `disaggregate`: "off", "auto" or "only" (module docstring)."""
    from dataclasses import replace

    from llmsizer.analysis.serving_sim import simulate

    if disaggregate not in DISAGGREGATE:
        raise SpecError("disaggregate", disaggregate, ", ".join(DISAGGREGATE))
    if disaggregate != "off" and speculation is not None:
        raise SpecError("disaggregate", disaggregate, "off with speculative decoding (the "
                        "draft's KV transfer is not modelled)")
    lay = layouts(spec, gpus, gpus_per_node)
    grid = [] if disaggregate == "only" else [
        (tp, pp, s, c) for tp, pp in lay for s in SEQS for c in CHUNKS]
    tps = [tp for tp, pp in lay if pp == 1]
    pairs = [] if disaggregate == "off" else [
        (p, d) for p in tps for d in tps if p + d <= gpus]
    total = len(grid) + len(pairs)
    found: list[Candidate] = []
    sims = 0
    fits_memory: dict[tuple[int, int], bool] = {}
    for i, (tp, pp, seqs, chunk) in enumerate(grid):
        if progress:
            progress(i, total)
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
    for j, (p, d) in enumerate(pairs):
        if progress:
            progress(len(grid) + j, total)
        c, n = _disaggregated(spec, acc, base_cfg, engine, eff, p, d, gpus=gpus,
                              make_workload=make_workload, percentile=percentile,
                              slo_ttft_s=slo_ttft_s, slo_tpot_s=slo_tpot_s, requests=requests,
                              gpus_per_node=gpus_per_node)
        sims += n
        if c is not None:
            found.append(c)
    if progress:
        progress(total, total)
    # Best goodput per GPU, then fewer GPUs, lower latency; among candidates whose simulations
    # came out the same (the batch limits never bound), the larger limits (more headroom).
    found.sort(key=lambda c: (-round(c.goodput_per_gpu, 9), c.gpus, round(c.ttft_s, 9),
                              round(c.tpot_s, 9), -c.max_num_seqs, -c.max_num_batched_tokens))
    unique: list[Candidate] = []
    seen = set()
    for c in found:
        key = (c.tp, c.pp, c.replicas, c.split, round(c.ttft_s, 9), round(c.tpot_s, 9),
               round(c.goodput_requests_per_s, 9))
        if key not in seen:
            seen.add(key)
            unique.append(c)
    return unique, total, sims


def _disaggregated(spec: Any, acc: Any, base_cfg: Any, engine: Any, eff: Any, prefill_tp: int,
                   decode_tp: int, *, gpus: int, make_workload: Callable[[int], Any],
                   percentile: float, slo_ttft_s: float | None, slo_tpot_s: float | None,
                   requests: int, gpus_per_node: int) -> tuple[Candidate | None, int]:
    """The fewest-GPU x prefill (TP prefill_tp) + y decode (TP decode_tp) instances meeting the
    SLOs, as a Candidate (None when none fits or meets within `gpus`); and simulations run."""
    from dataclasses import replace

    from llmsizer.analysis.serving_sim import simulate
    from llmsizer.serving.disaggregated import Disaggregation
    from llmsizer.serving.plan_disaggregated import min_split

    eng = engine.with_limits(max(SEQS), max(CHUNKS))
    cfg = replace(base_cfg, pp=1)
    sims = 0

    def run(x: int, y: int) -> Any:
        nonlocal sims
        sims += 1
        return simulate(spec, acc, cfg, eng,
                        make_workload(max(requests, MIN_REQUESTS_PER_REPLICA * max(x, y))),
                        eff=eff, slo_ttft_s=slo_ttft_s, slo_tpot_s=slo_tpot_s,
                        gpus_per_node=gpus_per_node,
                        disaggregation=Disaggregation(x, y, prefill_tp, decode_tp))

    try:
        found = min_split(run, prefill_tp, decode_tp, 1, gpus, percentile, slo_ttft_s,
                          slo_tpot_s)
    except SpecError:  # a pool without room for a KV cache or a request
        return None, sims
    if found is None:
        return None, sims
    r = found.result
    ttft, tpot = search.at_percentile(r, percentile)
    split = Disaggregation(found.prefill_instances, found.decode_instances, prefill_tp,
                           decode_tp)
    return Candidate(decode_tp, 1, found.prefill_instances + found.decode_instances,
                     r.max_num_seqs, eng.max_num_batched_tokens, ttft, tpot,
                     r.goodput_requests_per_s, r.throughput_tokens_per_s, r.pool.tokens, r,
                     split), sims
