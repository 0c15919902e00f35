"""This machine's peaks, measured (never quoted from a datasheet) and cached.

  * CPU memory bandwidth: a 1 GiB copy with every core (a Numba prange loop), counting the
    bytes read plus the bytes written;
  * CPU FLOP/s: a large float32 BLAS matmul (np.matmul, 2048^3);
  * GPU (when torch sees one): a 1 GiB device-to-device copy and a large matmul (fp32, bf16).

Results are cached as JSON under ~/.cache/aios/ (or $AIOS_CACHE_DIR), keyed by the machine
(host, CPU model, core count, GPU name), so `aios compare` and `aios info` can show them
without measuring again. `aios compare peak --refresh` measures anew.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from engines.devices import cuda_status
from engines.files import atomic_write, cache_dir

from . import nvml
from .sysinfo import cpu_model
from . import threads
from .threads import BUSY_CPUS

PEAKS_VERSION = 1


@dataclass
class Peak:
    median: float
    min: float
    max: float
    unit: str  # "B/s" or "FLOP/s"
    how: str

    @classmethod
    def of(cls, rates: list[float], unit: str, how: str) -> "Peak":
        return cls(statistics.median(rates), min(rates), max(rates), unit, how)


@dataclass
class Peaks:
    machine: dict
    measured_at: str
    cpu_bandwidth: Peak
    cpu_flops: Peak
    gpu_bandwidth: Peak | None = None
    gpu_flops_fp32: Peak | None = None
    gpu_flops_bf16: Peak | None = None
    notes: list[str] = field(default_factory=list)
    busy_cpus: float | None = None  # CPU other processes used just before measuring, in cores
    load_avg_1m: float | None = None

    @property
    def measured_busy(self) -> bool:
        return self.busy_cpus is not None and self.busy_cpus >= BUSY_CPUS

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Peaks":
        def pk(x):
            return Peak(**x) if x else None

        return cls(machine=d["machine"], measured_at=d["measured_at"], cpu_bandwidth=pk(d["cpu_bandwidth"]),
                   cpu_flops=pk(d["cpu_flops"]), gpu_bandwidth=pk(d.get("gpu_bandwidth")),
                   gpu_flops_fp32=pk(d.get("gpu_flops_fp32")), gpu_flops_bf16=pk(d.get("gpu_flops_bf16")),
                   notes=d.get("notes", []), busy_cpus=d.get("busy_cpus"), load_avg_1m=d.get("load_avg_1m"))


def _parallel_copy_kernel():
    import numba

    @numba.njit(parallel=True, cache=True)
    def parallel_copy(dst, src):  # every core streams its share
        for i in numba.prange(src.shape[0]):
            dst[i] = src[i]

    return parallel_copy


def cpu_copy_bandwidth(nbytes: int = 1 << 30, repeat: int = 11, all_cores: bool = True) -> Peak:
    """Bytes read + bytes written per second copying `nbytes` (all cores, or np.copyto on one)."""
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    fn = _parallel_copy_kernel() if all_cores else np.copyto
    fn(dst, src)  # first touch (and compile)
    rates = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(dst, src)
        rates.append(2 * nbytes / (time.perf_counter() - t))
    how = f"{nbytes >> 20} MiB copy, {'all cores (Numba prange)' if all_cores else 'one core (np.copyto)'}, read+write"
    return Peak.of(rates, "B/s", how)


def cpu_matmul_flops(n: int = 2048, repeat: int = 5) -> Peak:
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    np.matmul(a, b)
    rates = []
    for _ in range(repeat):
        t = time.perf_counter()
        np.matmul(a, b)
        rates.append(2 * n**3 / (time.perf_counter() - t))
    return Peak.of(rates, "FLOP/s", f"np.matmul float32 {n}x{n}x{n} (BLAS)")


def gpu_peaks(repeat: int = 11) -> tuple[Peak, Peak, Peak, str]:
    import torch

    dev = torch.device("cuda")
    nbytes = 1 << 30
    src = torch.ones(nbytes // 4, device=dev)
    dst = torch.empty_like(src)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def timed(fn) -> float:
        fn()
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    bw = [2 * nbytes / timed(lambda: dst.copy_(src)) for _ in range(repeat)]
    del src, dst
    out = []
    for dtype, n in ((torch.float32, 8192), (torch.bfloat16, 8192)):
        a = torch.randn(n, n, device=dev, dtype=dtype)
        b = torch.randn(n, n, device=dev, dtype=dtype)
        rates = [2 * n**3 / timed(lambda: torch.mm(a, b)) for _ in range(max(3, repeat // 2))]
        out.append(Peak.of(rates, "FLOP/s", f"torch.mm {str(dtype).removeprefix('torch.')} {n}^3 "
                                           f"(TF32 {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'})"))
        del a, b
    return (Peak.of(bw, "B/s", "1 GiB device-to-device copy, read+write"), out[0], out[1],
            torch.cuda.get_device_name(0))


def machine_key() -> dict:
    g = nvml.gpu(0)
    return {"host": platform.node(), "cpu": cpu_model(), "cpus": os.cpu_count(), "gpu": g.name if g else None}


def cache_path() -> Path:
    key = machine_key()
    slug = "".join(c if c.isalnum() else "-" for c in f"{key['host']}-{key['cpus']}")[:60]
    return cache_dir() / f"peaks-v{PEAKS_VERSION}-{slug}.json"


def load_cached() -> Peaks | None:
    p = cache_path()
    try:
        d = json.loads(p.read_text())
        peaks = Peaks.from_dict(d)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None  # a cache that cannot be read is measured again
    if not _sound(peaks):
        return None  # nor one whose numbers are not numbers
    return peaks if peaks.machine == machine_key() else None


def _sound(p: Peaks) -> bool:
    """Every cached figure a positive finite number, every note a string: what the tables
    divide by and print."""
    import math

    def ok(pk: Peak | None, required: bool) -> bool:
        if pk is None:
            return not required
        nums = (pk.median, pk.min, pk.max)
        return (all(isinstance(x, (int, float)) and not isinstance(x, bool) and -1e300 < x < 1e300
                    and math.isfinite(x) and x > 0 for x in nums) and isinstance(pk.unit, str) and isinstance(pk.how, str))

    return (ok(p.cpu_bandwidth, True) and ok(p.cpu_flops, True) and ok(p.gpu_bandwidth, False)
            and ok(p.gpu_flops_fp32, False) and ok(p.gpu_flops_bf16, False) and isinstance(p.machine, dict)
            and isinstance(p.measured_at, str) and isinstance(p.notes, list) and all(isinstance(n, str) for n in p.notes)
            and (p.busy_cpus is None or isinstance(p.busy_cpus, (int, float))))


def measure(with_gpu: bool | None = None, progress=None) -> Peaks:
    step = progress or (lambda msg: None)
    busy, load = threads.busy_cpus(), threads.load_avg()
    step("CPU copy bandwidth")
    bw = cpu_copy_bandwidth()
    step("CPU matmul FLOP/s")
    flops = cpu_matmul_flops()
    peaks = Peaks(machine=machine_key(), measured_at=time.strftime("%Y-%m-%dT%H:%M:%S"), cpu_bandwidth=bw, cpu_flops=flops,
                  busy_cpus=round(busy, 2), load_avg_1m=load)
    if peaks.measured_busy:
        peaks.notes.append(f"measured while other processes used {busy:.1f} CPUs: the CPU peaks may read low, "
                           "and are measured again once the machine is idle")
    if with_gpu is None:
        with_gpu = cuda_status()[0]
    if with_gpu:
        step("GPU copy bandwidth and matmul FLOP/s")
        peaks.gpu_bandwidth, peaks.gpu_flops_fp32, peaks.gpu_flops_bf16, _ = gpu_peaks()
    return peaks


def get(refresh: bool = False, progress=None) -> Peaks:
    """Cached peaks for this machine, measured (and cached) if missing or `refresh`. Peaks
    cached while the machine was busy are measured again once it is idle."""
    if not refresh:
        cached = load_cached()
        if cached is not None and not (cached.measured_busy and threads.busy_cpus() < BUSY_CPUS):
            return cached
    peaks = measure(progress=progress)
    try:
        p = cache_path()
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(p, json.dumps(peaks.to_dict(), indent=2))
    except OSError:
        pass  # an unwritable cache only costs a re-measure next time
    return peaks
