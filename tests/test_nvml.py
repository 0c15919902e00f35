"""profilers/nvml.py and engines/devices.py against a fake `pynvml` module: the queries a GPU
machine answers, the ones its driver does not support (None, shown as N/A), and no driver at
all. The code only a GPU runs is exercised here, on the CPU."""

from __future__ import annotations

import sys
import types

import pytest

from engines import devices
from profilers import nvml

GIB = 1 << 30


class NVMLError(Exception):
    pass


def fake_pynvml(count=2, unsupported=()):
    """A pynvml whose devices are H100s; calls named in `unsupported` raise as NVML does."""
    m = types.ModuleType("pynvml")
    m.NVML_TEMPERATURE_GPU, m.NVML_CLOCK_MEM = 0, 2
    calls = {
        "nvmlInit": lambda: None,
        "nvmlDeviceGetCount": lambda: count,
        "nvmlDeviceGetHandleByIndex": lambda i: ("handle", i),
        "nvmlDeviceGetMemoryInfo": lambda h: types.SimpleNamespace(total=80 * GIB, used=(5 + h[1]) * GIB),
        "nvmlDeviceGetUtilizationRates": lambda h: types.SimpleNamespace(gpu=93),
        "nvmlDeviceGetPowerUsage": lambda h: 412_500,  # milliwatts
        "nvmlDeviceGetTemperature": lambda h, kind: 61,
        "nvmlDeviceGetName": lambda h: b"NVIDIA H100 80GB HBM3",
        "nvmlSystemGetDriverVersion": lambda: "570.86",
        "nvmlDeviceGetMemoryBusWidth": lambda h: 5120,
        "nvmlDeviceGetMaxClockInfo": lambda h, kind: 2619,
        "nvmlDeviceGetUUID": lambda h: f"GPU-uuid-{h[1]}",
    }
    for name, fn in calls.items():
        if name in unsupported:
            def fn(*a, _name=name):
                raise NVMLError(f"{_name}: Not Supported")
        setattr(m, name, fn)
    return m


@pytest.fixture
def with_nvml(monkeypatch):
    def install(module):
        monkeypatch.setitem(sys.modules, "pynvml", module)
        monkeypatch.setattr(devices, "_state", {"nvml": None, "error": None})
    return install


def test_gpus_as_nvml_reports_them(with_nvml):
    with_nvml(fake_pynvml(count=2))
    assert devices.gpu_count() == nvml.device_count() == 2
    g = nvml.gpu(1)
    assert (g.index, g.name, g.memory_total, g.memory_used) == (1, "NVIDIA H100 80GB HBM3", 80 * GIB, 6 * GIB)
    assert (g.utilization_pct, g.power_w, g.temperature_c, g.driver) == (93, 412.5, 61, "570.86")
    # HBM3 on a 5120-bit bus at 2619 MHz, double data rate: 3.35 TB/s, the H100 SXM datasheet figure
    assert g.peak_bandwidth_bytes_s() == pytest.approx(3.352e12, rel=1e-3)
    assert nvml.memory(0) == (5 * GIB, 80 * GIB)
    assert [x.index for x in nvml.gpus()] == [0, 1]
    assert nvml.gpu(2) is None and nvml.unavailable_reason() is None


def test_unsupported_queries_are_none(with_nvml):
    with_nvml(fake_pynvml(count=1, unsupported=("nvmlDeviceGetPowerUsage", "nvmlDeviceGetTemperature",
                                                "nvmlDeviceGetUtilizationRates", "nvmlDeviceGetMemoryBusWidth")))
    g = nvml.gpu(0)
    assert g.power_w is None and g.temperature_c is None and g.utilization_pct is None
    assert g.peak_bandwidth_bytes_s() is None and g.memory_total == 80 * GIB


def test_no_driver(with_nvml):
    m = fake_pynvml()

    def fail():
        raise NVMLError("NVML Shared Library Not Found")

    m.nvmlInit = fail
    with_nvml(m)
    assert devices.gpu_count() == 0 and nvml.gpus() == [] and nvml.gpu(0) is None
    assert nvml.memory(0) == (None, None)
    assert "NVML Shared Library Not Found" in nvml.unavailable_reason()


def test_torch_device_is_matched_by_uuid(with_nvml, monkeypatch):
    """NVML numbers GPUs in PCI order and ignores CUDA_VISIBLE_DEVICES: cuda:0 may be NVML's 1."""
    import torch

    with_nvml(fake_pynvml(count=2))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(uuid="uuid-1"))
    assert nvml.index_for_torch_device(0) == 1
