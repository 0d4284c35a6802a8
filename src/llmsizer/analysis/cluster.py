"""A cluster: accelerators, how many per node, and the links between them."""

from __future__ import annotations

from dataclasses import dataclass

from llmsizer.analysis import comm
from llmsizer.analysis.efficiency import Efficiency
from llmsizer.specs.hardware import Accelerator


@dataclass(frozen=True)
class Cluster:
    accelerator: Accelerator
    gpus_per_node: int = 8
    inter_node_bytes_s: float = 50e9  # per GPU, one direction (a 400 Gb/s NIC per GPU)
    host_update_bytes_s: float = 12.5e9  # CPU optimizer traffic per GPU when offloaded
    pcie_bytes_s: float = 25e9  # host<->device per GPU, one direction

    def topology(self, eff: Efficiency) -> comm.Topology:
        acc = self.accelerator
        intra_bw = (acc.intra_node_link_bytes_s or self.pcie_bytes_s * 2) / 2  # one direction
        return comm.Topology(
            self.gpus_per_node,
            comm.Link(acc.intra_node_link_name or "PCIe", intra_bw, eff.collective_latency_s,
                      eff.comm_efficiency),
            comm.Link("inter-node network", self.inter_node_bytes_s,
                      2 * eff.collective_latency_s, eff.inter_node_efficiency))
