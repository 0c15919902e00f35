"""The configurations `bench_quant_speed.py` times and the interleaved run. A configuration is one
engine (aios's simd or torch, or llama.cpp) on one model's weights in one format, with its runner,
which decodes the same tokens at the same positions of the KV cache on every engine and times
each decode step; `build_configs` builds them all, `run_rounds` runs them in rotated rounds."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .gguf_files import gguf_file_for, gguf_weight_facts

PROMPT = [785, 3974, 13876, 38835, 34208, 916, 279, 15678]  # 8 ids, in both models' vocabularies


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


def build_configs(args, cache: Path, llama_why: str | None, say) -> tuple[list[Config], list[str]]:
    """Every (model, engine, quant) of `args` built, in order (a configuration that cannot be built
    is skipped with the reason), and the reasons."""
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
    return configs, skipped


def run_rounds(configs: list[Config], args, say) -> None:
    """`args.rounds` rounds, each running every configuration once, in an order rotated every round;
    each configuration collects its per-token times, tok/s and the load average of each round."""
    from profilers import threads as thread_pools

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
    for c in configs:  # the threads each pool ran with, read back after the run
        if c.threads is None:
            c.threads = thread_pools.pool_threads(c.engine)["threads"]
