"""Engines: the core. Model loading, the op table they implement, the forward pass on each
backend, sampling and generation. Nothing here measures or presents: an engine reports each
op to whatever `lap` callable it is given (`profilers` measures, `aios_cli` presents; imports
run `aios_cli` -> `profilers` -> `engines`, never back).

Adding an engine = one module with an ``Engine`` subclass + one line in ``BACKENDS``; an
engine's module is imported only when it runs.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

from .devices import cuda_status, gpu_count
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


def check_quant(backend: str, quant: str | None) -> None:
    """Raise BackendError now if `backend` cannot run `--quant quant`."""
    if quant is None:
        return
    from .quant import QUANTS

    if quant not in QUANTS:
        raise BackendError(f"unknown --quant {quant!r}", f"choose from: {', '.join(QUANTS)}")
    if backend == "scalar" and quant != "none":
        raise BackendError("the scalar engine runs float64 only", "use --quant with --backend simd or torch")
    if backend == "cuda" and quant != "none":
        raise BackendError("--quant is not available on the cuda engine yet (its int4/int8 kernels are not "
                           "verified on a GPU)", "use --backend simd or torch with --quant")


def engine_class(backend: str):
    check_known(backend)
    b = BACKENDS[backend]
    return getattr(importlib.import_module(b.module), b.cls)


def backend_status(backend: str) -> tuple[bool, str]:
    """Can `backend` run on this machine? (usable, what it runs on / why not). The one place
    this is decided. cuda imports torch: ask only when needed."""
    check_known(backend)
    if backend == "scalar":
        return True, "pure Python: always available"
    if backend == "simd":
        try:
            import numba
            import numpy
        except ImportError as e:
            return False, f"missing {e.name}: pip install numba numpy"
        return True, f"NumPy {numpy.__version__} + Numba {numba.__version__}"
    if backend == "torch":
        try:
            import torch
        except ImportError:
            return False, "torch is not installed (see README: install torch)"
        return True, f"torch {torch.__version__} on the CPU"
    return cuda_status()


def check_backend(backend: str, dtype: str | None = None) -> None:
    """Raise BackendError now, before anything loads, if `backend` cannot run here or does not
    run `dtype`."""
    check_known(backend)
    resolve_dtype(backend, dtype)
    ok, why = backend_status(backend)
    if not ok:
        if backend == "cuda":
            raise BackendError(f"--backend cuda needs an NVIDIA GPU: {why}", "use --backend simd (or torch)")
        raise BackendError(f"--backend {backend} cannot run here: {why}", "use --backend scalar")


def default_backend() -> tuple[str, str]:
    """(backend, why): cuda where a GPU is usable, otherwise simd."""
    if gpu_count() == 0:
        return "simd", "no NVIDIA GPU found"
    ok, why = cuda_status()
    if ok:
        return "cuda", f"GPU found: {why}"
    return "simd", f"no GPU for cuda ({why})"
