"""NVML, wrapped the way nvitop does it: initialised lazily (once, by `engines.devices`, which
also counts the devices), and every query that the driver or device does not support returns
None ("N/A") instead of raising."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from engines.devices import gpu_count as device_count
from engines.devices import nvml as _nvml
from engines.devices import nvml_error as unavailable_reason

__all__ = ["GpuInfo", "device_count", "gpu", "gpus", "index_for_torch_device", "memory", "unavailable_reason"]


def _q(fn: Callable, *args):
    try:
        return fn(*args)
    except Exception:
        return None


@dataclass
class GpuInfo:
    index: int
    name: str
    memory_total: int | None
    memory_used: int | None
    driver: str | None
    utilization_pct: float | None
    power_w: float | None
    temperature_c: float | None
    mem_bus_width_bits: int | None
    mem_clock_mhz: int | None

    def peak_bandwidth_bytes_s(self) -> float | None:
        """Theoretical DRAM bandwidth from NVML's max memory clock and bus width (DDR: x2).
        A datasheet-style figure, labelled as such wherever it is shown."""
        if not self.mem_bus_width_bits or not self.mem_clock_mhz:
            return None
        return self.mem_clock_mhz * 1e6 * 2 * self.mem_bus_width_bits / 8


def _s(x):
    return x.decode() if isinstance(x, bytes) else x


def gpu(index: int = 0) -> GpuInfo | None:
    nv = _nvml()
    if not nv or index >= device_count():
        return None
    h = _q(nv.nvmlDeviceGetHandleByIndex, index)
    if h is None:
        return None
    mem = _q(nv.nvmlDeviceGetMemoryInfo, h)
    util = _q(nv.nvmlDeviceGetUtilizationRates, h)
    power = _q(nv.nvmlDeviceGetPowerUsage, h)
    temp = _q(nv.nvmlDeviceGetTemperature, h, getattr(nv, "NVML_TEMPERATURE_GPU", 0))
    return GpuInfo(
        index=index,
        name=_s(_q(nv.nvmlDeviceGetName, h)) or "NVIDIA GPU",
        memory_total=getattr(mem, "total", None),
        memory_used=getattr(mem, "used", None),
        driver=_s(_q(nv.nvmlSystemGetDriverVersion)),
        utilization_pct=getattr(util, "gpu", None),
        power_w=power / 1000.0 if power is not None else None,
        temperature_c=temp,
        mem_bus_width_bits=_q(nv.nvmlDeviceGetMemoryBusWidth, h),
        mem_clock_mhz=_q(nv.nvmlDeviceGetMaxClockInfo, h, getattr(nv, "NVML_CLOCK_MEM", 2)),
    )


def memory(index: int) -> tuple[int | None, int | None]:
    """(used, total) bytes of one device: a single NVML query, cheap enough per token."""
    nv = _nvml()
    h = _q(nv.nvmlDeviceGetHandleByIndex, index) if nv else None
    mem = _q(nv.nvmlDeviceGetMemoryInfo, h) if h is not None else None
    return getattr(mem, "used", None), getattr(mem, "total", None)


def index_for_torch_device(device_index: int = 0) -> int | None:
    """NVML's index of the GPU torch calls `cuda:device_index`. NVML numbers devices in PCI
    order and ignores CUDA_VISIBLE_DEVICES, so match them by UUID."""
    nv = _nvml()
    if not nv:
        return None
    try:
        import torch

        uuid = str(torch.cuda.get_device_properties(device_index).uuid)
    except Exception:
        return device_index if device_count() > device_index else None
    for i in range(device_count()):
        h = _q(nv.nvmlDeviceGetHandleByIndex, i)
        got = _s(_q(nv.nvmlDeviceGetUUID, h)) if h is not None else None
        if got and got.removeprefix("GPU-").removeprefix("MIG-") == uuid.removeprefix("GPU-"):
            return i
    return device_index if device_count() > device_index else None


def gpus() -> list[GpuInfo]:
    return [g for g in (gpu(i) for i in range(device_count())) if g is not None]
