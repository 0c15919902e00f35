"""`aios sim attention --gpu cpu` against real kernels on this CPU: the Numba standard
attention (S and P through DRAM) and flash attention (online softmax over cached tiles) of
`profilers/sim/kernels.py`, timed across N and d, beside what the simulator predicts for
them with this machine's spec. Prints; never asserts.

    python benchmarks/bench_attention_sim.py                 # d 8,32,64,128; N 256..4096
    python benchmarks/bench_attention_sim.py --n 512,2048 --d 64 --reps 7

Method: one head, float32, no mask. Flash uses the simulator's tiles for this machine's L2
(Bc = ceil(M/4d), Br = min(Bc, d)). Each (N, d) runs both kernels once to compile and warm,
then alternates them `--reps` times; the median and range are shown. The prediction is the
simulator's roofline time for the `cpu` spec (aios compare peak's copy bandwidth and BLAS
matmul peak, the cores as SMs, L2 per core as SRAM).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import load_avg  # noqa: E402

import numpy as np  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", default="256,512,1024,2048,4096")
    ap.add_argument("--d", default="8,32,64,128")
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    from profilers.sim.kernels import flash_attention, kernels, standard_attention
    from profilers.sim import attention as A
    from profilers.hardware import cpu_spec
    from profilers.threads import setup

    plan = setup(None)
    import numba

    spec = cpu_spec()
    print(f"attention kernels on this CPU vs aios sim attention --gpu cpu: {spec.sms} cores, "
          f"{spec.bandwidth / 1e9:.1f} GB/s, {spec.flops / 1e9:.1f} GFLOP/s (aios compare peak), "
          f"L2 {spec.sram_per_sm // 1024} KiB per core; numba threads {numba.get_num_threads()}, "
          f"{plan.threads} planned ({load_avg()})", flush=True)
    kernels()
    head = (f"{'d':>4} {'N':>6} {'Br':>4} {'Bc':>5}  {'standard ms (range)':>24} {'flash ms (range)':>24}  "
            f"{'pred std':>9} {'pred flash':>10}  {'meas/pred std':>13} {'flash':>6}  winner: measured / predicted")
    print(head)
    agree = total = 0
    ratios = {"standard": [], "flash": []}
    for d in (int(x) for x in a.d.split(",")):
        for n in (int(x) for x in a.n.split(",")):
            rng = np.random.default_rng(n + d)
            q, k, v = (rng.standard_normal((n, d)).astype(np.float32) for _ in range(3))
            shape = A.Shape(n, n, d, elem=4)
            br, bc = A.tiles(shape, spec.sram_per_sm)
            s_buf = np.empty((n, n), np.float32)
            standard_attention(q, k, v, s=s_buf)
            flash_attention(q, k, v, br, bc)
            ts, tf = [], []
            for _ in range(a.reps):
                t0 = time.perf_counter()
                standard_attention(q, k, v, s=s_buf)
                ts.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                flash_attention(q, k, v, br, bc)
                tf.append(time.perf_counter() - t0)
            ps = A.simulate("standard", shape, spec).predicted_s
            pf = A.simulate("flash", shape, spec).predicted_s
            ms, mf = statistics.median(ts), statistics.median(tf)
            won = "flash" if mf < ms else "standard"
            pred = "flash" if pf < ps else "standard"
            total += 1
            agree += won == pred
            ratios["standard"].append(ms / ps)
            ratios["flash"].append(mf / pf)
            print(f"{d:>4} {n:>6} {br:>4} {bc:>5}  {ms * 1e3:9.2f} ({min(ts) * 1e3:.2f}–{max(ts) * 1e3:.2f})"
                  f"{'':>3} {mf * 1e3:9.2f} ({min(tf) * 1e3:.2f}–{max(tf) * 1e3:.2f})  {ps * 1e3:9.3f} {pf * 1e3:10.3f}"
                  f"  {ms / ps:13.1f} {mf / pf:6.1f}  {won} / {pred}{'' if won == pred else '  ✗'}", flush=True)
    print(f"winner predicted right in {agree} of {total} cases; measured / predicted time: standard "
          f"{statistics.median(ratios['standard']):.1f}x ({min(ratios['standard']):.1f}–{max(ratios['standard']):.1f}), "
          f"flash {statistics.median(ratios['flash']):.1f}x ({min(ratios['flash']):.1f}–{max(ratios['flash']):.1f}) "
          f"(median, range) ({load_avg()})")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
