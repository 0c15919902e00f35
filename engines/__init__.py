"""Engines: the core. Model loading, the op table they implement, the forward pass on each
backend, sampling and generation. Nothing here measures or presents: an engine reports each
op to whatever `lap` callable it is given (`profilers` measures, `aios_cli` presents; imports
run `aios_cli` -> `profilers` -> `engines`, never back).

The map: `model/` (config, sources, checkpoint, weights, tokenizers, GGUF), `quant/` (block
formats), one subpackage per engine (`scalar/`, `simd/`, `torch/`), `batch/` (the batched engine
over a paged KV cache), `spec/` (speculative decoding), `dist/` (tensor and pipeline parallelism
on torch.distributed), and beside them the shared pieces: `backends` (the backend record),
`base` (what every engine provides), `ops` (the canonical op table), `generate`, `sampling`,
`devices`, `files`, `errors`.

Adding an engine = one subpackage with an ``Engine`` subclass + one line in
``engines.backends.BACKENDS``; an engine's module is imported only when it runs.
"""

from __future__ import annotations

from .backends import (
    BACKENDS, Backend, backend, backend_status, check_backend, check_quant, default_backend,
    engine_class, resolve_dtype,
)
from .devices import cuda_status, gpu_count

__all__ = ["BACKENDS", "Backend", "backend", "backend_status", "check_backend", "check_quant",
           "cuda_status", "default_backend", "engine_class", "gpu_count", "resolve_dtype"]
