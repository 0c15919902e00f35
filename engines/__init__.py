"""Engines: one module per backend, found by name and imported only when used.

Adding an engine = one module with an ``Engine`` subclass + one line in ``BACKENDS``.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

from .errors import BackendError


class Backend(NamedTuple):
    module: str
    cls: str
    what: str
    dtypes: tuple[str, ...]  # the first is the default


BACKENDS: dict[str, Backend] = {
    "scalar": Backend("engines.scalar", "ScalarEngine", "pure Python lists and math", ("float64",)),
    "simd": Backend("engines.simd", "SimdEngine", "NumPy + Numba kernels", ("float32",)),
    "cuda": Backend("engines.torch_engine", "CudaEngine", "PyTorch on an NVIDIA GPU", ("bfloat16", "float16", "float32")),
    "torch": Backend("engines.torch_engine", "TorchCpuEngine", "the cuda engine's code on torch CPU", ("float32", "bfloat16", "float16")),
}


def resolve_dtype(backend: str, dtype: str | None) -> str:
    """The dtype `backend` will run: `dtype`, or the backend's default. Raises BackendError."""
    allowed = BACKENDS[backend].dtypes
    if dtype is None:
        return allowed[0]
    if dtype not in allowed:
        raise BackendError(f"the {backend} engine does not run {dtype}", f"use --dtype {' or '.join(allowed)} with --backend {backend}")
    return dtype


def check_known(backend: str) -> None:
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}", f"choose from: {', '.join(BACKENDS)}")


def engine_class(backend: str):
    check_known(backend)
    b = BACKENDS[backend]
    return getattr(importlib.import_module(b.module), b.cls)


def require_cuda() -> None:
    ok, why = cuda_status()
    if not ok:
        raise BackendError(f"--backend cuda needs an NVIDIA GPU: {why}", "use --backend simd (or torch)")


def cuda_status() -> tuple[bool, str]:
    """(usable, why not). Imports torch: call only when needed."""
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        if torch.version.cuda is None:
            return False, f"torch {torch.__version__} is a CPU-only build"
        return False, "no usable NVIDIA GPU (torch.cuda.is_available() is False)"
    return True, torch.cuda.get_device_name(0)


def nvml_gpu_count() -> int:
    """NVIDIA GPUs NVML can see (0 without a driver). Cheap: no torch import."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return 0


def default_backend() -> tuple[str, str]:
    """(backend, why): cuda where a GPU is usable, otherwise simd."""
    if nvml_gpu_count() == 0:
        return "simd", "no NVIDIA GPU found"
    ok, why = cuda_status()
    if ok:
        return "cuda", f"GPU found: {why}"
    return "simd", f"no GPU for cuda ({why})"
