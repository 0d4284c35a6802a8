"""Collectives as NCCL runs them on a topology: ring all-reduce, reduce-scatter, all-gather,
all-to-all, p2p.

Bandwidth: an all-reduce of B bytes over n ranks moves 2·(n-1)/n·B per rank, reduce-scatter and
all-gather (n-1)/n·B, all-to-all (n-1)/n·B, at the group's *bus bandwidth* (nccl-tests
doc/PERFORMANCE.md). Inside an NVLink domain that is the link's bandwidth times the generation's
measured all-reduce bus-bandwidth fraction. A group that spans k nodes with g members in each
runs hierarchically over the g NICs its members own (rail-optimised, one NIC per GPU): only
(k-1)/k of the data crosses the network, in g parallel streams, so its bus bandwidth is
NIC·(n-1)/(k-1) (stas00/ml-engineering network/README.md, "Inter-node speed depends on intra-node
speed": per-accelerator NIC rate = busbw·(k-1)/(n-1)), capped by NVLink's. An all-to-all cannot
aggregate NICs: each GPU sends the share bound for other nodes through its own NIC (nccl-tests
#267).

Latency: NCCL's tuner model (NVIDIA/nccl src/graph/tuning.cc): a base latency per collective plus
one per step — a ring pass has n-1 steps, of which those that cross a node boundary (one per node)
pay the network's step latency and the rest NVLink's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmsizer.analysis.efficiency import Efficiency

NCCL_BASE_LATENCY_S = 8.4e-6  # tuning.cc: ring, Simple protocol, base latency
NCCL_NET_STEP_S = 14e-6  # tuning.cc: per network step, ring, Simple protocol


@dataclass(frozen=True)
class Link:
    name: str
    bandwidth_bytes_s: float  # per GPU, one direction
    latency_s: float  # per ring step inside the NVLink domain
    efficiency: float = 1.0  # bus bandwidth NCCL reaches over the link's peak
    nodes: int = 1  # nodes the group spans
    inter_latency_s: float = NCCL_NET_STEP_S  # per step that crosses a node boundary
    nic_bytes_s: float = 0.0  # one NIC's effective bandwidth (all-to-all, p2p across nodes)
    members_per_node: int = 0  # the group's ranks in one node (0: all in one node)
    # serving engines reduce small messages with one-shot/two-shot kernels of their own (vLLM's
    # custom all-reduce, TensorRT-LLM's), whose latency grows with log2 n, not NCCL's ring steps
    log_latency: bool = False

    @property
    def effective_bytes_s(self) -> float:
        return self.bandwidth_bytes_s * self.efficiency

    def ring_latency(self, n: int, passes: int) -> float:
        """Latency of `passes` ring passes over n ranks (NCCL's base plus per-step latencies)."""
        if self.log_latency:
            return passes * math.ceil(math.log2(n)) * self.latency_s
        steps = passes * (n - 1)
        inter = passes * self.nodes if self.nodes > 1 else 0
        return NCCL_BASE_LATENCY_S + (steps - inter) * self.latency_s + \
            inter * self.inter_latency_s


@dataclass(frozen=True)
class Topology:
    gpus_per_node: int  # the NVLink domain (8 in a DGX/HGX node, 72 in a GB200 NVL72 rack)
    intra: Link
    inter: Link  # one NIC per GPU

    def link_for(self, group_size: int, stride: int) -> Link:
        """The link a collective over `group_size` ranks spaced `stride` apart runs at: NVLink
        inside a node, else the hierarchical bus bandwidth of the NICs its members own.
        Remembered per topology (a search asks for the same few links thousands of times)."""
        links = self.__dict__.setdefault("_links", {})
        link = links.get((group_size, stride))
        if link is None:
            link = links[group_size, stride] = self._link_for(group_size, stride)
        return link

    def _link_for(self, group_size: int, stride: int) -> Link:
        if group_size <= 1 or stride * group_size <= self.gpus_per_node:
            return self.intra
        per_node = max(1, min(group_size, self.gpus_per_node // max(1, stride)))
        nodes = math.ceil(group_size / per_node)
        nic = self.inter.effective_bytes_s
        bus = min(self.intra.effective_bytes_s,
                  nic * (group_size - 1) / max(1, nodes - 1))
        return Link(f"{self.inter.name} ({nodes} nodes, {per_node} NICs each)", bus,
                    self.intra.latency_s, 1.0, nodes, self.inter.latency_s, nic, per_node)


def all_reduce_s(nbytes: float, n: int, link: Link, eff: Efficiency | None = None) -> float:
    if n <= 1 or nbytes <= 0:
        return 0.0
    return 2 * (n - 1) / n * nbytes / link.effective_bytes_s + link.ring_latency(n, 2)


def reduce_scatter_s(nbytes: float, n: int, link: Link, eff: Efficiency | None = None) -> float:
    if n <= 1 or nbytes <= 0:
        return 0.0
    return (n - 1) / n * nbytes / link.effective_bytes_s + link.ring_latency(n, 1)


all_gather_s = reduce_scatter_s


def all_to_all_s(nbytes: float, n: int, link: Link, eff: Efficiency | None = None) -> float:
    """`nbytes` per rank exchanged with the n-1 others: inside a node over NVLink; across nodes
    the share bound for other nodes leaves through the rank's own NIC."""
    if n <= 1 or nbytes <= 0:
        return 0.0
    if link.nodes <= 1:
        return (n - 1) / n * nbytes / link.effective_bytes_s + (
            link.latency_s if link.log_latency else NCCL_BASE_LATENCY_S)
    remote = (n - link.members_per_node) / n * nbytes
    local = (link.members_per_node - 1) / n * nbytes
    return max(remote / link.nic_bytes_s, local / link.effective_bytes_s) + \
        NCCL_BASE_LATENCY_S + link.inter_latency_s


# MoE token dispatchers: Megatron-Core's "alltoall" (NCCL all-to-all of one copy per (token,
# expert) pair) or a deduplicating kernel library — DeepEP's normal kernels and NVIDIA's HybridEP
# send a token once to each rank that hosts any of its experts, and across nodes once to each node
# (over the RDMA NIC of the same local index, then forwarded over NVLink): deepseek-ai/DeepEP
# docs/legacy.md ("kernels optimized for asymmetric-domain bandwidth forwarding, such as
# forwarding data from NVLink domain to RDMA domain"; internode bottleneck bandwidth 43-58 GB/s
# on ~50 GB/s CX7 NICs, i.e. the NIC's rate on the deduplicated bytes).
MOE_DISPATCHERS = ("alltoall", "deepep", "hybridep")


def expected_hosts_hit(experts: int, top_k: int, hosts: int, groups: int = 1,
                       groups_per_token: int = 1) -> float:
    """Distinct hosts (ranks or nodes, each holding experts/hosts consecutive experts) that one
    token's top-k experts fall on, in expectation, when routing is uniform (as the published
    benchmarks force it). With group-limited routing (DeepSeek-V3: a token's experts come from
    `groups_per_token` of `groups` groups) and groups that align with hosts, it is the hosts its
    chosen groups fall on."""
    if hosts <= 1:
        return 1.0
    if groups > 1 and groups_per_token < groups and groups % hosts == 0:
        experts, top_k = groups, groups_per_token
    per_host = experts // hosts
    if per_host < 1:
        return float(min(hosts, top_k))
    miss = math.comb(experts - per_host, top_k) / math.comb(experts, top_k) \
        if experts - per_host >= top_k else 0.0
    return hosts * (1.0 - miss)


def moe_dispatch_s(token_bytes: float, tokens: float, top_k: int, experts: int, ep: int,
                   link: Link, dispatcher: str = "alltoall", groups: int = 1,
                   groups_per_token: int = 1) -> float:
    """One dispatch (or combine) of `tokens` tokens of `token_bytes` each from one rank of an
    expert-parallel group of `ep` ranks over `link`."""
    if ep <= 1 or tokens <= 0:
        return 0.0
    if dispatcher == "alltoall":
        return all_to_all_s(token_bytes * tokens * top_k, ep, link)
    # one copy per distinct destination rank (NVLink) and per distinct remote node (RDMA)
    ranks = expected_hosts_hit(experts, top_k, ep, groups, groups_per_token)
    nvlink = tokens * token_bytes * ranks * (ep - 1) / ep / link.effective_bytes_s
    if link.nodes <= 1:
        return nvlink + (link.latency_s if link.log_latency else NCCL_BASE_LATENCY_S)
    nodes = expected_hosts_hit(experts, top_k, link.nodes, groups, groups_per_token)
    remote = tokens * token_bytes * nodes * (link.nodes - 1) / link.nodes
    # what arrives is forwarded over NVLink to the node's other ranks it is bound for
    per_node = link.members_per_node
    local = tokens * token_bytes * ranks * (per_node - 1) / per_node
    return max(remote / link.nic_bytes_s, local / link.effective_bytes_s) + \
        NCCL_BASE_LATENCY_S + link.inter_latency_s


def p2p_s(nbytes: float, link: Link, eff: Efficiency | None = None) -> float:
    """A send/receive between two ranks: over NVLink, or one NIC across nodes."""
    if nbytes <= 0:
        return 0.0
    if link.nodes > 1:
        return nbytes / link.nic_bytes_s + link.inter_latency_s
    return nbytes / link.effective_bytes_s + link.latency_s
