"""Benchmark the simd engine's ``matvec`` against np.dot and torch on Qwen2.5-0.5B decode shapes.

    python benchmarks/bench_matvec.py              # full run (~1-2 min on a 2-core box)
    python benchmarks/bench_matvec.py --quick      # fewer repetitions, no cold-JIT subprocess

For every decode-time projection of Qwen2.5-0.5B (hidden 896, intermediate 4864,
14 query / 2 kv heads of 64, vocab 151936) it times one float32 matrix-vector product:

* ``simd``   ``engines.simd.kernels.matvec(W, x, out)``
* ``numpy``  ``np.dot(W, x, out=out)`` (OpenBLAS sgemv)
* ``torch``  ``torch.nn.functional.linear(x[None], W)`` (CPU, one row; allocates its output)

and reports the median per-call time over all repetitions, the min-max spread, and the
bandwidth ``(W + x + out bytes) / median time``.  Two cache regimes:

* ``hot``:  the same W every call.  W of the attention/down shapes (3-17 MB) then sits
  in the 48 MB L3, so this is an L3 benchmark, not what decode sees.
* ``cold``: calls rotate over enough copies of W (>= ``--cold-mb``, default 256 MB) that
  each call streams W from DRAM -- the decode regime, where a token touches all
  ~1.4 GB of layer weights + the 0.5 GB lm_head once.  The lm_head (545 MB) is
  always cold.

Implementations are interleaved round-robin (``--rounds`` rounds of ``reps`` calls each)
so that machine-load drift hits all of them alike; before each block of calls the
process idles ``--settle`` seconds (so the previous library's spinning thread pool goes
to sleep) and makes ``--warm-calls`` untimed calls, i.e. every implementation is timed
in steady state, not while fighting another pool for the 2 cores.  Reference lines: a 512 MB
``np.copyto`` (reported both as bytes copied and as bytes moved = read + write) and a
parallel Numba read-only sum (the DRAM read ceiling matvec is chasing).  The JIT
(warm-up) time is reported separately, in this process and -- unless ``--quick`` or
``--no-cold-jit`` -- cold vs cached in two subprocesses sharing a fresh
``NUMBA_CACHE_DIR``.  Finally it prints the per-call overhead of a ``parallel=True``
kernel on a tiny input vs a serial one (decode makes ~100 small kernel calls per token).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Qwen2.5-0.5B decode projections: (name, out_features, in_features)
SHAPES = [
    ("qkv 896->1152", 1152, 896),
    ("o_proj 896->896", 896, 896),
    ("gate_up 896->9728", 9728, 896),
    ("down 4864->896", 896, 4864),
    ("lm_head 896->151936", 151936, 896),
]

from _bench_common import parser as _parser  # noqa: E402
from _bench_common import start as _start  # noqa: E402
from _bench_common import load_avg as _load  # noqa: E402


def _fmt_t(s: float) -> str:
    return f"{s * 1e6:9.1f} us" if s < 1e-2 else f"{s * 1e3:9.2f} ms"


def _time_calls(fn, args_list, reps: int) -> list[float]:
    ts = []
    k = len(args_list)
    pc = time.perf_counter
    for j in range(reps):
        a = args_list[j % k]
        t0 = pc()
        fn(*a)
        ts.append(pc() - t0)
    return ts


def bench_shapes(args, impls) -> list[tuple]:
    rng = np.random.default_rng(0)
    rows = []
    for name, O, I in SHAPES:
        W = rng.standard_normal((O, I), dtype=np.float32)
        x = rng.standard_normal(I, dtype=np.float32)
        out = np.empty(O, np.float32)
        nbytes = W.nbytes + x.nbytes + out.nbytes
        # correctness guard: all implementations agree (float32 accumulation error only)
        ref = W.astype(np.float64) @ x.astype(np.float64)
        scale = float(np.abs(ref).max())
        for iname, fn, mk in impls:
            res = fn(*mk(W, x, out))
            got = out if res is None else np.asarray(res).reshape(-1)
            err = float(np.abs(got - ref).max())
            if not err <= 1e-4 * scale:
                raise SystemExit(f"{iname} disagrees on {name}: max err {err:.3g}")
        regimes = ["hot", "cold"] if W.nbytes < args.cold_mb * 1e6 else ["cold"]
        for regime in regimes:
            if regime == "hot":
                Ws = [W]
            else:
                n_copies = max(1, int(np.ceil(args.cold_mb * 1e6 / W.nbytes)))
                Ws = [W] + [W.copy() for _ in range(n_copies - 1)]
            # repetitions: ~args.target_s of work per implementation and round
            est = nbytes / 20e9
            reps = int(min(args.max_reps, max(args.min_reps, args.target_s / est)))
            arg_lists = {iname: [mk(w, x, out) for w in Ws] for iname, _, mk in impls}
            for iname, fn, _ in impls:  # first touch: page faults, thread-pool start
                _time_calls(fn, arg_lists[iname], len(Ws))
            samples = {iname: [] for iname, _, _ in impls}
            for _ in range(args.rounds):
                for iname, fn, _ in impls:
                    # Let the previous implementation's thread pool go idle (OpenBLAS
                    # workers spin ~0.1 s after a call; two spinning pools on 2 cores
                    # time-slice at ms granularity), then a few untimed calls to wake
                    # this one's pool: we measure each in steady state.  The cost of
                    # switching pools is measured separately (bench_overhead).
                    time.sleep(args.settle)
                    _time_calls(fn, arg_lists[iname], args.warm_calls)
                    samples[iname] += _time_calls(fn, arg_lists[iname], reps)
            for iname, _, _ in impls:
                ts = np.asarray(samples[iname])
                med = float(np.median(ts))
                rows.append((name, nbytes, regime, iname, med, float(ts.min()), float(ts.max()),
                             nbytes / med / 1e9, len(ts)))
            del arg_lists, Ws
    return rows


def print_shape_table(rows) -> None:
    hdr = (f"{'shape':<21} {'MB':>6} {'cache':<5} {'impl':<6} {'median':>12} "
           f"{'min - max':>25} {'GB/s':>6} {'vs np':>6} {'n':>5}")
    print(hdr)
    print("-" * len(hdr))
    last = None
    np_med = {}
    for r in rows:
        if r[3] == "numpy":
            np_med[(r[0], r[2])] = r[4]
    for name, nbytes, regime, iname, med, lo, hi, gbs, n in rows:
        key = (name, regime)
        if last is not None and key != last:
            print()
        label = name if key != last else ""
        last = key
        rel = np_med.get(key, float("nan")) / med
        print(f"{label:<21} {nbytes / 1e6:6.1f} {regime:<5} {iname:<6} {_fmt_t(med):>12} "
              f"{_fmt_t(lo).strip() + ' - ' + _fmt_t(hi).strip():>25} {gbs:6.1f} {rel:5.2f}x {n:5d}")


def bench_reference(args) -> None:
    from numba import njit, prange

    @njit(parallel=True, fastmath=True, cache=False)
    def _read_sum(a, out):
        nb = out.shape[0]
        step = (a.shape[0] + nb - 1) // nb
        for b in prange(nb):
            seg = a[b * step: min(a.shape[0], (b + 1) * step)]
            acc = np.float32(0.0)
            for i in range(seg.shape[0]):
                acc += seg[i]
            out[b] = acc

    n = 512 * 1024 * 1024 // 4
    src = np.ones(n, np.float32)
    dst = np.empty_like(src)
    partial = np.empty(256, np.float32)
    np.copyto(dst, src)
    _read_sum(src, partial)
    tc, tr = [], []
    for _ in range(args.copy_reps):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        tc.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _read_sum(src, partial)
        tr.append(time.perf_counter() - t0)
    mc, mr = float(np.median(tc)), float(np.median(tr))
    print(f"np.copyto 512 MB       median {_fmt_t(mc).strip():>10} "
          f"[{_fmt_t(min(tc)).strip()} - {_fmt_t(max(tc)).strip()}]  "
          f"{src.nbytes / mc / 1e9:5.1f} GB/s copied, {2 * src.nbytes / mc / 1e9:5.1f} GB/s moved (read+write)")
    print(f"numba prange read 512 MB median {_fmt_t(mr).strip():>10} "
          f"[{_fmt_t(min(tr)).strip()} - {_fmt_t(max(tr)).strip()}]  "
          f"{src.nbytes / mr / 1e9:5.1f} GB/s read (the DRAM read ceiling for a matvec)")


def bench_overhead(sk, torch_linear=None) -> None:
    """Per-call cost of a parallel=True kernel on a tiny input vs a serial one, and
    what happens to it when another thread pool (OpenBLAS, torch) ran just before."""
    W = np.ones((8, 8), np.float32)
    x = np.ones(8, np.float32)
    out = np.empty(8, np.float32)
    big = np.ones((896, 4864), np.float32)
    bx = np.ones(4864, np.float32)
    bo = np.empty(896, np.float32)
    par = (sk._mv_par, (W, x, out, False, out))
    ser = (sk._mv_ser, (W, x, out, False, out))

    def back_to_back(fn, a, n=20000, rounds=5):
        fn(*a)
        per = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(n):
                fn(*a)
            per.append((time.perf_counter() - t0) / n)
        return float(np.median(per))

    def after(prep, fn, a, n=60):
        ts = []
        for _ in range(n):
            prep()
            t0 = time.perf_counter()
            fn(*a)
            ts.append(time.perf_counter() - t0)
        return float(np.median(ts)), float(np.percentile(ts, 90))

    def line(label, med, p90=None):
        tail = "" if p90 is None else f"   (p90 {_fmt_t(p90).strip()})"
        print(f"  {label:<58} {_fmt_t(med):>12}{tail}")

    print("per-call overhead, 8x8 matvec (the work itself is ~10 ns):")
    line("serial body, back-to-back", back_to_back(*ser))
    line("public matvec (dispatches to the serial body), back-to-back", back_to_back(sk.matvec, (W, x, out)))
    line("parallel body (prange, 2 threads), back-to-back", back_to_back(*par))
    line("parallel body, after 5 ms idle", *after(lambda: time.sleep(0.005), *par))
    line("serial body, after 5 ms idle", *after(lambda: time.sleep(0.005), *ser))
    line("parallel body, right after np.dot 896x4864 (OpenBLAS pool)",
         *after(lambda: np.dot(big, bx, out=bo), *par))
    line("serial body, right after np.dot 896x4864", *after(lambda: np.dot(big, bx, out=bo), *ser))
    if torch_linear is not None:
        tx, tW = torch_linear[1]
        line("parallel body, right after torch F.linear 896x4864",
             *after(lambda: torch_linear[0](tx, tW), *par))
    line("np.dot 896x4864 back-to-back", back_to_back(np.dot, (big, bx, bo), n=200))
    line("np.dot 896x4864 right after a parallel numba call",
         *after(lambda: sk._mv_par(W, x, out, False, out), np.dot, (big, bx, bo)))


def main(argv=None) -> None:
    ap = _parser(__doc__, "shape", target_s=0.15, max_reps=400, warm_calls=5)
    ap.add_argument("--cold-mb", type=float, default=256.0, help="bytes of W copies for the cold regime")
    args = ap.parse_args(argv)
    sk = _start("bench_matvec", args, "engines.simd.kernels", quick_target_s=0.05)
    print()

    impls = [
        ("simd", sk.matvec, lambda W, x, out: (W, x, out)),
        ("numpy", np.dot, lambda W, x, out: (W, x, out)),
    ]
    if not args.no_torch:
        try:
            import torch
            import torch.nn.functional as F

            torch.set_grad_enabled(False)
            impls.append(("torch", F.linear,
                          lambda W, x, out: (torch.from_numpy(x)[None], torch.from_numpy(W))))
            print(f"torch {torch.__version__}  intra-op threads {torch.get_num_threads()}")
        except ImportError:
            print("torch not installed: skipping the torch column")
    rows = bench_shapes(args, impls)
    print("bytes = W + x + out; GB/s = bytes / median; 'vs np' = numpy median / this median")
    print()
    print_shape_table(rows)
    print()
    bench_reference(args)
    print()
    tl = None
    if not args.no_torch and len(impls) == 3:
        import torch

        tl = (impls[2][1], (torch.ones(1, 4864), torch.ones(896, 4864)))
    bench_overhead(sk, tl)
    print()
    print(_load())


if __name__ == "__main__":
    main()
