"""`aios compare dot|matmul`: the same float32 inputs through scalar, SIMD, BLAS, torch and
CUDA, each result checked against float64 NumPy before its time counts.

Every figure is a measurement, except a scalar time past `--scalar-budget`: that one is a
measured subset scaled up, and carries `scaled` (and the subset) in every output format.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from engines.devices import cuda_status

from .check import Case, check, op_cost
from .reference import scalar_dot, scalar_matmul_rows
from .timing import Timing, settle, time_call

CPU_BACKENDS = ("scalar", "simd", "blas", "torch")
ALL_BACKENDS = CPU_BACKENDS + ("cuda",)


@dataclass
class Result:
    op: str  # dot | matmul
    size: int  # n for dot, n for an n x n x n matmul
    backend: str
    status: str  # ok | wrong | unavailable | skipped
    detail: str = ""  # why unavailable / wrong / skipped, or how it was scaled
    median_s: float | None = None
    min_s: float | None = None
    max_s: float | None = None
    repeats: int = 0
    scaled: bool = False  # True: measured on a subset and scaled (an estimate)
    measured_fraction: float = 1.0
    with_transfer_median_s: float | None = None  # cuda only: host->device, compute, device->host
    with_transfer_min_s: float | None = None
    with_transfer_max_s: float | None = None
    transfer_share: float | None = None
    jit_s: float | None = None
    flops: float = 0.0
    bytes: float = 0.0
    gflops_per_s: float | None = None
    gbytes_per_s: float | None = None
    speedup_vs_scalar: float | None = None
    pct_of_peak: float | None = None
    peak_kind: str = ""
    max_rel_error: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CompareConfig:
    repeat: int = 7
    warmup: int = 2
    scalar_budget_s: float = 2.0
    backends: tuple[str, ...] = ALL_BACKENDS
    seed: int = 0
    notes: list[str] = field(default_factory=list)


def _finish(r: Result, case: Case, t: Timing, got) -> Result:
    """Check `got` against float64; only a right answer keeps its time."""
    ok, rel = check(got, case.ref, case.abs_terms, case.k)
    r.max_rel_error = rel
    if not ok:
        r.status, r.detail = "wrong", f"max relative error {rel:.2e} exceeds the float32 bound"
        return r
    r.status = "ok"
    r.median_s, r.min_s, r.max_s, r.repeats = t.median_s, t.min_s, t.max_s, t.repeats
    return r


def run_scalar(case: Case, cfg: CompareConfig) -> Result:
    r = Result(case.op, case.size, "scalar", "ok")
    n = case.size
    if case.op == "dot":
        a, b = case.a.tolist(), case.b.tolist()

        def part(m):
            return scalar_dot(a[:m], b[:m])

        probe_m = min(n, 10_000)
        t_probe = time_call(lambda: part(probe_m), 1, warmup=0)
        est = t_probe.median_s * n / probe_m
        if est <= cfg.scalar_budget_s:
            t = time_call(lambda: scalar_dot(a, b), cfg.repeat, warmup=0, budget_s=cfg.scalar_budget_s)
            return _finish(r, case, t, scalar_dot(a, b))
        m = max(probe_m, int(n * cfg.scalar_budget_s / max(est, 1e-9) / 2))
        t = time_call(lambda: part(m), max(1, cfg.repeat // 2), warmup=0, budget_s=cfg.scalar_budget_s)
        ok, rel = check(part(m), np.asarray(case.a[:m].astype(np.float64) @ case.b[:m].astype(np.float64)),
                        np.asarray(np.abs(case.a[:m].astype(np.float64)) @ np.abs(case.b[:m].astype(np.float64))), m)
        return _scaled(r, t, m / n, f"scaled from a measured {m:,} of {n:,} elements", ok, rel)
    A, Bt = case.a.tolist(), case.b.T.tolist()
    t_row = time_call(lambda: scalar_matmul_rows(A, Bt, range(1)), 1, warmup=0)
    est = t_row.median_s * n
    if est <= cfg.scalar_budget_s:
        t = time_call(lambda: scalar_matmul_rows(A, Bt, range(n)), cfg.repeat, warmup=0, budget_s=cfg.scalar_budget_s)
        return _finish(r, case, t, np.array(scalar_matmul_rows(A, Bt, range(n))))
    rows = max(1, min(n, int(n * cfg.scalar_budget_s / max(est, 1e-9) / 2)))
    t = time_call(lambda: scalar_matmul_rows(A, Bt, range(rows)), max(1, cfg.repeat // 2), warmup=0,
                  budget_s=cfg.scalar_budget_s)
    got = np.array(scalar_matmul_rows(A, Bt, range(rows)))
    ok, rel = check(got, case.ref[:rows], case.abs_terms[:rows], n)
    return _scaled(r, t, rows / n, f"scaled from a measured {rows} of {n} rows", ok, rel)


def _scaled(r: Result, t: Timing, fraction: float, how: str, ok: bool, rel: float) -> Result:
    r.max_rel_error = rel
    if not ok:
        r.status, r.detail = "wrong", f"max relative error {rel:.2e} exceeds the float32 bound"
        return r
    r.scaled, r.measured_fraction, r.detail = True, fraction, how
    r.median_s, r.min_s, r.max_s = t.median_s / fraction, t.min_s / fraction, t.max_s / fraction
    r.repeats = t.repeats
    return r


_jit_done: dict[str, float] = {}


def run_simd(case: Case, cfg: CompareConfig) -> Result:
    from . import simd_kernels as K  # Numba loads only when simd is compared

    r = Result(case.op, case.size, "simd", "ok")
    if "simd" not in _jit_done:  # compile (or load from Numba's cache) once, timed apart
        t0 = time.perf_counter()
        K.warmup()
        _jit_done["simd"] = time.perf_counter() - t0
    r.jit_s = _jit_done["simd"]  # paid once per process, before any timing
    if case.op == "dot":
        fn = lambda: K.dot(case.a, case.b)  # noqa: E731
    else:
        out = np.empty((case.size, case.size), np.float32)
        fn = lambda: (K.matmul(case.a, case.b, out), out)[1]  # noqa: E731
    got = np.array(fn())
    t = time_call(fn, cfg.repeat, cfg.warmup)
    return _finish(r, case, t, got)


def run_blas(case: Case, cfg: CompareConfig) -> Result:
    r = Result(case.op, case.size, "blas", "ok")
    fn = (lambda: np.dot(case.a, case.b)) if case.op == "dot" else (lambda: np.matmul(case.a, case.b))
    got = fn()
    return _finish(r, case, time_call(fn, cfg.repeat, cfg.warmup), got)


def run_torch(case: Case, cfg: CompareConfig) -> Result:
    import torch

    r = Result(case.op, case.size, "torch", "ok")
    a, b = torch.from_numpy(case.a), torch.from_numpy(case.b)
    fn = (lambda: torch.dot(a, b)) if case.op == "dot" else (lambda: torch.mm(a, b))
    got = fn().numpy()
    return _finish(r, case, time_call(fn, cfg.repeat, cfg.warmup), got)


def run_cuda(case: Case, cfg: CompareConfig, reason: str | None) -> Result:
    r = Result(case.op, case.size, "cuda", "ok")
    if reason:
        r.status, r.detail = "unavailable", reason
        return r
    import torch

    dev = torch.device("cuda")
    sync = torch.cuda.synchronize
    op = torch.dot if case.op == "dot" else torch.mm
    a_host, b_host = torch.from_numpy(case.a).pin_memory(), torch.from_numpy(case.b).pin_memory()
    a_dev, b_dev = a_host.to(dev), b_host.to(dev)
    prev_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # true float32, to pass the float32 check
    try:
        got = op(a_dev, b_dev).cpu().numpy()
        compute = time_call(lambda: op(a_dev, b_dev), cfg.repeat, cfg.warmup, sync=sync)

        def end_to_end():
            return op(a_host.to(dev, non_blocking=True), b_host.to(dev, non_blocking=True)).cpu()

        full = time_call(end_to_end, cfg.repeat, cfg.warmup, sync=sync)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev_tf32
    _finish(r, case, compute, got)
    if r.status == "ok":
        r.with_transfer_median_s, r.with_transfer_min_s, r.with_transfer_max_s = full.median_s, full.min_s, full.max_s
        r.transfer_share = max(0.0, 1.0 - compute.median_s / full.median_s)
    return r


def cuda_unavailable_reason() -> str | None:
    ok, why = cuda_status()
    return None if ok else why


def annotate(results: list[Result], peaks) -> None:
    """Rates, speedup over scalar and share of this machine's measured peak."""
    scalar = {(r.op, r.size): r for r in results if r.backend == "scalar" and r.status == "ok"}
    for r in results:
        r.flops, r.bytes = op_cost(r.op, r.size)
        if r.status != "ok" or not r.median_s:
            continue
        r.gflops_per_s = r.flops / r.median_s / 1e9
        r.gbytes_per_s = r.bytes / r.median_s / 1e9
        s = scalar.get((r.op, r.size))
        if s is not None and s.median_s:
            r.speedup_vs_scalar = s.median_s / r.median_s
        if peaks is None:
            continue
        gpu = r.backend == "cuda"
        if r.op == "dot":  # bandwidth-bound: share of the measured copy bandwidth
            peak = peaks.gpu_bandwidth if gpu else peaks.cpu_bandwidth
            r.peak_kind = "bandwidth"
            rate = r.bytes / r.median_s
        else:  # compute-bound: share of the measured matmul FLOP/s
            peak = peaks.gpu_flops_fp32 if gpu else peaks.cpu_flops
            r.peak_kind = "FLOP/s"
            rate = r.flops / r.median_s
        if peak is not None:
            r.pct_of_peak = 100.0 * rate / peak.median


def effective_time(r: Result) -> float | None:
    """What a caller on the host waits for: cuda includes its transfers."""
    if r.status != "ok":
        return None
    return r.with_transfer_median_s if r.backend == "cuda" else r.median_s


def winners(results: list[Result]) -> dict[int, str]:
    out = {}
    for size in sorted({r.size for r in results}):
        timed = [(effective_time(r), r.backend) for r in results if r.size == size and effective_time(r) and not r.scaled]
        if timed:
            out[size] = min(timed)[1]
    return out


def crossover(results: list[Result], cuda_reason: str | None) -> str:
    """Smallest size where the GPU, transfers included, beats SIMD."""
    if cuda_reason:
        return f"unavailable ({cuda_reason})"
    sizes = sorted({r.size for r in results})
    by = {(r.size, r.backend): r for r in results}
    for n in sizes:
        g, s = by.get((n, "cuda")), by.get((n, "simd"))
        if g and s and effective_time(g) and effective_time(s) and effective_time(g) < effective_time(s):
            return f"{n:,}"
    return "none in range"


def run_compare(op: str, sizes: list[int], cfg: CompareConfig, peaks=None, progress=None) -> list[Result]:
    step = progress or (lambda msg: None)
    reason = cuda_unavailable_reason() if "cuda" in cfg.backends else None
    runners = {"scalar": run_scalar, "simd": run_simd, "blas": run_blas, "torch": run_torch}
    results: list[Result] = []
    for n in sizes:
        step(f"{op} n={n:,}: building inputs and the float64 reference")
        case = Case.make(op, n, cfg.seed)
        for backend in cfg.backends:
            step(f"{op} n={n:,}: {backend}")
            settle()
            if backend == "cuda":
                results.append(run_cuda(case, cfg, reason))
            else:
                results.append(runners[backend](case, cfg))
    annotate(results, peaks)
    return results


