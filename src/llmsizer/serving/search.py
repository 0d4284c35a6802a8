"""Inverse questions on the simulator: the highest rate meeting SLOs, the fewest replicas for a
rate, and what a KV pool holds.

SLOs are judged at a percentile over requests, as DistServe's goodput is (arXiv 2401.09670: the
highest rate at which a chosen share of requests, e.g. 90 %, meets both the TTFT and the TPOT
objective): the P-th percentile of TTFT ≤ the TTFT SLO and the P-th percentile of TPOT (per
request, vllm bench serve's definition) ≤ the TPOT SLO.

Monotone by construction: with a fixed seed the arrival times at rate r are one draw scaled by
1/r (workload.gamma_arrivals draws standard gamma variates and rescales them so the last request
lands at N/r), so a higher rate is the same requests arriving proportionally sooner. Simulated
latency is not guaranteed to be monotone in the rate (a scheduling step can fall either side of
an arrival), so the search never relies on it: it keeps a bracket [lo meets, hi misses], every
rate it accepts is one it simulated, and the answer is the highest simulated rate that meets the
SLOs with every lower probed rate meeting them too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_PROBES = 24


@dataclass(frozen=True)
class Probe:
    value: float  # a rate (req/s) or a replica count
    ttft_s: float  # at the percentile
    tpot_s: float
    meets: bool

    def as_dict(self, key: str) -> dict[str, Any]:
        return {key: self.value, "ttft_s": self.ttft_s, "tpot_s": self.tpot_s,
                "meets": self.meets}


def at_percentile(r: Any, percentile: float) -> tuple[float, float]:
    """(TTFT, TPOT) at the percentile over requests of a SimulationResult."""
    ttft = float(np.percentile(r.ttft, percentile))
    tp = r.tpot_all[r.outputs > 1]
    tpot = float(np.percentile(tp, percentile)) if tp.size else 0.0
    return ttft, tpot


def meets(r: Any, percentile: float, slo_ttft_s: float | None, slo_tpot_s: float | None
          ) -> Probe:
    ttft, tpot = at_percentile(r, percentile)
    ok = (slo_ttft_s is None or ttft <= slo_ttft_s) and (slo_tpot_s is None or tpot <= slo_tpot_s)
    return Probe(math.nan, ttft, tpot, ok)


@dataclass
class SearchResult:
    value: float  # the answer (0 when nothing meets)
    result: Any | None  # the simulation at the answer
    probes: list[Probe] = field(default_factory=list)


def max_rate(run: Callable[[float], Any], percentile: float, slo_ttft_s: float | None,
             slo_tpot_s: float | None, saturation_rate: float, *, rel_tol: float = 0.01,
             log: Callable[[Probe], None] | None = None) -> SearchResult:
    """The highest request rate whose simulation meets the SLOs, by bisection on the rate.
    `run(rate)` simulates; `saturation_rate` (requests/s the deployment completes when all are
    sent at once) seeds the bracket."""
    out = SearchResult(0.0, None)

    def probe(rate: float) -> tuple[bool, Any]:
        r = run(rate)
        return _record(out, rate, r, percentile, slo_ttft_s, slo_tpot_s, log), r

    lo = saturation_rate / 64
    ok, r = probe(lo)
    if not ok:  # even a trickle misses: nothing meets (e.g. a TTFT SLO under one prefill)
        return out
    out.value, out.result = lo, r
    hi = saturation_rate * 1.25
    while len(out.probes) < MAX_PROBES:
        ok, r = probe(hi)
        if not ok:
            break
        out.value, out.result, lo = hi, r, hi
        hi *= 2
    else:
        return out
    while len(out.probes) < MAX_PROBES and (hi - lo) > rel_tol * hi:
        mid = math.sqrt(lo * hi) if hi > 4 * lo else (lo + hi) / 2
        ok, r = probe(mid)
        if ok:
            out.value, out.result, lo = mid, r, mid
        else:
            hi = mid
    return out


def _record(out: SearchResult, x: float, result: Any, percentile: float,
            slo_ttft_s: float | None, slo_tpot_s: float | None,
            log: Callable[[Probe], None] | None) -> bool:
    """Judge one simulation against the SLOs, keep it as a probe at `x`, report it."""
    p = meets(result, percentile, slo_ttft_s, slo_tpot_s)
    p = Probe(x, p.ttft_s, p.tpot_s, p.meets)
    out.probes.append(p)
    if log:
        log(p)
    return p.meets


def min_replicas(run: Callable[[int], Any], percentile: float, slo_ttft_s: float | None,
                 slo_tpot_s: float | None, *, start: int = 1, limit: int = 4096,
                 log: Callable[[Probe], None] | None = None) -> SearchResult:
    """The fewest replicas whose simulation at the target rate meets the SLOs: doubling from
    `start` until one meets, then bisection between the last miss and the first meet."""
    out = SearchResult(0, None)
    results: dict[int, tuple[bool, Any]] = {}

    def probe(n: int) -> bool:
        if n not in results:
            r = run(n)
            results[n] = (_record(out, n, r, percentile, slo_ttft_s, slo_tpot_s, log), r)
        return results[n][0]

    n, miss = max(1, start), 0
    while not probe(n):
        miss = n
        if n >= limit or len(out.probes) >= MAX_PROBES:
            return out
        n = min(limit, n * 2)
    while n - miss > 1 and len(out.probes) < MAX_PROBES:
        mid = (n + miss) // 2
        if probe(mid):
            n = mid
        else:
            miss = mid
    out.value, out.result = n, results[n][1]
    return out


def memory_capacity(pool: Any, max_seq_len: int | None, request_tokens: int, reserved_slots: int,
                    max_num_seqs: int) -> dict[str, int]:
    """What one instance's KV pool holds: the longest single context (capped by the model's
    positions), and how many sequences of `request_tokens` fit at once (paged: each holds
    ⌈(tokens + reserved)/block⌉ blocks), also capped by the engine's sequence limit."""
    bs = pool.block_size
    longest = pool.tokens - reserved_slots
    if max_seq_len:
        longest = min(longest, max_seq_len)
    per_seq = -(-(request_tokens + reserved_slots) // bs)
    seqs = pool.num_blocks // per_seq if per_seq else 0
    return {"max_context_tokens": max(0, longest), "max_concurrent_sequences": seqs,
            "max_running_sequences": min(seqs, max_num_seqs),
            "blocks_per_sequence": per_seq, "request_tokens": request_tokens}
