"""Hardware specs for the simulators: memory bandwidth, peak FLOP/s, the number of SMs (or
cores) and the on-chip SRAM each one has. GPU figures are the vendors' published ones (dense,
no sparsity); the `cpu` spec is this machine's, measured by `aios compare peak` (cached), with
the per-core L2 cache as its "SRAM".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

KiB = 1024


@dataclass(frozen=True)
class Spec:
    name: str
    bandwidth: float  # bytes/s, main memory (HBM, GDDR, DRAM)
    flops: float  # FLOP/s, the matmul peak at the simulated dtype (tensor cores, fp16/bf16 in, fp32 accumulate)
    sms: int  # streaming multiprocessors (or cores): units that each own an SRAM
    sram_per_sm: int  # bytes of on-chip SRAM (shared memory / L2) per unit
    source: str  # where the figures come from

    @property
    def sram_total(self) -> int:
        return self.sms * self.sram_per_sm

    def with_overrides(self, sram: int | None = None, bandwidth: float | None = None,
                       flops: float | None = None) -> "Spec":
        s = self
        if sram is not None:
            s = replace(s, sram_per_sm=sram)
        if bandwidth is not None:
            s = replace(s, bandwidth=bandwidth)
        if flops is not None:
            s = replace(s, flops=flops)
        if s != self:
            s = replace(s, source=s.source + " (overridden)")
        return s


# Published figures. A100: the FlashAttention paper's own description (Dao et al. 2022, sec. 2.1:
# "1.5-2.0 TB/s", "192KB of on-chip SRAM per each of 108 streaming multiprocessors"; 312 TFLOPS
# fp16 tensor); H100 SXM and H200: NVIDIA's datasheets (989 TFLOPS dense bf16; 3.35 and 4.8 TB/s;
# 132 SMs with up to 228 KB of shared memory each); RTX 4090: NVIDIA's Ada whitepaper (165 TFLOPS
# fp16 with fp32 accumulate, 1,008 GB/s, 128 SMs, up to 100 KB of shared memory each).
GPUS = {
    "a100": Spec("a100", 1.555e12, 312e12, 108, 192 * KiB, "A100 40GB: FlashAttention paper sec. 2.1, NVIDIA datasheet"),
    "h100": Spec("h100", 3.35e12, 989e12, 132, 228 * KiB, "H100 SXM: NVIDIA datasheet"),
    "h200": Spec("h200", 4.8e12, 989e12, 132, 228 * KiB, "H200 SXM: NVIDIA datasheet"),
    "rtx4090": Spec("rtx4090", 1.008e12, 165e12, 128, 100 * KiB, "RTX 4090: NVIDIA Ada whitepaper"),
}
NAMES = tuple(GPUS) + ("cpu",)


def l2_per_core() -> int | None:
    """This machine's L2 cache per core in bytes (Linux sysfs), or None."""
    for idx in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            if (idx / "level").read_text().strip() == "2":
                text = (idx / "size").read_text().strip().upper()
                mult = {"K": KiB, "M": KiB * KiB}.get(text[-1], 1)
                return int(text.rstrip("KMB")) * mult
        except (OSError, ValueError):
            continue
    return None


def cpu_spec(peaks=None) -> Spec:
    """This machine as a spec: `aios compare peak`'s measured copy bandwidth and float32
    matmul FLOP/s (measured now if none is cached), its cores, and the L2 per core."""
    import os

    from . import peaks as P

    pk = peaks or P.get()
    l2 = l2_per_core() or 512 * KiB
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return Spec("cpu", pk.cpu_bandwidth.median, pk.cpu_flops.median, cores, l2,
                f"this machine, measured by aios compare peak ({pk.measured_at}); L2 per core from sysfs")


def spec(name: str, peaks=None) -> Spec:
    if name == "cpu":
        return cpu_spec(peaks)
    return GPUS[name]
