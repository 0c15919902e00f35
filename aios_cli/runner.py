"""One profiled generation, start to finish: engine -> warm-up -> generate -> RunRecord.

Shared by `aios run` (and later `aios top`), so there is one measuring path.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Callable

from engines import check_known, engine_class, require_cuda, resolve_dtype
from engines.checkpoint import Checkpoint
from engines.generate import generate
from engines.sampling import Sampler, SamplingParams
from profilers.memory import MemorySampler, peak_rss_bytes, reset_peak_rss
from profilers.probe import make_probe
from profilers.record import RunRecord
from profilers.sysinfo import cpu_model


@dataclass
class RunOptions:
    max_new_tokens: int = 16
    sampling: SamplingParams = SamplingParams()
    dtype: str | None = None
    profile: str = "op"
    warmup: bool = True
    ignore_eos: bool = False


def check_backend(backend: str, dtype: str | None = None) -> None:
    """Raise BackendError now (before loading anything) if `backend` cannot run here."""
    check_known(backend)
    resolve_dtype(backend, dtype)
    if backend == "cuda":
        require_cuda()


def new_run_id(backend: str) -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{backend}-{uuid.uuid4().hex[:6]}"


def build_engine(ckpt: Checkpoint, backend: str, dtype: str | None, progress: Callable | None = None):
    t0 = time.perf_counter()
    engine = engine_class(backend)(ckpt, dtype=dtype, progress=progress)
    return engine, time.perf_counter() - t0


def device_label(engine) -> str:
    if engine.device == "cuda":
        import torch

        return f"cuda: {torch.cuda.get_device_name(0)}"
    return f"cpu: {cpu_model()}"


def profile_run(
    ckpt: Checkpoint,
    backend: str,
    prompt_ids: list[int],
    opts: RunOptions,
    on_token: Callable[[int], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    engine=None,
    on_step: Callable | None = None,
    should_stop: Callable[[], bool] | None = None,
    run_id: str | None = None,
) -> RunRecord:
    """Load (unless `engine` is given), warm up, generate with the probe, return the record.

    `on_step(step, memory_sample)` sees each step as it ends (the live view of `aios top`);
    `should_stop()` ends the generation early. Both run outside the timed regions."""
    phase = on_phase or (lambda s: None)
    reset_peak_rss()  # this backend's peak, loading included, not an earlier backend's
    load_s = 0.0
    if engine is None:
        phase(f"loading weights into the {backend} engine")
        engine, load_s = build_engine(ckpt, backend, opts.dtype, progress)
    gpu_index = gpu_index_of(engine)
    jit_s = 0.0
    if opts.warmup:
        phase("warming up (JIT compile, caches)")
        jit_s = warm_up(engine, prompt_ids, opts)
    if engine.device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()
    probe = make_probe(opts.profile, engine.device)
    memory = MemorySampler(gpu_index=gpu_index)
    memory.sample(engine, force=True)
    phase("generating")
    stop = () if opts.ignore_eos else ckpt.config.eos_token_ids
    step_cb = None if on_step is None else (lambda st: on_step(st, memory.samples[-1] if memory.samples else None))
    gen = generate(engine, prompt_ids, opts.max_new_tokens, Sampler(opts.sampling), probe,
                   memory=memory if opts.profile != "none" else None, on_token=on_token, stop_ids=stop,
                   should_stop=should_stop, on_step=step_cb)
    memory.sample(engine, force=True)
    return make_record(ckpt, backend, engine, opts, prompt_ids, gen.generated_ids, gen.steps, memory.samples,
                       load_s=ckpt.open_seconds + load_s, jit_s=jit_s, run_id=run_id,
                       meta={"stopped_at_eos": gen.stopped_at_eos})


def gpu_index_of(engine) -> int | None:
    if engine.device != "cuda":
        return None
    from profilers import nvml

    return nvml.index_for_torch_device(0)


def warm_up(engine, prompt_ids: list[int], opts: RunOptions) -> float:
    """JIT compile (seconds returned), then a short untimed generation: first-touch page
    faults, allocator and kernel caches."""
    jit_s = engine.warmup()
    warm_probe = make_probe("none", engine.device)
    generate(engine, prompt_ids[:8], 2, Sampler(opts.sampling), warm_probe)
    return jit_s


def make_record(ckpt: Checkpoint, backend: str, engine, opts: RunOptions, prompt_ids: list[int],
                generated_ids: list[int], steps: list, memory: list, load_s: float = 0.0, jit_s: float = 0.0,
                run_id: str | None = None, meta: dict | None = None) -> RunRecord:
    """The RunRecord of a generation, finished or still running (`aios top` exports both)."""
    text = None
    if ckpt.tokenizer is not None:
        text = ckpt.tokenizer.decode(list(generated_ids), skip_special_tokens=False)
    peak_bw = None
    gpu_index = gpu_index_of(engine)
    if gpu_index is not None:
        from profilers import nvml

        g = nvml.gpu(gpu_index)
        peak_bw = g.peak_bandwidth_bytes_s() if g else None
    return RunRecord(
        run_id=run_id or new_run_id(backend), backend=backend, model=ckpt.name, config=ckpt.config,
        dtype=engine.dtype, device=device_label(engine), profile=opts.profile,
        weight_itemsize=engine.weight_itemsize, act_itemsize=engine.act_itemsize,
        prompt_ids=list(prompt_ids), generated_ids=list(generated_ids), text=text, steps=list(steps),
        memory=list(memory), load_s=load_s, jit_s=jit_s,
        weight_bytes=engine.resident_weight_bytes, stored_weight_bytes=ckpt.stored_bytes,
        kv_cache_bytes=engine.kv_cache_bytes(), peak_rss_bytes=peak_rss_bytes(),
        sampling=opts.sampling.describe(), device_peak_bandwidth=peak_bw,
        meta={"model_source": ckpt.source, "model_kind": ckpt.kind, "notes": ckpt.notes, **(meta or {})},
    )
