"""The backend record: the one place an engine declares what it is and what it can do.

Every question about a backend (which dtypes and `--quant` formats it runs, where its weights
live and what they cost in host RAM, which thread pools it runs on, whether it batches or
shards, whether it can run on this machine) is answered from its `Backend` here, never by
testing its name elsewhere. Adding an engine is one subpackage (`engines/<name>/`) plus one
line in `BACKENDS`; its module is imported only when it runs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from .devices import cuda_status, gpu_count
from .errors import BackendError


@dataclass(frozen=True)
class Backend:
    name: str
    module: str  # the engine's module, imported only when it runs
    cls: str  # the Engine subclass in it
    what: str  # one line for `aios info` and the help
    device: str  # where the weights and activations live: "cpu" or "cuda"
    dtypes: tuple[str, ...]  # the first is the default
    # host RAM one float parameter takes, by dtype (the engine's copy of the weights); None: the
    # weights live on the device, not in host RAM
    host_bytes: dict[str, float] | None
    quants: tuple[str, ...] = ()  # the `--quant` formats it takes (besides `none`, which all take)
    # the GGUF block formats it multiplies in place (a file's other formats are widened to floats)
    kept_formats: tuple[str, ...] = ()
    no_quant: str = ""  # the one line that says why it takes none
    requires: tuple[tuple[str, str], ...] = ()  # (module, label) it needs installed
    threads: tuple[str, ...] = ()  # the thread pools its work runs on (numba, blas, torch); (): one Python thread
    jit: bool = False  # compiles kernels on first use: its warm-up time is JIT time
    batches: bool = False  # runs the batched engine (paged KV cache, continuous batching)
    shards: bool = False  # its weights can be split over ranks (tensor / pipeline parallel)
    cpu_default: bool = False  # the default on a machine without a usable GPU
    too_big_fix: str = "use a smaller --model"  # what to do when the weights do not fit in RAM

    @property
    def engine_class(self):
        return getattr(importlib.import_module(self.module), self.cls)

    def takes_quant(self, quant: str | None) -> bool:
        return quant in (None, "none") or quant in self.quants

    def host_bytes_per_param(self, dtype: str | None, quant: str | None = None) -> float | None:
        """Host RAM one parameter takes at `dtype`, its linear weights in `quant` (a `--quant`
        name, or the block format a GGUF file holds them in; None: float). None: the weights
        live on the device. A block format the engine does not keep (a K-quant file on simd)
        is widened to floats as it loads, so it costs the float bytes. An estimate under a
        quantized format: the embedding and lm_head are Q8_0 under a 4-bit --quant."""
        if self.host_bytes is None:
            return None
        floats = self.host_bytes[resolve_dtype(self.name, dtype)]
        if quant in (None, "none"):
            return floats
        from .quant.formats import QUANTS, bytes_per_weight

        fmt = QUANTS.get(quant, quant.upper())
        return bytes_per_weight(fmt) if fmt in self.kept_formats else floats


_TORCH_DTYPES = ("float32", "bfloat16", "float16")
_QUANTS = ("q8_0", "q4_0", "q4_1")
_KEPT = ("Q8_0", "Q4_0", "Q4_1")  # the formats the simd and torch kernels multiply in place

BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("scalar", "engines.scalar.engine", "ScalarEngine", "pure Python lists and math", "cpu", ("float64",),
            host_bytes={"float64": 32},  # a Python float object and its pointer in the list
            no_quant="the scalar engine runs float64 only",
            too_big_fix="use --backend simd, or a smaller model such as --model tiny"),
    Backend("simd", "engines.simd.engine", "SimdEngine", "NumPy + Numba kernels", "cpu", ("float32",),
            host_bytes={"float32": 4}, quants=_QUANTS, kept_formats=_KEPT, requires=(("numpy", "NumPy"), ("numba", "Numba")),
            threads=("numba", "blas"), jit=True, cpu_default=True,
            too_big_fix="use --backend torch --dtype bfloat16 (2 bytes a parameter), or a smaller --model"),
    Backend("cuda", "engines.torch.engine", "CudaEngine", "PyTorch on an NVIDIA GPU", "cuda",
            ("bfloat16", "float16", "float32"), host_bytes=None, requires=(("torch", "torch"),),
            no_quant="--quant is not available on the cuda engine yet (its int4/int8 kernels are not verified on a GPU)",
            threads=("torch",), batches=True, shards=True),
    Backend("torch", "engines.torch.engine", "TorchCpuEngine", "the cuda engine's code on torch CPU", "cpu",
            _TORCH_DTYPES, host_bytes={"float32": 4, "bfloat16": 2, "float16": 2}, quants=_QUANTS, kept_formats=_KEPT,
            requires=(("torch", "torch"),), threads=("torch",), batches=True, shards=True,
            too_big_fix="use --dtype bfloat16 (2 bytes a parameter), or a smaller --model"),
)}


def backend(name: str) -> Backend:
    """The record of `name`; BackendError for a name no engine has."""
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}", f"choose from: {', '.join(BACKENDS)}")
    return BACKENDS[name]


def resolve_dtype(name: str, dtype: str | None) -> str:
    """The dtype `name` will run: `dtype`, or the backend's default. Raises BackendError."""
    allowed = backend(name).dtypes
    if dtype is None:
        return allowed[0]
    if dtype not in allowed:
        raise BackendError(f"the {name} engine does not run {dtype}", f"use --dtype {' or '.join(allowed)} with --backend {name}")
    return dtype


def check_quant(name: str, quant: str | None) -> None:
    """Raise BackendError now if `name` cannot run `--quant quant`."""
    if quant is None:
        return
    from .quant.formats import QUANTS

    if quant not in QUANTS:
        raise BackendError(f"unknown --quant {quant!r}", f"choose from: {', '.join(QUANTS)}")
    if not backend(name).takes_quant(quant):
        takers = [b.name for b in BACKENDS.values() if b.quants]
        raise BackendError(backend(name).no_quant, f"use --quant with --backend {' or '.join(takers)}")


def engine_class(name: str):
    return backend(name).engine_class


def backend_status(name: str) -> tuple[bool, str]:
    """Can `name` run on this machine? (usable, what it runs on / why not). The one place this
    is decided. A GPU backend imports torch: ask only when needed."""
    b = backend(name)
    if b.device == "cuda":
        return cuda_status()
    found = []
    for module, label in b.requires:
        try:
            found.append(f"{label} {importlib.import_module(module).__version__}")
        except ImportError:
            return False, f"{label} is not installed: pip install {module} (see README)"
    if not found:
        return True, "pure Python: always available"
    return True, " + ".join(found) + " on the CPU"


def cpu_alternatives(batched: bool = False, sharded: bool = False) -> list[str]:
    """The CPU engines to suggest instead of a GPU one: the default first (for the batched
    engine, the CPU engines that batch; for a distributed run, those that shard)."""
    if sharded:
        return [b.name for b in BACKENDS.values() if b.device == "cpu" and b.shards]
    cpu = [b for b in BACKENDS.values() if b.device == "cpu" and (b.batches if batched else b.cpu_default or b.batches)]
    return [b.name for b in sorted(cpu, key=lambda b: not b.cpu_default)]


def check_backend(name: str, dtype: str | None = None, batched: bool = False) -> None:
    """Raise BackendError now, before anything loads, if `name` cannot run here or does not
    run `dtype`. `batched`: the command runs the batched engine (its hint names those)."""
    b = backend(name)
    resolve_dtype(name, dtype)
    ok, why = backend_status(name)
    if not ok:
        if b.device == "cuda":
            cpu = cpu_alternatives(batched)
            raise BackendError(f"--backend {name} needs an NVIDIA GPU: {why}",
                               f"use --backend {cpu[0]}" + (f" (or {', '.join(cpu[1:])})" if cpu[1:] else ""))
        raise BackendError(f"--backend {name} cannot run here: {why}", "use --backend scalar")


def default_backend(batched: bool = False, sharded: bool = False) -> tuple[str, str]:
    """(backend, why): the GPU engine where a GPU is usable, otherwise the CPU default (for the
    batched engine: the CPU engine that batches; for a distributed run: the one that shards)."""
    cpu = cpu_alternatives(batched, sharded)[0]
    gpu = next((b.name for b in BACKENDS.values() if b.device == "cuda" and (b.batches or not batched)
                and (b.shards or not sharded)), None)
    if gpu is None or gpu_count() == 0:
        return cpu, "no NVIDIA GPU found"
    ok, why = cuda_status()
    if ok:
        return gpu, f"GPU found: {why}"
    return cpu, f"no GPU for cuda ({why})"
