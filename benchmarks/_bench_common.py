"""Helpers the benchmark scripts share (imported as `_bench_common` from this folder)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_WARMUP_SNIPPET = (
    "import sys, time; sys.path.insert(0, {root!r}); t = time.perf_counter(); "
    "import {module} as sk; imp = time.perf_counter() - t; "
    "w = sk.warmup(); print(f'{{imp:.3f}} {{w:.3f}}')"
)


def load_avg() -> str:
    try:
        return "load avg %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "load avg n/a"


def jit_cold_vs_cached(module: str = "engines.simd_kernels") -> tuple[float, float, float, float]:
    """(import s, warmup s) of `module`'s kernels with an empty Numba cache, then again with it
    populated."""
    with tempfile.TemporaryDirectory(prefix="aios-numba-cache-") as d:
        env = dict(os.environ, NUMBA_CACHE_DIR=d)
        code = _WARMUP_SNIPPET.format(root=str(ROOT), module=module)
        res = []
        for _ in range(2):
            out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                 capture_output=True, text=True).stdout.split()
            res += [float(out[0]), float(out[1])]
    return res[0], res[1], res[2], res[3]
