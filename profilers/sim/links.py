"""The hardware a cluster cost model prices: accelerators (peak FLOP/s, HBM bandwidth, memory)
and the links between them (bandwidth, per-step latency), with how GPUs are laid out in nodes.

This is a MODEL, not a measurement: every figure below is a vendor's nominal number or a rough
assumption, each with its source in a comment. Real collectives reach some fraction of a link's
nominal bandwidth, and a library adds fixed per-call costs; `profilers.sim.allreduce_bench`
measures the one link this machine has (gloo over loopback) and fits a `Link` to it, which is
how every figure here should eventually be replaced.

A link's `bandwidth` is bytes/s per direction, per GPU: what each member of a ring all-reduce
can send to its neighbour while it receives from the other one. Its `latency` is seconds per
step of a collective (one message handed to the next rank), the way NCCL's own tuning model
counts it (`src/graph/tuning.cc`: latency = base + steps x per-step hardware latency; the fixed
base, a few µs a call, is left out here, so small all-reduces are optimistic).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..hardware import GPUS

GB = 1e9


@dataclass(frozen=True)
class Link:
    name: str
    bandwidth: float  # bytes/s, per direction, per GPU (what one rank of a ring sends while it receives)
    latency: float  # seconds per step (one hand-off between two ranks)
    what: str  # where the figures come from

    def __post_init__(self):
        if not self.bandwidth > 0 or self.latency < 0:
            raise ValueError(f"link {self.name!r}: bandwidth must be positive and latency not negative")


@dataclass(frozen=True)
class Accelerator:
    name: str
    flops: float  # FLOP/s, dense bf16 matmul peak (tensor cores)
    hbm_bandwidth: float  # bytes/s
    memory_bytes: float  # HBM capacity
    what: str


@dataclass(frozen=True)
class Cluster:
    """A layout: `gpus_per_node` GPUs behind `intra` (NVLink through NVSwitch, or PCIe), nodes
    joined by `inter` (InfiniBand, Ethernet). Ranks are numbered node by node, and a model's
    ranks stage-major (rank = stage x tp + tp_rank, as engines.dist places them): a TP group
    stays inside a node while tp fits one, and pipeline hops are what crosses nodes."""

    accel: Accelerator
    gpus_per_node: int
    intra: Link
    inter: Link

    def node(self, rank: int) -> int:
        return rank // self.gpus_per_node

    def link_between(self, ranks) -> Link:
        """The link a collective over `ranks` is bound by: a flat ring that spans two nodes
        runs at the speed of its slowest hop, the inter-node one."""
        return self.intra if len({self.node(r) for r in ranks}) <= 1 else self.inter


# --- accelerators -------------------------------------------------------------------------
# FLOP/s and bandwidth are the ones `aios sim attention` uses (profilers.hardware: NVIDIA's H100
# SXM and H200 datasheets, dense bf16 989 TFLOP/s; HBM3 3.35 TB/s, HBM3e 4.8 TB/s); capacity from
# the same datasheets (80 GB and 141 GB).
ACCELERATORS = {
    "h100": Accelerator("h100", GPUS["h100"].flops, GPUS["h100"].bandwidth, 80 * GB,
                        "H100 SXM: NVIDIA datasheet (989 TFLOP/s dense bf16, 3.35 TB/s HBM3, 80 GB)"),
    "h200": Accelerator("h200", GPUS["h200"].flops, GPUS["h200"].bandwidth, 141 * GB,
                        "H200 SXM: NVIDIA datasheet (989 TFLOP/s dense bf16, 4.8 TB/s HBM3e, 141 GB)"),
}

# --- links ----------------------------------------------------------------------------------
# Per-step latencies: NCCL's tuning table (NVIDIA/nccl src/graph/tuning.cc, hwLat, ring with the
# low-latency LL protocol that small messages use): NVLink 0.47 µs, PCI 1.0 µs, network 2.7 µs.
LINKS = {
    # H100 SXM datasheet: 4th-generation NVLink, 900 GB/s per GPU in total, i.e. 450 GB/s each way;
    # in an HGX/DGX H100 node every GPU reaches every other through NVSwitch at that rate.
    "nvlink": Link("NVLink 4 (NVSwitch)", 450 * GB, 0.47e-6,
                   "H100 SXM datasheet: 900 GB/s bidirectional per GPU; NCCL tuning.cc ring LL latency"),
    # PCIe 5.0: 32 GT/s per lane x 16 lanes, 128b/130b encoding -> 63 GB/s each way (before
    # protocol overhead; measured peer-to-peer copies reach ~50 GB/s).
    "pcie": Link("PCIe Gen5 x16", 63 * GB, 1.0e-6,
                 "PCIe 5.0 spec: 32 GT/s x16, 128b/130b; NCCL tuning.cc ring LL latency (PCI)"),
    # InfiniBand NDR: 400 Gb/s per port = 50 GB/s each way; a DGX H100 has one ConnectX-7 NDR port
    # per GPU (8 per node), so every GPU's ring neighbour on the other node gets its own 50 GB/s.
    "infiniband": Link("InfiniBand NDR 400 Gb/s", 50 * GB, 2.7e-6,
                       "NDR 400 Gb/s per port, one ConnectX-7 per GPU (DGX H100); NCCL tuning.cc ring LL latency (net)"),
    # 100 GbE = 12.5 GB/s each way. The latency is an assumption (kernel TCP sockets take tens of
    # µs a round trip; 10 µs a hand-off), not a published figure.
    "ethernet": Link("Ethernet 100 GbE", 12.5 * GB, 10e-6,
                     "100 Gb/s line rate; latency an assumption (TCP sockets)"),
    # Placeholder values until measured: `aios sim parallel --measure-links` fits the real ones
    # (profilers.sim.allreduce_bench) and uses them in its place.
    "gloo": Link("gloo-loopback", 2 * GB, 30e-6,
                 "placeholder: replace with the fit of aios sim parallel --measure-links"),
}
LINK_NAMES = tuple(LINKS)


def link(name: str) -> Link:
    return LINKS[name]


__all__ = ["ACCELERATORS", "LINKS", "LINK_NAMES", "Accelerator", "Cluster", "Link", "link"]
