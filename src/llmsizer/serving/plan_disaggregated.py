"""plan-serve's disaggregated layouts: how many prefill and decode instances (and at which TP)
meet the SLOs at a target rate with the fewest GPUs.

For one pair (prefill TP, decode TP) the search runs serving/disaggregated.py's simulation:

1. One prefill and one decode instance at the target rate. The busy time each pool needs is
   (nearly) what serving the stream costs whatever the instance count (a prefill step's time grows
   with its tokens, a decode pool's busy time only shrinks as its batches grow), so
   ⌈busy seconds / offered seconds⌉ of each is the least that keeps up: the search starts there.
2. While the P-th percentile misses an SLO, the pool that causes it grows by one instance: a TPOT
   miss is the decode pool's; a TTFT miss is the prefill pool's when the prefill part of TTFT
   (send → prefill done, plus the KV transfer) is the larger at the percentile, else the decode
   pool's (the request waited there for a sequence slot or blocks before its first token).
3. Then each pool shrinks by one while the SLOs still hold (a TTFT miss blamed on the wrong pool
   may have grown it).

Every answer is a simulated (x, y) that met the SLOs; at most MAX_SIMS simulations per pair.
DistServe (OSDI'24, arXiv 2401.09670 §4) searches the same two numbers (instances per phase and
their parallelism) for goodput per GPU, with a queueing model per phase instead of a simulation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmsizer.serving.search import at_percentile, meets

MAX_SIMS = 14


@dataclass(frozen=True)
class SplitFound:
    prefill_instances: int
    decode_instances: int
    result: Any  # the simulation at the answer (SimulationResult with .disaggregation)
    simulations: int


def ttft_parts(r: Any, percentile: float) -> tuple[float, float]:
    """(prefill part, decode part) of TTFT at the percentile over requests: send → KV on the
    decode instance, and KV arrival → first token (waiting for a slot, then the first step)."""
    info = r.disaggregation
    prefill = info.decode_arrival_s - r.send_s
    decode = r.first_token_s - info.decode_arrival_s
    return (float(np.percentile(prefill, percentile)),
            float(np.percentile(decode, percentile)))


def min_split(run: Callable[[int, int], Any], prefill_tp: int, decode_tp: int, pp: int,
              gpu_limit: int, percentile: float, slo_ttft_s: float | None,
              slo_tpot_s: float | None) -> SplitFound | None:
    """The fewest-GPU (prefill instances, decode instances) meeting the SLOs (module docstring);
    None when none within `gpu_limit` GPUs does. `run(x, y)` simulates x prefill + y decode
    instances at the target rate (an open loop: the requests arrive over its last arrival time).
    """
    results: dict[tuple[int, int], tuple[bool, Any]] = {}

    def gpus(x: int, y: int) -> int:
        return (x * prefill_tp + y * decode_tp) * pp

    def probe(x: int, y: int) -> tuple[bool, Any]:
        if (x, y) not in results:
            r = run(x, y)
            results[(x, y)] = (meets(r, percentile, slo_ttft_s, slo_tpot_s).meets, r)
        return results[(x, y)]

    if gpus(1, 1) > gpu_limit:
        return None
    ok, r = probe(1, 1)
    x = y = 1
    if not ok:
        info = r.disaggregation
        offered_s = max(r.workload.arrival_s[-1], 1e-9)
        busy_p = info.prefill.busy_fraction * r.duration_s
        busy_d = info.decode.busy_fraction * r.duration_s
        x = max(1, math.ceil(busy_p / offered_s - 1e-9))
        y = max(1, math.ceil(busy_d / offered_s - 1e-9))
        if gpus(x, y) > gpu_limit:  # even the least that keeps up is too big
            return None
        while True:
            ok, r = probe(x, y)
            if ok:
                break
            if len(results) >= MAX_SIMS:
                return None
            ttft, tpot = at_percentile(r, percentile)
            grow_x = grow_y = False
            if slo_tpot_s is not None and tpot > slo_tpot_s:
                grow_y = True
            if slo_ttft_s is not None and ttft > slo_ttft_s:
                part_p, part_d = ttft_parts(r, percentile)
                if part_p >= part_d:
                    grow_x = True
                else:
                    grow_y = True
            nx, ny = x + int(grow_x), y + int(grow_y)
            if gpus(nx, ny) > gpu_limit:  # try the other pool alone before giving up
                if grow_x and grow_y and gpus(x, ny) <= gpu_limit:
                    nx = x
                elif grow_x and grow_y and gpus(nx, y) <= gpu_limit:
                    ny = y
                else:
                    return None
            x, y = nx, ny
    # shrink each pool while the SLOs hold
    for axis in (0, 1):
        while len(results) < MAX_SIMS:
            nx, ny = (x - 1, y) if axis == 0 else (x, y - 1)
            if min(nx, ny) < 1:
                break
            ok2, r2 = probe(nx, ny)
            if not ok2:
                break
            x, y, r = nx, ny, r2
    return SplitFound(x, y, r, len(results))
