"""Decode tokens/s per backend, against this machine's memory roofline. Prints; never asserts.

    python benchmarks/bench_decode.py                    # tiny (all CPU engines) + qwen2.5-0.5b (simd, torch)
    python benchmarks/bench_decode.py --models qwen2.5-0.5b --backends simd --repeat 7

Method: each engine is built once, warmed up (JIT compile time reported on its own), then
generates `--tokens` tokens `--repeat` times with profiling off (`--profile none`: the probe's
lap is a no-op). Decode tok/s is reported as the median over repeats with the min–max spread.

Roofline: decode must read every weight once per token, so tokens/s can be no higher than
(memory bandwidth) / (weight bytes read per decode token). The bandwidth is *measured* here
with a large array copy (bytes read + bytes written, per second), not taken from a datasheet.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from profilers.threads import quiet_blas_pool  # noqa: E402

quiet_blas_pool()  # as `aios run` does, before NumPy loads OpenBLAS

import numpy as np  # noqa: E402

from engines import engine_class  # noqa: E402
from engines.model.sources import open_model  # noqa: E402
from engines.generate import Generation  # noqa: E402
from engines.sampling import SamplingParams  # noqa: E402
from profilers.harness import measured  # noqa: E402
from profilers.passes import decode_weight_bytes  # noqa: E402
from profilers.peaks import cpu_copy_bandwidth  # noqa: E402
from profilers.probe import Probe  # noqa: E402
from _bench_common import Table  # noqa: E402

DEFAULT_PLAN = [("tiny", ("scalar", "simd", "torch")), ("qwen2.5-0.5b", ("simd", "torch"))]
PROMPT = [785, 3974, 13876, 38835, 34208, 916, 279, 15678]  # 8 in-vocabulary ids


def copy_bandwidth() -> dict[str, tuple[float, float, float]]:
    """(median, min, max) GB/s copying 1 GiB, counting bytes read + bytes written: with all
    cores and with one (the same measurement `aios compare peak` caches)."""
    out = {}
    for name, all_cores in (("all cores", True), ("one core", False)):
        p = cpu_copy_bandwidth(all_cores=all_cores)
        out[name] = (p.median / 1e9, p.min / 1e9, p.max / 1e9)
    return out


def bench(model: str, backend: str, tokens: int, repeat: int) -> dict:
    ckpt = open_model(model)
    t = time.perf_counter()
    eng = engine_class(backend)(ckpt)
    load_s = time.perf_counter() - t
    jit_s = eng.warmup()
    greedy = SamplingParams(greedy=True)

    def generation(n):
        return Generation(eng, PROMPT, n, eng.make_sampler(greedy))

    for _ in generation(3):  # untimed warm-up
        pass
    rates = []
    for _ in range(repeat):
        gen = generation(tokens)
        dec = [st.wall_s for st, _ in measured(gen, Probe("none")) if st.phase == "decode"]
        rates.append(len(dec) / sum(dec))
    weight_bytes = decode_weight_bytes(eng)  # as the engine holds them: float64 for scalar
    return {"model": model, "backend": backend, "load_s": load_s, "jit_s": jit_s,
            "median": statistics.median(rates), "min": min(rates), "max": max(rates),
            "weight_bytes": weight_bytes, "tokens": len(gen.generated_ids)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=None, help="comma list (default: tiny and qwen2.5-0.5b)")
    ap.add_argument("--backends", default=None, help="comma list (default: per model, see the docstring)")
    ap.add_argument("--tokens", type=int, default=32, help="tokens generated per repeat")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    plan = DEFAULT_PLAN
    if args.models or args.backends:
        models = (args.models or "tiny").split(",")
        backends = tuple((args.backends or "simd,torch").split(","))
        plan = [(m, backends) for m in models]

    import torch

    copies = copy_bandwidth()
    bw, bw_lo, bw_hi = copies["all cores"]
    env = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}
    print(f"machine: {os.cpu_count()} logical CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    for name, (m, lo, hi) in copies.items():
        print(f"measured copy bandwidth, 1 GiB, {name} (read+write): {m:.1f} GB/s (min {lo:.1f}, max {hi:.1f})")
    print("environment: " + (", ".join(f"{k}={v}" for k, v in env.items() if v is not None) or "no BLAS/thread overrides"))
    print(f"method: {args.tokens} tokens x {args.repeat} repeats per backend, profiling off, median (min-max)\n")
    table = Table(("model", "<14"), ("backend", "<8"), ("decode tok/s", ">24"), ("roofline tok/s", ">15.1f"),
                  ("% of roofline", ">14"), ("JIT s", ">7.2f"), ("load s", ">7.2f"))
    for model, backends in plan:
        for b in backends:
            r = bench(model, b, args.tokens, args.repeat)
            roof = bw * 1e9 / r["weight_bytes"]
            spread = f"{r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f})"
            table.row(model, b, spread, roof, f"{100 * r['median'] / roof:.0f}%", r["jit_s"], r["load_s"])
    print("\nroofline = measured all-core copy bandwidth / weight bytes read per decode token "
          "(as each engine holds them: float32, float64 for scalar). An upper bound, not a measurement.")


if __name__ == "__main__":
    main()
