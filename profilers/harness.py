"""The measuring path: an engine, a probe and a memory sampler around one generation.

`ProfiledRun` is an iterator of forward passes: each `next()` runs one pass of the engine's
`Generation` between the probe's step boundaries and yields `(step, token)`. `aios run`
consumes it to the end; `aios top` pauses by not pulling, so paused time never enters a
measurement; both make their `RunRecord` from it, so there is one way numbers are taken.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Iterator

from engines import backend as backend_record
from engines import engine_class
from engines.model.checkpoint import Checkpoint
from engines.generate import Generation
from engines.sampling import SamplingParams

from . import nvml
from .memory import MemorySampler, peak_rss_bytes, reset_peak_rss
from .probe import Step, make_probe
from .provenance import versions
from .record import RunRecord
from .sysinfo import cpu_model
from .threads import ThreadPlan, pool_threads


@dataclass(frozen=True)
class RunOptions:
    max_new_tokens: int = 16
    sampling: SamplingParams = SamplingParams()
    dtype: str | None = None
    profile: str = "op"
    warmup: bool = True
    ignore_eos: bool = False
    threads: ThreadPlan | None = None  # the plan the command applied (None: pools as they were)
    quant: str | None = None  # --quant: the format linear weights are quantized to as they load
    speculate: str | None = None  # --speculate: the drafter (engines.spec.drafters), None: one token a pass
    spec_k: int = 4  # --spec-k: tokens drafted a round, at most (the first round's, with draft_max)
    draft_max: int | None = None  # --draft-max: adaptive k up to this (None: k fixed)
    draft_min: int = 0  # --draft-min: a shorter draft is not verified
    draft_p_min: float = 0.0  # --draft-p-min: a model drafter stops below this confidence
    spec_baseline: bool = True  # --baseline: after a speculative run, the same run without it, for the speed-up


def new_run_id(backend: str) -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{backend}-{uuid.uuid4().hex[:6]}"


def build_engine(ckpt: Checkpoint, backend: str, dtype: str | None, progress: Callable | None = None,
                 quant: str | None = None):
    """(engine, seconds to build it). `quant` is passed only when set: not every engine takes it."""
    t0 = time.perf_counter()
    kw = {"quant": quant} if quant is not None else {}
    engine = engine_class(backend)(ckpt, dtype=dtype, progress=progress, **kw)
    return engine, time.perf_counter() - t0


def build_drafter(engine, opts: RunOptions, progress: Callable | None = None):
    """The drafter --speculate names, for `engine` (a model drafter is a second engine, built here)."""
    from engines.spec.drafters import make_drafter

    return make_drafter(opts.speculate, engine, opts.sampling, seed=opts.sampling.seed, p_min=opts.draft_p_min,
                        dtype=opts.dtype, progress=progress)


def warm_up(engine, prompt_ids: list[int], opts: RunOptions) -> float:
    """JIT compile (seconds returned), then a short untimed generation: first-touch page
    faults, allocator and kernel caches."""
    jit_s = engine.warmup()
    for _ in Generation(engine, prompt_ids[:8], 2, engine.make_sampler(opts.sampling)):
        pass
    return jit_s


def device_label(engine) -> str:
    if engine.device == "cuda":
        import torch

        return f"cuda: {torch.cuda.get_device_name(engine.device_index)}"
    return f"cpu: {cpu_model()}"


def gpu_index_of(engine) -> int | None:
    """NVML's index of the GPU `engine` runs on (None for CPU engines)."""
    if engine is None or engine.device != "cuda":
        return None
    return nvml.index_for_torch_device(engine.device_index or 0)


def measured(gen, probe, memory: MemorySampler | None = None) -> Iterator[tuple[Step, list[int]]]:
    """Each pass of `gen` (a Generation, one token a pass; or a SpeculativeGeneration, whose
    draft passes emit none and verify passes several) between the probe's step boundaries:
    yields (step, the tokens it emitted). Memory is sampled between passes, outside the timed
    region."""
    engine = gen.engine
    engines = getattr(gen, "engines", [engine])  # a model drafter's engine laps into the same probe
    for e in engines:
        e.set_lap(probe.lap)
    label = getattr(gen, "pass_engine", None)
    try:
        while not gen.done:
            probe.begin_step(*gen.next_pass(), engine.pos, emitted=0, engine=label() if label else None)
            out = gen.step()
            tokens = out if isinstance(out, list) else [out]
            st = probe.end_step(emitted=len(tokens))
            if memory is not None:
                memory.sample(engine)
            yield st, tokens
    finally:
        for e in engines:
            e.set_lap(None)


class ProfiledRun:
    """One generation on a built engine, measured pass by pass. Iterate it for `(step, tokens)`;
    `record()` is its RunRecord at any point (a run stopped early is marked partial)."""

    def __init__(self, ckpt: Checkpoint, backend: str, engine, prompt_ids: list[int], opts: RunOptions,
                 load_s: float = 0.0, jit_s: float | None = 0.0, run_id: str | None = None, drafter=None):
        self.ckpt, self.backend, self.engine, self.opts = ckpt, backend, engine, opts
        self.load_s, self.jit_s = load_s, jit_s
        self.run_id = run_id or new_run_id(backend)
        stop = () if opts.ignore_eos else ckpt.config.eos_token_ids
        sampler = engine.make_sampler(opts.sampling)
        if opts.speculate:
            from engines.spec.generate import SpeculativeGeneration

            self.generation = SpeculativeGeneration(engine, prompt_ids, opts.max_new_tokens, sampler,
                                                    drafter or build_drafter(engine, opts), opts.spec_k, stop,
                                                    draft_max=opts.draft_max, draft_min=opts.draft_min)
        else:
            self.generation = Generation(engine, prompt_ids, opts.max_new_tokens, sampler, stop)
        if engine.device == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats(engine.device_index)
        self.probe = make_probe(opts.profile, engine.device, engine.device_index, rank=engine.rank)
        self.memory = MemorySampler(gpu_index=gpu_index_of(engine))
        self.memory.sample(engine, force=True)
        self.steps: list[Step] = []

    def __iter__(self) -> Iterator[tuple[Step, list[int]]]:
        memory = self.memory if self.opts.profile != "none" else None
        try:
            with contextlib.closing(measured(self.generation, self.probe, memory)) as passes:
                for st, tokens in passes:
                    self.steps.append(st)
                    yield st, tokens
        finally:  # also when the consumer stops pulling early
            self.memory.sample(self.engine, force=True)

    @property
    def latest_memory(self):
        return self.memory.samples[-1] if self.memory.samples else None

    def record(self) -> RunRecord:
        """Safe to call from another thread while the run goes on: the steps are copied first,
        and only the tokens those steps produced are taken (a pass adds its token before its
        step)."""
        gen = self.generation
        steps = list(self.steps)
        meta = {"stopped_at_eos": gen.stopped_at_eos, **({} if gen.done else {"partial": True})}
        if self.opts.speculate:
            meta["speculation"] = {"drafter": self.opts.speculate, "k": self.opts.spec_k,
                                   "draft_max": self.opts.draft_max, "draft_min": self.opts.draft_min,
                                   "draft_p_min": self.opts.draft_p_min, **gen.acceptance()}
        return make_record(self.ckpt, self.backend, self.engine, self.opts, gen.prompt_ids,
                           gen.generated_ids[:sum(s.emitted for s in steps)], steps, list(self.memory.samples),
                           load_s=self.load_s, jit_s=self.jit_s, run_id=self.run_id, meta=meta)


def start_run(ckpt: Checkpoint, backend: str, prompt_ids: list[int], opts: RunOptions,
              on_phase: Callable[[str], None] | None = None, progress: Callable[[int, int], None] | None = None,
              engine=None, run_id: str | None = None) -> ProfiledRun:
    """Load (unless `engine` is given) and warm up, then a ProfiledRun ready to pull."""
    phase = on_phase or (lambda s: None)
    reset_peak_rss()  # this backend's peak, loading included, not an earlier backend's
    load_s = 0.0
    if engine is None:
        phase(f"loading weights into the {backend} engine")
        engine, load_s = build_engine(ckpt, backend, opts.dtype, progress, opts.quant)
    drafter = None
    if opts.speculate:
        if opts.speculate != "ngram":
            phase(f"loading the drafter ({opts.speculate})")
        t0 = time.perf_counter()
        drafter = build_drafter(engine, opts, progress)
        load_s += time.perf_counter() - t0
    jit_s = None  # not measured: --no-warmup
    if opts.warmup:
        phase("warming up (JIT compile, caches)")
        jit_s = warm_up(engine, prompt_ids, opts)
        if hasattr(drafter, "warmup"):
            jit_s += drafter.warmup(prompt_ids[:8])
    phase("generating")
    return ProfiledRun(ckpt, backend, engine, prompt_ids, opts, load_s=ckpt.open_seconds + load_s, jit_s=jit_s,
                       run_id=run_id, drafter=drafter)


def add_baseline(rec: RunRecord, ckpt: Checkpoint, backend: str, prompt_ids: list[int], opts: RunOptions,
                 engine) -> None:
    """After a speculative run: the same generation without speculation, on the same engine
    and profile level, once (not interleaved: `aios bench spec` interleaves), so the record can
    say what speculation bought. Adds its decode tok/s and whether the ids matched to the
    record's speculation meta."""
    from dataclasses import replace

    base = profile_run(ckpt, backend, prompt_ids, replace(opts, speculate=None, warmup=False), engine=engine)
    spec = rec.meta["speculation"]
    spec["baseline_decode_tokens_per_s"] = base.summary()["decode_tokens_per_s"]
    spec["baseline_same_ids"] = list(base.generated_ids) == list(rec.generated_ids)


def profile_run(ckpt: Checkpoint, backend: str, prompt_ids: list[int], opts: RunOptions, **kw) -> RunRecord:
    """`start_run`, consumed to the end: the RunRecord of a whole generation."""
    run = start_run(ckpt, backend, prompt_ids, opts, **kw)
    for _ in run:
        pass
    return run.record()


def make_record(ckpt: Checkpoint, backend: str, engine, opts: RunOptions, prompt_ids: list[int],
                generated_ids: list[int], steps: list, memory: list, load_s: float = 0.0, jit_s: float | None = 0.0,
                run_id: str | None = None, meta: dict | None = None) -> RunRecord:
    text = None
    if ckpt.tokenizer is not None:
        text = ckpt.tokenizer.decode(list(generated_ids), skip_special_tokens=False)
    peak_bw = None
    gpu_index = gpu_index_of(engine)
    if gpu_index is not None:
        g = nvml.gpu(gpu_index)
        peak_bw = g.peak_bandwidth_bytes_s() if g else None
    return RunRecord(
        # a tensor-parallel rank's record: its share of the shape (heads and MLP over the ranks)
        run_id=run_id or new_run_id(backend), backend=backend, model=ckpt.name,
        config=getattr(engine, "record_cfg", ckpt.config),
        dtype=engine.dtype, device=device_label(engine), profile=opts.profile, quant=opts.quant,
        weight_format=engine.weight_format, bits_per_weight=engine.bits_per_weight,
        quant_dot=engine.quant_dot, op_weight_bytes=engine.op_weight_bytes, act_itemsize=engine.act_itemsize,
        prompt_ids=list(prompt_ids), generated_ids=list(generated_ids), text=text, steps=list(steps),
        memory=list(memory), load_s=load_s, jit_s=jit_s if backend_record(backend).jit else None,
        weight_bytes=engine.resident_weight_bytes, stored_weight_bytes=ckpt.stored_bytes,
        kv_cache_bytes=engine.kv_cache_bytes(), peak_rss_bytes=peak_rss_bytes(),
        sampling=opts.sampling.describe(), device_peak_bandwidth=peak_bw,
        provenance=provenance(backend, opts.threads),
        meta={"model_source": ckpt.source, "model_kind": ckpt.kind, "notes": ckpt.notes, **(meta or {})},
    )


def provenance(backend: str, plan: ThreadPlan | None) -> dict:
    """What made a record: software versions, the threads the backend's pools really ran
    with, and how busy the machine was when the run started."""
    return {**versions(), **pool_threads(backend),
            "threads_source": plan.source if plan else None,
            "load_avg_1m": plan.load_avg_1m if plan else None,
            "busy_cpus": round(plan.busy_cpus, 2) if plan else None}
