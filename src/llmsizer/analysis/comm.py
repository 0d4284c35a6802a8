"""Collectives on a topology: ring all-reduce, reduce-scatter, all-gather, all-to-all, p2p.

Costs follow the usual ring analysis (Patarasuk & Yuan 2009; NCCL's "bus bandwidth" convention in
nccl-tests/doc/PERFORMANCE.md): an all-reduce of B bytes over n ranks moves 2·(n-1)/n·B per rank,
reduce-scatter and all-gather (n-1)/n·B, all-to-all (n-1)/n·B. The latency term is α per hop over
⌈log2 n⌉ hops (twice for an all-reduce): small messages go through NCCL's tree/low-latency
protocols rather than n-1 ring steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmsizer.analysis.efficiency import Efficiency


@dataclass(frozen=True)
class Link:
    name: str
    bandwidth_bytes_s: float  # per GPU, one direction
    latency_s: float
    efficiency: float = 1.0  # bus bandwidth NCCL reaches over the link's peak

    @property
    def effective_bytes_s(self) -> float:
        return self.bandwidth_bytes_s * self.efficiency


@dataclass(frozen=True)
class Topology:
    gpus_per_node: int
    intra: Link
    inter: Link

    def link_for(self, group_size: int, stride: int) -> Link:
        """The slowest link a ring over `group_size` ranks spaced `stride` apart crosses."""
        if group_size <= 1:
            return self.intra
        return self.intra if stride * group_size <= self.gpus_per_node else self.inter


def all_reduce_s(nbytes: float, n: int, link: Link, eff: Efficiency) -> float:
    if n <= 1 or nbytes <= 0:
        return 0.0
    return (2 * (n - 1) / n * nbytes / (link.effective_bytes_s)
            + 2 * _hops(n) * link.latency_s)


def reduce_scatter_s(nbytes: float, n: int, link: Link, eff: Efficiency) -> float:
    if n <= 1 or nbytes <= 0:
        return 0.0
    return ((n - 1) / n * nbytes / (link.effective_bytes_s)
            + _hops(n) * link.latency_s)


all_gather_s = reduce_scatter_s


def all_to_all_s(nbytes: float, n: int, link: Link, eff: Efficiency) -> float:
    if n <= 1 or nbytes <= 0:
        return 0.0
    return (n - 1) / n * nbytes / (link.effective_bytes_s) + link.latency_s


def p2p_s(nbytes: float, link: Link, eff: Efficiency) -> float:
    if nbytes <= 0:
        return 0.0
    return nbytes / (link.effective_bytes_s) + link.latency_s


def _hops(n: int) -> int:
    return math.ceil(math.log2(n))
