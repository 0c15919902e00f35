"""Memory samples: host RSS (psutil), device used/total (NVML), torch allocator stats."""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import asdict, dataclass

import psutil

from . import nvml


@dataclass
class MemorySample:
    t_s: float  # since the sampler started
    rss_bytes: int
    device_used_bytes: int | None = None
    device_total_bytes: int | None = None
    torch_allocated_bytes: int | None = None
    torch_reserved_bytes: int | None = None
    torch_peak_bytes: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (Linux: write 5 to /proc/self/clear_refs), so
    the peak of a run is its own, not an earlier run's in the same process."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """The process's RSS high-water mark: VmHWM (since the last reset) where Linux has it,
    else ru_maxrss (KiB on Linux, bytes on macOS; never reset)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


class MemorySampler:
    """Samples at most every `min_interval_s` (NVML queries cost ~0.1 ms), always on `force`."""

    def __init__(self, gpu_index: int | None = None, min_interval_s: float = 0.05):
        self.gpu_index = gpu_index
        self.min_interval_s = min_interval_s
        self.samples: list[MemorySample] = []
        self._proc = psutil.Process()
        self._t0 = time.perf_counter()
        self._last = -1e9

    def sample(self, engine=None, force: bool = False) -> MemorySample | None:
        now = time.perf_counter()
        if not force and now - self._last < self.min_interval_s:
            return None
        self._last = now
        s = MemorySample(t_s=now - self._t0, rss_bytes=self._proc.memory_info().rss)
        if self.gpu_index is not None:
            s.device_used_bytes, s.device_total_bytes = nvml.memory(self.gpu_index)
        if engine is not None:
            for k, v in engine.memory().items():
                setattr(s, k, v)
        self.samples.append(s)
        return s
