"""The thread pools a measurement runs on: how many threads, chosen before the pools start,
and what was in effect, recorded with every figure.

Three pools can run an aios engine: Numba's (the simd engine's decode kernels), BLAS's
(OpenBLAS under NumPy: the simd engine's prefill matmuls) and torch's (OpenMP, the torch and
cuda engines' host side). Left alone, each starts one thread per CPU. On a machine where
another process already keeps a core busy, that oversubscribes the cores and a memory-bound
decode collapses (measured on the 2-core dev VM with one busy process: `qwen2.5-0.5b` simd
0.8 tok/s at the default pools against 4.8 tok/s on one thread). So aios sets all three
together: to `--threads N` when given, else to the CPUs that are free right now.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from .sysinfo import usable_cpus

# Set before NumPy / Numba / torch load, so their pools start at the planned size.
_POOL_ENV = ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_SAMPLE_S = 0.2  # how long the other processes' CPU use is sampled before a run
BUSY_CPUS = 0.5  # other processes using this much CPU (in cores) make timings noisy
MAX_THREADS = 1024
# What the user exported, read once at start-up: `apply` sets these variables itself later.
_USER_ENV = {var: os.environ.get(var) for var in _POOL_ENV}


@dataclass(frozen=True)
class ThreadPlan:
    """How many threads a run uses, and what the machine was doing when it was chosen."""

    threads: int
    source: str  # "--threads", "default" or the environment variable that set it
    usable_cpus: int  # CPUs this process may run on (its affinity)
    busy_cpus: float  # CPU other processes used in the sample before the run, in cores
    load_avg_1m: float | None

    @property
    def busy(self) -> bool:
        # Judged on the CPU others use right now, not on the load average: that is a trailing
        # one-minute mean which counts aios's own previous run on a machine nobody else uses.
        return self.busy_cpus >= BUSY_CPUS

    def busy_warning(self) -> str | None:
        """One line when the machine is busy (timings will be noisy), else None."""
        if not self.busy:
            return None
        load = f", load average {self.load_avg_1m:.2f}" if self.load_avg_1m is not None else ""
        return (f"warning: the machine is busy (other processes use {self.busy_cpus:.1f} of {self.usable_cpus} "
                f"CPUs{load}) — timings will be noisy; running on {self.threads} thread"
                f"{'s' if self.threads != 1 else ''} ({self.source})")


def busy_cpus(sample_s: float = _SAMPLE_S) -> float:
    """CPU the rest of the machine uses, in cores, over `sample_s` (this process sleeps)."""
    import psutil

    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        cpus = None
    per_cpu = psutil.cpu_percent(interval=sample_s, percpu=True)
    if cpus is not None:
        per_cpu = [per_cpu[i] for i in cpus if i < len(per_cpu)]
    return sum(per_cpu) / 100.0


def load_avg() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def check_threads(threads: int | None, flag: str = "--threads") -> None:
    """Refuse a thread count out of range, and a NUMBA_NUM_THREADS that is not one (Numba would
    print a warning with a traceback in it when it loads, and go on with its default)."""
    from engines.errors import UserError

    exported = (_USER_ENV.get("NUMBA_NUM_THREADS") or "").strip()
    if exported and not (exported.isdigit() and int(exported) >= 1):
        raise UserError(f"NUMBA_NUM_THREADS={exported[:20]!r} is not a thread count",
                        "unset it, or export a whole number")
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise UserError(f"{flag} must be between 1 and {MAX_THREADS}, got {threads}",
                        f"e.g. {flag} {max(1, usable_cpus() - 1)} (this machine has {usable_cpus()} usable CPUs)")


def plan(threads: int | None = None, sample_s: float = _SAMPLE_S) -> ThreadPlan:
    """The thread count for a run: `threads` when given; else a pool size the user exported
    (NUMBA_NUM_THREADS, OMP_NUM_THREADS); else the usable CPUs less those other processes are
    keeping busy right now (at least one)."""
    check_threads(threads)
    n_cpus = usable_cpus()
    busy = busy_cpus(sample_s)
    load = load_avg()
    if threads is not None:
        return ThreadPlan(threads, "--threads", n_cpus, busy, load)
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS"):
        value = (_USER_ENV.get(var) or "").strip()
        if value.isdigit() and int(value) >= 1:
            return ThreadPlan(int(value), var, n_cpus, busy, load)
    return ThreadPlan(max(1, n_cpus - round(busy)), "default", n_cpus, busy, load)


def apply(threads: int) -> None:
    """Size every pool to `threads`: through the environment for pools not started yet, and
    through each library's own setter for those already loaded (NumPy's BLAS via threadpoolctl,
    Numba up to the pool it started with, torch)."""
    for var in _POOL_ENV:
        if var != "NUMBA_NUM_THREADS" or "numba" not in sys.modules:
            os.environ[var] = str(threads)  # Numba refuses a changed variable once it has loaded
    if "numpy" in sys.modules:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads, user_api="blas")
    if "numba" in sys.modules:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(threads)


def setup(threads: int | None) -> ThreadPlan:
    """`plan` then `apply`: what a command calls before it loads anything heavy."""
    p = plan(threads)
    apply(p.threads)
    return p


def pool_threads(backend: str | None = None) -> dict:
    """The threads and threading layer a backend's pools really run with, read back from the
    libraries after the engine has run: {"threads": int, "threading_layer": str}. With no
    backend (a microbenchmark that uses them all): every pool that is loaded."""
    from engines import BACKENDS

    pools = {"numba": _numba, "blas": _blas, "torch": _torch}
    wanted = tuple(pools)  # not an engine (a microbenchmark, a server over HTTP): every pool loaded
    if backend in BACKENDS:
        wanted = BACKENDS[backend].threads
        if not wanted:
            return {"threads": 1, "threading_layer": "python (one thread)"}
    found = [(name, pools[name]()) for name in wanted]
    found = [(name, got) for name, got in found if got is not None]
    threads = found[0][1][1] if found else None
    return {"threads": threads, "threading_layer": " + ".join(f"{what} ({n})" for _, (what, n) in found) or None}


def _numba() -> tuple[str, int] | None:
    if "numba" not in sys.modules:
        return None
    import numba

    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        layer = numba.config.THREADING_LAYER
    return f"numba {layer}", numba.get_num_threads()


def _torch() -> tuple[str, int] | None:
    if "torch" not in sys.modules:
        return None
    import torch

    line = next((ln for ln in torch.__config__.parallel_info().splitlines() if "parallel backend" in ln), "")
    return f"torch {line.split(':', 1)[1].strip().lower() if ':' in line else '?'}", torch.get_num_threads()


def _blas() -> tuple[str, int] | None:
    """("openblas pthreads", threads) for NumPy's BLAS, or None when it is not loaded."""
    if "numpy" not in sys.modules:
        return None
    from threadpoolctl import threadpool_info

    for lib in threadpool_info():
        if lib.get("user_api") == "blas":
            return f"{lib.get('internal_api')} {lib.get('threading_layer') or ''}".strip(), lib.get("num_threads")
    return None


def quiet_blas_pool() -> None:
    """Let OpenBLAS's idle workers sleep at once instead of spinning for ~0.1 s (its default).
    The simd engine's prefill calls BLAS and its decode runs on Numba's threads; on a 2-core
    machine the spinning BLAS workers steal a core from decode (measured on `tiny`: 254 tok/s
    with the default spin, 617 tok/s without). Read when NumPy loads OpenBLAS, so this must
    run before the first numpy import; a value the user exported wins."""
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
