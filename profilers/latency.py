"""Batch-1 latency over a grid, as llama-bench measures it: every combination of model,
backend, dtype, threads, prompt length and generation length is one case, run `repetitions`
times; each repetition is one generation (a prefill of `n_prompt` tokens, then `n_gen` decode
passes) timed pass by pass with nothing else measured.

Repetitions are interleaved (repetition 1 of every case, then repetition 2, ...), so a burst of
load on a shared machine spreads over all cases instead of landing on one. Engines are built
once per (model, backend, dtype) and warmed up before the first timed repetition; their JIT
time is reported apart.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, field
from typing import Callable

from engines import backend as backend_record
from engines.model.checkpoint import Checkpoint
from engines.sampling import SamplingParams

from .harness import ProfiledRun, RunOptions, build_engine, device_label, provenance
from .threads import ThreadPlan, apply


@dataclass(frozen=True)
class LatencyCase:
    model: str
    backend: str
    dtype: str | None  # None: the engine's default
    threads: int
    n_prompt: int
    n_gen: int


@dataclass
class Repetition:
    ttft_s: float  # the prefill pass (it yields the first token)
    decode_s: float  # the n_gen decode passes after it
    n_prompt: int
    n_gen: int

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.n_prompt / self.ttft_s

    @property
    def decode_tokens_per_s(self) -> float:
        return self.n_gen / self.decode_s


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value), as llama-bench reports."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass
class LatencyResult:
    case: LatencyCase
    dtype: str  # as the engine ran it
    device: str
    arch: str
    num_params: int
    load_s: float
    jit_s: float | None  # None: the engine has no JIT
    provenance: dict
    reps: list[Repetition] = field(default_factory=list)

    def row(self) -> dict:
        """One flat row: the configuration, then mean ± sd over the repetitions of TTFT,
        prefill tok/s and decode tok/s (each the mean of per-repetition values), then the
        samples themselves."""
        c = self.case
        ttft = [r.ttft_s * 1e3 for r in self.reps]
        pre = [r.prefill_tokens_per_s for r in self.reps]
        dec = [r.decode_tokens_per_s for r in self.reps]
        row = {"model": c.model, "arch": self.arch, "num_params": self.num_params, "backend": c.backend,
               "dtype": self.dtype, "device": self.device, "n_prompt": c.n_prompt, "n_gen": c.n_gen,
               "repetitions": len(self.reps), "load_s": self.load_s, "jit_s": self.jit_s}
        for name, values in (("ttft_ms", ttft), ("prefill_tokens_per_s", pre), ("decode_tokens_per_s", dec)):
            row[f"{name}_mean"], row[f"{name}_sd"] = mean_sd(values)
        row["samples_ttft_ms"] = ttft
        row["samples_prefill_tokens_per_s"] = pre
        row["samples_decode_tokens_per_s"] = dec
        return {**row, **self.provenance}


def prompt_ids(n: int, vocab_size: int, seed: int = 0) -> list[int]:
    """`n` token ids drawn from a fixed seed (llama-bench also times random tokens: the
    content does not change a dense model's work)."""
    rng = random.Random(seed)
    return [rng.randrange(vocab_size) for _ in range(n)]


def run_grid(ckpts: dict[str, Checkpoint], cases: list[LatencyCase], repetitions: int, plan: ThreadPlan,
             warmup: bool = True, on_phase: Callable[[str], None] | None = None,
             on_rep: Callable[[LatencyCase, int], None] | None = None) -> list[LatencyResult]:
    """Every case `repetitions` times, interleaved. `plan` is the thread plan the command
    applied (its pools sized for the most threads any case asks for); each case sets its own
    count before it runs."""
    phase = on_phase or (lambda msg: None)
    engines: dict[tuple, tuple] = {}  # (model, backend, dtype) -> (engine, load_s, jit_s)
    results: dict[LatencyCase, LatencyResult] = {}
    greedy = SamplingParams(greedy=True)
    for case in cases:
        key = (case.model, case.backend, case.dtype)
        ckpt = ckpts[case.model]
        if key not in engines:
            phase(f"loading {case.model} into the {case.backend} engine")
            engine, load_s = build_engine(ckpt, case.backend, case.dtype)
            phase(f"warming up {case.backend} (JIT compile, caches)")
            jit_s = engine.warmup() if backend_record(case.backend).jit else None
            engines[key] = (engine, ckpt.open_seconds + load_s, jit_s)
        engine, load_s, jit_s = engines[key]
        if warmup:  # an untimed generation of this case's shape: first-touch pages, allocator
            apply(case.threads)
            phase(f"warm-up: {describe(case)}")
            warm_up_case(ckpt, case, engine, greedy)
    for rep in range(repetitions):
        for case in cases:
            engine, load_s, jit_s = engines[(case.model, case.backend, case.dtype)]
            apply(case.threads)
            if on_rep:
                on_rep(case, rep)
            r = time_generation(ckpts[case.model], case, engine, greedy)
            if case not in results:
                results[case] = LatencyResult(
                    case, engine.dtype, device_label(engine), ckpts[case.model].config.arch,
                    ckpts[case.model].config.num_params(), load_s, jit_s,
                    provenance(case.backend, plan))
            results[case].reps.append(r)
    return [results[c] for c in cases]


def describe(case: LatencyCase) -> str:
    return (f"{case.model} {case.backend}{'/' + case.dtype if case.dtype else ''} t={case.threads} "
            f"pp{case.n_prompt} tg{case.n_gen}")


def warm_up_case(ckpt: Checkpoint, case: LatencyCase, engine, sampling: SamplingParams) -> None:
    ids = prompt_ids(case.n_prompt, ckpt.config.vocab_size)
    run = ProfiledRun(ckpt, case.backend, engine, ids, RunOptions(max_new_tokens=min(case.n_gen, 4) + 1,
                                                                  sampling=sampling, profile="none",
                                                                  ignore_eos=True))
    for _ in run:
        pass


def time_generation(ckpt: Checkpoint, case: LatencyCase, engine, sampling: SamplingParams) -> Repetition:
    """One generation: the prefill, then n_gen decode passes, each timed by the probe."""
    ids = prompt_ids(case.n_prompt, ckpt.config.vocab_size)
    opts = RunOptions(max_new_tokens=case.n_gen + 1, sampling=sampling, profile="none", ignore_eos=True)
    run = ProfiledRun(ckpt, case.backend, engine, ids, opts)
    walls = [st.wall_s for st, _ in run]
    return Repetition(ttft_s=walls[0], decode_s=sum(walls[1:]), n_prompt=case.n_prompt, n_gen=case.n_gen)

