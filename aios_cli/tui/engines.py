"""The engines `aios top` can switch between, and the GPU a running engine sits on."""

from __future__ import annotations

from engines import BACKENDS, backend_status, engine_class
from engines.errors import UserError
from profilers import nvml
from profilers.harness import gpu_index_of


def usable_backends(ckpt) -> tuple[str, ...]:
    """The engines `b` cycles through: those that can run this model on this machine."""
    out = []
    for b in BACKENDS:
        if not backend_status(b)[0]:
            continue
        try:
            engine_class(b).preflight(ckpt.config, ckpt.name, None, ckpt.quant)
        except UserError:
            continue
        out.append(b)
    return tuple(out)


def engine_gpu(engine):
    """NVML's view (utilisation, power, temperature) of the GPU `engine` runs on; None for
    CPU engines."""
    i = gpu_index_of(engine)
    return nvml.gpu(i) if i is not None else None
