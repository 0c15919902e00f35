"""`aios compare dot|matmul`: the same float32 inputs through scalar, SIMD, BLAS, torch and
CUDA, each result checked against float64 NumPy before its time counts.

Every figure is a measurement, except a scalar time past `--scalar-budget`: that one is a
measured subset scaled up, and carries `scaled` (and the subset) in every output format.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from operator import mul
from typing import Callable

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)
CPU_BACKENDS = ("scalar", "simd", "blas", "torch")
ALL_BACKENDS = CPU_BACKENDS + ("cuda",)


@dataclass
class Timing:
    median_s: float
    min_s: float
    max_s: float
    repeats: int

    @classmethod
    def of(cls, samples: list[float]) -> "Timing":
        return cls(statistics.median(samples), min(samples), max(samples), len(samples))


def time_call(fn: Callable[[], object], repeat: int, warmup: int = 1, sync: Callable[[], None] | None = None,
              budget_s: float | None = None) -> Timing:
    """Median/min/max wall seconds of `fn()` over `repeat` runs after `warmup` untimed runs.
    `sync` runs inside the timed region after each call (device synchronisation). With a
    budget, stop repeating once the time spent passes it (at least one timed run)."""
    for _ in range(warmup):
        fn()
        if sync:
            sync()
    samples: list[float] = []
    spent = 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        if sync:
            sync()
        dt = time.perf_counter() - t
        samples.append(dt)
        spent += dt
        if budget_s is not None and spent > budget_s:
            break
    return Timing.of(samples)


# --- the scalar kernels: pure Python loops ------------------------------------------------

def scalar_dot(a: list, b: list) -> float:
    acc = 0.0
    for x, y in zip(a, b):
        acc += x * y
    return acc


def scalar_matmul_rows(A: list, Bt: list, rows: range) -> list:
    """Rows `rows` of A @ B, with B given transposed (so each output is a dot of two lists)."""
    return [[sum(map(mul, A[i], col)) for col in Bt] for i in rows]


# --- results ----------------------------------------------------------------------------

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


def op_cost(op: str, n: int) -> tuple[float, float]:
    """(FLOPs, minimum bytes) of a float32 dot of length n / an n x n x n matmul."""
    if op == "dot":
        return 2.0 * n, 8.0 * n
    return 2.0 * n**3, 4.0 * 3 * n * n


def check(op: str, got, ref64: np.ndarray, abs_terms: np.ndarray, k: int) -> tuple[bool, float]:
    """Is `got` the float32 answer? Bound: 4 * sqrt(k) * eps32 * sum|a_i b_i| per output
    (float32 rounding of k products summed in any order), plus a tiny absolute floor."""
    got = np.asarray(got, dtype=np.float64)
    if got.shape != ref64.shape or not np.all(np.isfinite(got)):
        return False, float("inf")
    tol = 4.0 * math.sqrt(k) * EPS32 * abs_terms + 1e-30
    err = np.abs(got - ref64)
    ok = bool(np.all(err <= tol))
    scale = np.maximum(np.abs(ref64), 1e-30)
    return ok, float(np.max(err / scale))


@dataclass
class Case:
    op: str
    size: int
    a: np.ndarray
    b: np.ndarray
    ref: np.ndarray
    abs_terms: np.ndarray
    k: int

    @classmethod
    def make(cls, op: str, size: int, seed: int = 0) -> "Case":
        rng = np.random.default_rng([seed, size])
        if op == "dot":
            a = rng.standard_normal(size, dtype=np.float32)
            b = rng.standard_normal(size, dtype=np.float32)
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            return cls(op, size, a, b, np.asarray(a64 @ b64), np.asarray(np.abs(a64) @ np.abs(b64)), size)
        a = rng.standard_normal((size, size), dtype=np.float32)
        b = rng.standard_normal((size, size), dtype=np.float32)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        return cls(op, size, a, b, a64 @ b64, np.abs(a64) @ np.abs(b64), size)


@dataclass
class CompareConfig:
    repeat: int = 7
    warmup: int = 2
    scalar_budget_s: float = 2.0
    backends: tuple[str, ...] = ALL_BACKENDS
    seed: int = 0
    notes: list[str] = field(default_factory=list)


def _finish(r: Result, case: Case, t: Timing, got, peaks, cpu: bool = True) -> Result:
    ok, rel = check(case.op, got, case.ref, case.abs_terms, case.k)
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
            return _finish(r, case, t, scalar_dot(a, b), None)
        m = max(probe_m, int(n * cfg.scalar_budget_s / max(est, 1e-9) / 2))
        t = time_call(lambda: part(m), max(1, cfg.repeat // 2), warmup=0, budget_s=cfg.scalar_budget_s)
        ok, rel = check("dot", part(m), np.asarray(case.a[:m].astype(np.float64) @ case.b[:m].astype(np.float64)),
                        np.asarray(np.abs(case.a[:m].astype(np.float64)) @ np.abs(case.b[:m].astype(np.float64))), m)
        return _scaled(r, t, m / n, f"scaled from a measured {m:,} of {n:,} elements", ok, rel)
    A, Bt = case.a.tolist(), case.b.T.tolist()
    t_row = time_call(lambda: scalar_matmul_rows(A, Bt, range(1)), 1, warmup=0)
    est = t_row.median_s * n
    if est <= cfg.scalar_budget_s:
        t = time_call(lambda: scalar_matmul_rows(A, Bt, range(n)), cfg.repeat, warmup=0, budget_s=cfg.scalar_budget_s)
        return _finish(r, case, t, np.array(scalar_matmul_rows(A, Bt, range(n))), None)
    rows = max(1, min(n, int(n * cfg.scalar_budget_s / max(est, 1e-9) / 2)))
    t = time_call(lambda: scalar_matmul_rows(A, Bt, range(rows)), max(1, cfg.repeat // 2), warmup=0,
                  budget_s=cfg.scalar_budget_s)
    got = np.array(scalar_matmul_rows(A, Bt, range(rows)))
    ok, rel = check("matmul", got, case.ref[:rows], case.abs_terms[:rows], n)
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
    from engines import simd_kernels as K

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
    return _finish(r, case, t, got, None)


def run_blas(case: Case, cfg: CompareConfig) -> Result:
    r = Result(case.op, case.size, "blas", "ok")
    fn = (lambda: np.dot(case.a, case.b)) if case.op == "dot" else (lambda: np.matmul(case.a, case.b))
    got = fn()
    return _finish(r, case, time_call(fn, cfg.repeat, cfg.warmup), got, None)


def run_torch(case: Case, cfg: CompareConfig) -> Result:
    import torch

    r = Result(case.op, case.size, "torch", "ok")
    a, b = torch.from_numpy(case.a), torch.from_numpy(case.b)
    fn = (lambda: torch.dot(a, b)) if case.op == "dot" else (lambda: torch.mm(a, b))
    got = fn().numpy()
    return _finish(r, case, time_call(fn, cfg.repeat, cfg.warmup), got, None)


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
    _finish(r, case, compute, got, None)
    if r.status == "ok":
        r.with_transfer_median_s, r.with_transfer_min_s, r.with_transfer_max_s = full.median_s, full.min_s, full.max_s
        r.transfer_share = max(0.0, 1.0 - compute.median_s / full.median_s)
    return r


def cuda_unavailable_reason() -> str | None:
    from engines import cuda_status

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


def why_line(results: list[Result], cuda_reason: str | None) -> str:
    """One sentence of why, from the numbers at the largest size."""
    n = max(r.size for r in results)
    by = {r.backend: r for r in results if r.size == n and r.status == "ok"}
    op = results[0].op
    s, g, b = by.get("simd"), by.get("cuda"), by.get("blas")
    if g and s and g.with_transfer_median_s:
        xfer = g.with_transfer_median_s - g.median_s
        return (f"at {n:,}: the GPU computes in {fmt_t(g.median_s)} but moving the data costs {fmt_t(xfer)} "
                f"({100 * g.transfer_share:.0f}% of its {fmt_t(g.with_transfer_median_s)}), against SIMD's "
                f"{fmt_t(s.median_s)} with no transfer")
    if s and b:
        ai = op_cost(op, n)[0] / op_cost(op, n)[1]
        kind = "memory-bound" if ai < 4 else "compute-bound"
        return (f"at {n:,}: {ai:.2f} FLOP per byte makes this {kind}; SIMD reaches "
                f"{s.gbytes_per_s if ai < 4 else s.gflops_per_s:.1f} {'GB/s' if ai < 4 else 'GFLOP/s'} against "
                f"BLAS's {b.gbytes_per_s if ai < 4 else b.gflops_per_s:.1f}")
    return ""


def fmt_t(s: float | None) -> str:
    if s is None:
        return "n/a"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} µs"


SETTLE_S = 0.3


def settle() -> None:
    """Let the previous thread pool go idle before timing the next backend. OpenBLAS (the
    float64 reference, `blas`) and OpenMP (Numba, torch) workers keep spinning after a call;
    on a 2-core machine the next pool then waits for a core: measured, simd matmul at 512
    took 7.4 ms right after the reference and 3.2 ms after this pause."""
    time.sleep(SETTLE_S)


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


# --- prefill vs decode: the "training vs inference" demo, on the real engines -------------

@dataclass
class PassesResult:
    mode: str  # parallel | sequential
    tokens: int
    forward_passes: int
    median_s: float
    min_s: float
    max_s: float
    repeats: int
    tokens_per_s: float
    reduction_barriers: int  # counted by the profiler from the ops executed
    barriers_per_pass: int
    weight_bytes_read: int  # passes x the weights one pass must read

    def to_dict(self) -> dict:
        return asdict(self)


def prefill_vs_decode(engine, tokens: int, repeat: int = 3, seed: int = 0) -> tuple[PassesResult, PassesResult]:
    """The same `tokens` ids pushed through `engine` as one parallel pass, and as `tokens`
    sequential one-token passes (each sampling greedily, as generation would)."""
    from engines.generate import forward_step
    from engines.sampling import Sampler, SamplingParams

    from .probe import Probe

    cfg = engine.cfg
    ids = np.random.default_rng(seed).integers(0, cfg.vocab_size, tokens).tolist()
    sampler = Sampler(SamplingParams(greedy=True))
    weight_bytes = cfg.decode_weight_bytes(engine.dtype if engine.dtype in ("float32", "bfloat16", "float16", "float64") else "float32")

    def parallel(probe):
        engine.reset(tokens)
        engine.set_probe(probe)
        forward_step(engine, probe, sampler, "prefill", 0, tokens, lambda: engine.prefill(ids))

    def sequential(probe):
        engine.reset(tokens)
        engine.set_probe(probe)
        for i, t in enumerate(ids):
            forward_step(engine, probe, sampler, "decode", i, 1, lambda t=t: engine.decode(t))

    out = []
    for mode, fn, passes in (("parallel", parallel, 1), ("sequential", sequential, tokens)):
        fn(Probe("none"))  # warm-up
        walls, probes = [], []
        for _ in range(repeat):
            probe = Probe("token")  # counts every op, times every pass, costs ~nothing
            t = time.perf_counter()
            fn(probe)
            walls.append(time.perf_counter() - t)
            probes.append(probe)
        barriers = sum(st.barriers for st in probes[-1].steps)
        assert len(probes[-1].steps) == passes
        tm = Timing.of(walls)
        out.append(PassesResult(mode, tokens, passes, tm.median_s, tm.min_s, tm.max_s, tm.repeats,
                                tokens / tm.median_s, barriers, probes[-1].steps[0].barriers,
                                passes * weight_bytes))
    return out[0], out[1]
