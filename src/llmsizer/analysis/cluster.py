"""A cluster: accelerators, how many per node, and the links between them."""

from __future__ import annotations

from dataclasses import dataclass

from llmsizer.analysis import comm
from llmsizer.analysis.efficiency import Efficiency, nic_bytes_s
from llmsizer.specs.hardware import Accelerator


@dataclass(frozen=True)
class Cluster:
    accelerator: Accelerator
    gpus_per_node: int = 8  # the NVLink domain
    # per GPU, one direction; None: the generation's usual NIC (llmsizer.analysis.efficiency
    # .nic_bytes_s: 200 Gb/s in DGX A100, 400 Gb/s in DGX H100/B200)
    inter_node_bytes_s: float | None = None
    host_update_bytes_s: float = 12.5e9  # CPU optimizer traffic per GPU when offloaded
    pcie_bytes_s: float = 25e9  # host<->device per GPU, one direction

    @property
    def nic_bytes_s(self) -> float:
        return self.inter_node_bytes_s or nic_bytes_s(self.accelerator)

    def topology(self, eff: Efficiency) -> comm.Topology:
        acc = self.accelerator
        intra_bw = (acc.intra_node_link_bytes_s or self.pcie_bytes_s * 2) / 2  # one direction
        return comm.Topology(
            self.gpus_per_node,
            comm.Link(acc.intra_node_link_name or "PCIe", intra_bw, eff.collective_latency_s,
                      eff.comm_efficiency),
            comm.Link("inter-node network", self.nic_bytes_s, comm.NCCL_NET_STEP_S,
                      eff.inter_node_efficiency))
