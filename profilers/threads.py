"""The thread pools a measurement runs on, set before they start."""

from __future__ import annotations

import os


def quiet_blas_pool() -> None:
    """Let OpenBLAS's idle workers sleep at once instead of spinning for ~0.1 s (its default).
    The simd engine's prefill calls BLAS and its decode runs on Numba's threads; on a 2-core
    machine the spinning BLAS workers steal a core from decode (measured on `tiny`: 254 tok/s
    with the default spin, 617 tok/s without). Read when NumPy loads OpenBLAS, so this must
    run before the first numpy import; a value the user exported wins."""
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
