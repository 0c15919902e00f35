"""What `--profile op` costs on batched steps, measured two ways. Prints; never asserts.

    python benchmarks/bench_profile_overhead.py                 # qwen2.5-0.5b shape, 10 pairs
    python benchmarks/bench_profile_overhead.py --model tiny --pairs 4 --num-requests 8

1. **Directly**: the time of one lap (`Probe("op").lap`, a clock read and a list append),
   over a million laps, times the laps of a real batched step, over that step's time.
2. **End to end**: one engine, loaded and warmed once, serves the same workload (issue 27's:
   16 requests, prompts 16-32, outputs 32-64, seed 0) with `--profile none` and with `op`,
   in pairs whose order alternates (none-op, op-none, ...), so drift of this shared machine
   hits both alike. Per pair, the ratio op/none of output tok/s; the median ratio with a 95%
   interval (the pairs' ratios' 2.5th and 97.5th bootstrap percentiles of the median).

Threads and load are printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import load_avg  # noqa: E402


def lap_ns(n: int = 1_000_000) -> float:
    from profilers.probe import Probe

    p = Probe("op")
    p.begin_step("batch", 0, 1, 0)
    lap = p.lap
    t = time.perf_counter_ns()
    for _ in range(n):
        lap(0, 1)
    dt = time.perf_counter_ns() - t
    p.end_step()
    loop = time.perf_counter_ns()
    for _ in range(n):
        pass
    loop = time.perf_counter_ns() - loop
    return (dt - loop) / n


def serve(be, work, probe) -> float:
    """The workload through `be`; its output tok/s."""
    from profilers import throughput as T

    return T.run_batched(be, work, probe, realtime=False).summary()["output_tokens_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-0.5b")
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--num-requests", "-N", type=int, default=16)
    ap.add_argument("--input-len", default="16:32")
    ap.add_argument("--output-len", default="32:64")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()

    from engines.batch.engine import BatchEngine
    from engines.model.sources import open_model
    from profilers import throughput as T
    from profilers.harness import build_engine
    from profilers.probe import make_probe
    from profilers.threads import setup

    plan = setup(a.threads)
    print(f"aios profile overhead · {a.model} · torch float32 · threads {plan.threads} · cpus {os.cpu_count()} · "
          f"{load_avg()}")
    ns = lap_ns()
    ckpt = open_model(a.model)
    engine, _ = build_engine(ckpt, "torch", None)
    work = T.synthetic(a.num_requests, T.parse_range(a.input_len, "--input-len"),
                       T.parse_range(a.output_len, "--output-len"), float("inf"), ckpt.config.vocab_size, 0)
    be = BatchEngine(engine, num_blocks=T.default_kv_blocks(work, 16), block_size=16)
    T.warm_up(be, engine)
    # one op-level run first, untimed: the laps of its steps, for the direct estimate
    probe = make_probe("op")
    serve(be, work, probe)
    laps = statistics.median(len(s.ops) for s in probe.steps)
    wall = statistics.median(s.wall_s for s in probe.steps)
    print(f"1. one lap: {ns:.0f} ns; a batched step makes {laps:.0f} laps and takes {wall * 1e3:.1f} ms (medians): "
          f"laps cost {laps * ns * 1e-9 / wall:.3%} of a step")
    ratios, rows = [], []
    for i in range(a.pairs):
        order = ("none", "op") if i % 2 == 0 else ("op", "none")
        got = {}
        for level in order:
            probe = make_probe("op") if level == "op" else None
            got[level] = serve(be, work, probe)
        ratios.append(got["op"] / got["none"])
        rows.append(got)
        print(f"   pair {i + 1:2d} ({order[0]} first): none {got['none']:.1f} tok/s, op {got['op']:.1f} tok/s, "
              f"op/none {ratios[-1]:.3f}", flush=True)
    rng = np.random.default_rng(0)
    boot = [np.median(rng.choice(ratios, len(ratios))) for _ in range(10_000)]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    none = [r["none"] for r in rows]
    op = [r["op"] for r in rows]
    print(f"2. {a.pairs} interleaved pairs, {a.num_requests} requests each: none {statistics.median(none):.1f} tok/s "
          f"(range {min(none):.1f}-{max(none):.1f}), op {statistics.median(op):.1f} tok/s "
          f"(range {min(op):.1f}-{max(op):.1f}); op/none median {statistics.median(ratios):.3f}, "
          f"95% interval {lo:.3f}-{hi:.3f}; {load_avg()}")


if __name__ == "__main__":
    main()
