"""Benchmark the ``aios compare dot`` / ``aios compare matmul`` kernels against BLAS and torch.

    python benchmarks/bench_compare_kernels.py              # full run (~2-3 min on the 2-core box)
    python benchmarks/bench_compare_kernels.py --quick      # fewer repetitions, no cold-JIT subprocess
    python benchmarks/bench_compare_kernels.py --crossover  # also the serial/parallel crossovers

dot (float32 vectors, n = 1e4 .. 1e7), one call each of:

* ``numba``      ``profilers.bench.simd_kernels.dot(a, b)`` (serial body below ``_PAR_MIN_DOT``)
* ``numba-1t``   its serial body ``_dot_ser`` (one thread, whatever n)
* ``numpy``      ``np.dot(a, b)`` (OpenBLAS sdot: single-threaded)
* ``torch``      ``torch.dot`` (CPU), and ``torch-gpu`` when CUDA is available (synchronized,
  data already on the device)

reported as the median per-call time (min - max) and as GB/s of bytes *read*
(2 * n * 4), against two bandwidth references measured here on 512 MB buffers with
2 threads (Numba prange): (a) a copy, GB/s moved = read + write, the same kernel as
``aios compare peak`` (it becomes memcpy with non-temporal stores); (b) a read-only
stream (16 chunks summed; the DRAM read ceiling a dot product is chasing).  ``read@n`` is the same read-only
stream over the dot's own 2 * n * 4 bytes (an L2/L3 ceiling for the in-cache sizes).

matmul (square float32, 64 .. 1024): ``profilers.bench.simd_kernels.matmul(A, B, out)`` vs
``np.matmul(A, B, out=out)`` (OpenBLAS sgemm) vs ``torch.mm`` (CPU), GFLOP/s
(2 * n**3 / median) and % of the numpy (BLAS) median.

Methodology (as in bench_matvec.py): implementations are interleaved round-robin over
``--rounds`` rounds; before each block of calls the process idles ``--settle`` seconds
(so the previous library's spinning thread pool goes to sleep: Numba's GNU OpenMP pool
and OpenBLAS's time-slice on 2 cores otherwise, ~3-5 ms per call) and makes a few
untimed calls.  Every call is timed on its own.  JIT (warm-up) time is reported
separately: in this process, and -- unless ``--quick`` / ``--no-cold-jit`` -- cold vs
cached in two subprocesses sharing a fresh ``NUMBA_CACHE_DIR``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _bench_common import parser as _parser  # noqa: E402
from _bench_common import start as _start  # noqa: E402
from _bench_common import load_avg as _load  # noqa: E402


def _fmt_t(s: float) -> str:
    if s < 1e-5:
        return f"{s * 1e9:.0f} ns"
    return f"{s * 1e6:.1f} us" if s < 1e-2 else f"{s * 1e3:.2f} ms"


def _time_calls(fn, args, reps: int) -> list[float]:
    ts = []
    pc = time.perf_counter
    for _ in range(reps):
        t0 = pc()
        fn(*args)
        ts.append(pc() - t0)
    return ts


def _interleaved(impls, args, reps: int) -> dict[str, np.ndarray]:
    """impls: [(name, fn, args_tuple)]; returns per-call times per implementation."""
    samples = {name: [] for name, _, _ in impls}
    for name, fn, a in impls:  # first touch: page faults, pool start, lazy init
        _time_calls(fn, a, 2)
    for _ in range(args.rounds):
        for name, fn, a in impls:
            time.sleep(args.settle)
            _time_calls(fn, a, args.warm_calls)
            samples[name] += _time_calls(fn, a, reps)
    return {k: np.asarray(v) for k, v in samples.items()}


def _reps(est_s: float, args) -> int:
    return int(min(args.max_reps, max(args.min_reps, args.target_s / max(est_s, 1e-9))))


# ---------------------------------------------------------------- bandwidth references


def _make_stream_kernels():
    from numba import njit, prange

    @njit(parallel=True, cache=False)
    def copy_par(src, dst):
        # the same kernel as profilers/peaks.py (`aios compare peak`): LLVM turns each
        # thread's share into a memcpy call, and glibc's memcpy uses non-temporal stores
        # at this size -- no write-allocate read of dst.  A vectorized copy loop with
        # ordinary stores (e.g. over 16 slices) moves only ~21 GB/s by this count here.
        for i in prange(src.shape[0]):
            dst[i] = src[i]

    @njit(parallel=True, fastmath=True, cache=False)
    def read_par(src, nch):
        n = src.shape[0]
        step = (n + nch - 1) // nch
        acc = np.float32(0.0)
        for c in prange(nch):
            lo = min(n, c * step)
            hi = min(n, lo + step)
            s = src[lo:hi]
            p = np.float32(0.0)
            for i in range(s.shape[0]):
                p += s[i]
            acc += p
        return acc

    return copy_par, read_par


def bench_reference(args, copy_par, read_par) -> tuple[float, float]:
    """(copy GB/s moved = read + write, read-only GB/s), 2 threads, 512 MB buffers."""
    n = 512 * 1024 * 1024 // 4
    src = np.ones(n, np.float32)
    dst = np.empty_like(src)
    nch = 16
    copy_par(src, dst)
    read_par(src, nch)
    tc, tr = [], []
    for _ in range(args.copy_reps):
        t0 = time.perf_counter()
        copy_par(src, dst)
        tc.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        read_par(src, nch)
        tr.append(time.perf_counter() - t0)
    mc, mr = float(np.median(tc)), float(np.median(tr))
    copy_gbs = 2 * src.nbytes / mc / 1e9
    read_gbs = src.nbytes / mr / 1e9
    print(f"(a) numba prange copy 512 MB, 2 threads: median {_fmt_t(mc):>9} "
          f"[{_fmt_t(min(tc))} - {_fmt_t(max(tc))}]  {copy_gbs:5.1f} GB/s moved (read+write)"
          f"  = {src.nbytes / mc / 1e9:.1f} GB/s copied")
    print(f"(b) numba prange read 512 MB, 2 threads: median {_fmt_t(mr):>9} "
          f"[{_fmt_t(min(tr))} - {_fmt_t(max(tr))}]  {read_gbs:5.1f} GB/s read")
    return copy_gbs, read_gbs


# ------------------------------------------------------------------------------- dot


def bench_dot(args, sk, read_par, copy_gbs, read_gbs, torch) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for n in args.dot_sizes:
        a = rng.standard_normal(n, dtype=np.float32)
        b = rng.standard_normal(n, dtype=np.float32)
        nbytes = 2 * n * 4
        ref = float(a.astype(np.float64) @ b.astype(np.float64))
        mag = float(np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64)))
        impls = [("numba", sk.dot, (a, b)), ("numba-1t", sk._dot_ser, (a, b)),
                 ("numpy", np.dot, (a, b))]
        if torch is not None:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            impls.append(("torch", torch.dot, (ta, tb)))
            if torch.cuda.is_available():
                ga, gb = ta.cuda(), tb.cuda()

                def gpu_dot(x, y, _t=torch):
                    r = _t.dot(x, y)
                    _t.cuda.synchronize()
                    return r

                impls.append(("torch-gpu", gpu_dot, (ga, gb)))
        for name, fn, a_ in impls:  # correctness guard: float32 accumulation error only
            got = float(fn(*a_))
            if not abs(got - ref) <= 4 * np.sqrt(n) * 2.0**-23 * mag + 1e-6:
                raise SystemExit(f"{name} dot disagrees at n={n}: {got} vs {ref}")
        # the read-only stream over the same bytes: the cache-level ceiling at this size
        both = np.concatenate([a, b])
        impls.append(("read@n", read_par, (both, 16)))
        samples = _interleaved(impls, args, _reps(nbytes / 20e9 + 2e-6, args))
        for name, _, _ in impls:
            ts = samples[name]
            med = float(np.median(ts))
            rows.append((n, name, med, float(ts.min()), float(ts.max()), nbytes / med / 1e9, len(ts)))
    hdr = (f"{'n':>10} {'impl':<10} {'median':>10} {'min - max':>23} {'GB/s':>7} "
           f"{'%copy(a)':>9} {'%read(b)':>9} {'%read@n':>8} {'calls':>6}")
    print(hdr)
    print("-" * len(hdr))
    last = None
    at_n = {(r[0], r[1]): r[5] for r in rows}
    for n, name, med, lo, hi, gbs, cnt in rows:
        if last is not None and n != last:
            print()
        label = f"{n:.0e}" if n != last else ""
        last = n
        print(f"{label:>10} {name:<10} {_fmt_t(med):>10} {_fmt_t(lo) + ' - ' + _fmt_t(hi):>23} "
              f"{gbs:7.1f} {100 * gbs / copy_gbs:8.0f}% {100 * gbs / read_gbs:8.0f}% "
              f"{100 * gbs / at_n[(n, 'read@n')]:7.0f}% {cnt:6d}")


# ---------------------------------------------------------------------------- matmul


def bench_matmul(args, sk, torch) -> None:
    rng = np.random.default_rng(1)
    rows = []
    for n in args.mm_sizes:
        A = rng.standard_normal((n, n), dtype=np.float32)
        B = rng.standard_normal((n, n), dtype=np.float32)
        out = np.empty((n, n), np.float32)
        flops = 2.0 * n**3
        impls = [("numba", sk.matmul, (A, B, out)), ("numpy", np.matmul, (A, B, out))]
        if torch is not None:
            tA, tB, tO = torch.from_numpy(A), torch.from_numpy(B), torch.from_numpy(out)
            impls.append(("torch", lambda x, y, o, _t=torch: _t.mm(x, y, out=o), (tA, tB, tO)))
        ref = A.astype(np.float64) @ B.astype(np.float64)
        tol = 4 * np.sqrt(n) * 2.0**-23 * (np.abs(A.astype(np.float64)) @ np.abs(B.astype(np.float64)))
        for name, fn, a_ in impls:
            out.fill(np.nan)
            fn(*a_)
            if not (np.abs(out - ref) <= tol).all():
                raise SystemExit(f"{name} matmul disagrees at n={n}")
        samples = _interleaved(impls, args, _reps(flops / 80e9 + 5e-6, args))
        for name, _, _ in impls:
            ts = samples[name]
            med = float(np.median(ts))
            rows.append((n, name, med, float(ts.min()), float(ts.max()), flops / med / 1e9, len(ts)))
    blas = {r[0]: r[2] for r in rows if r[1] == "numpy"}
    hdr = (f"{'n':>6} {'impl':<7} {'median':>10} {'min - max':>23} {'GFLOP/s':>8} "
           f"{'(best)':>8} {'% BLAS':>7} {'calls':>6}")
    print(hdr)
    print("-" * len(hdr))
    last = None
    for n, name, med, lo, hi, gf, cnt in rows:
        if last is not None and n != last:
            print()
        label = str(n) if n != last else ""
        last = n
        print(f"{label:>6} {name:<7} {_fmt_t(med):>10} {_fmt_t(lo) + ' - ' + _fmt_t(hi):>23} "
              f"{gf:8.1f} {2.0 * n**3 / lo / 1e9:8.1f} {100 * blas[n] / med:6.0f}% {cnt:6d}")


# ------------------------------------------------------------------------ crossovers


def bench_crossover(args, sk) -> None:
    """Serial vs parallel body back-to-back (the regime the thresholds are for)."""

    def b2b(fn, a, calls):
        fn(*a)
        per = []
        for _ in range(7):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn(*a)
            per.append((time.perf_counter() - t0) / calls)
        return float(np.median(per))

    rng = np.random.default_rng(2)
    print(f"dot, back-to-back median per call (_PAR_MIN_DOT = {sk._PAR_MIN_DOT}):")
    for n in (4096, 8192, 16384, 32768, 65536, 131072, 262144):
        a = rng.standard_normal(n, dtype=np.float32)
        b = rng.standard_normal(n, dtype=np.float32)
        calls = max(200, int(2e5 // max(1, n // 1024)))
        ts, tp = b2b(sk._dot_ser, (a, b), calls), b2b(sk._dot_par, (a, b), calls)
        print(f"  n={n:>7}  serial {_fmt_t(ts):>9}  parallel {_fmt_t(tp):>9}  "
              f"{'parallel' if tp < ts else 'serial'} wins")
    print(f"matmul, back-to-back median per call (_PAR_MIN_MATMUL = {sk._PAR_MIN_MATMUL} = M*N*K):")
    for m in (8, 16, 24, 32, 40, 48, 64, 96):
        A = rng.standard_normal((m, m), dtype=np.float32)
        B = rng.standard_normal((m, m), dtype=np.float32)
        out = np.empty((m, m), np.float32)
        calls = max(50, int(2e7 // m**3))
        ts = b2b(sk._matmul_ser, (A, B, out), calls)
        tp = b2b(sk._matmul_par, (A, B, out), calls)
        print(f"  {m}^3 = {m**3:>7}  serial {_fmt_t(ts):>9}  parallel {_fmt_t(tp):>9}  "
              f"{'parallel' if tp < ts else 'serial'} wins")


def main(argv=None) -> None:
    ap = _parser(__doc__, "size", target_s=0.1, max_reps=2000, warm_calls=3)
    ap.add_argument("--dot-sizes", type=lambda s: [int(float(x)) for x in s.split(",")],
                    default=[10_000, 100_000, 1_000_000, 10_000_000])
    ap.add_argument("--mm-sizes", type=lambda s: [int(x) for x in s.split(",")],
                    default=[64, 128, 256, 512, 1024])
    ap.add_argument("--crossover", action="store_true", help="also time serial vs parallel bodies")
    args = ap.parse_args(argv)
    sk = _start("bench_compare_kernels", args, "profilers.bench.simd_kernels", quick_target_s=0.04)
    t0 = time.perf_counter()
    copy_par, read_par = _make_stream_kernels()
    copy_par(np.ones(4, np.float32), np.empty(4, np.float32))
    read_par(np.ones(4, np.float32), 2)
    print(f"JIT of the benchmark's own reference kernels (copy, read; not cached): "
          f"{time.perf_counter() - t0:.2f} s")
    torch = None
    if not args.no_torch:
        try:
            import torch as _torch

            _torch.set_grad_enabled(False)
            torch = _torch
            print(f"torch {torch.__version__}  intra-op threads {torch.get_num_threads()}  "
                  f"cuda {'yes: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no'}")
        except ImportError:
            print("torch not installed: skipping the torch columns")
    print()

    print("== bandwidth references")
    copy_gbs, read_gbs = bench_reference(args, copy_par, read_par)
    print()
    print("== dot: GB/s = 2*n*4 bytes read / median; % of (a) copy read+write GB/s, "
          "(b) read-only GB/s, read@n (read-only stream over the same 2*n*4 bytes)")
    bench_dot(args, sk, read_par, copy_gbs, read_gbs, torch)
    print()
    print("== matmul (square n x n x n): GFLOP/s = 2 n^3 / median ((best) = / min); "
          "% BLAS = numpy median / this median")
    bench_matmul(args, sk, torch)
    if args.crossover:
        print()
        print("== serial vs parallel bodies")
        bench_crossover(args, sk)
    print()
    print(_load())


if __name__ == "__main__":
    main()
