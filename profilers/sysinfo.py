"""What machine this is: CPU model, cores, SIMD flags, RAM. Light imports only."""

from __future__ import annotations

import functools
import os
import platform

SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_bf16", "neon", "asimd", "sve")


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if ":" in line:
                    k, v = line.split(":", 1)
                    out.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    return out


def cpu_model() -> str:
    info = _cpuinfo()
    return info.get("model name") or info.get("Hardware") or platform.processor() or platform.machine()


def simd_flags() -> list[str]:
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    return [f for f in SIMD_FLAGS if f in flags]


def usable_cpus() -> int:
    """Logical CPUs this process may run on (its affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cores() -> tuple[int, int | None]:
    """(logical CPUs this process may use, physical cores)."""
    import psutil

    return usable_cpus(), psutil.cpu_count(logical=False)


def ram_bytes() -> tuple[int, int]:
    import psutil

    vm = psutil.virtual_memory()
    return vm.total, vm.available
