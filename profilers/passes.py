"""Prefill vs decode, the "training vs inference" demo on the real engines: the same N tokens
pushed through an engine as one parallel pass, and as N sequential one-token passes (each
sampling greedily, as generation would)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from engines.generate import sample_next
from engines.sampling import SamplingParams

from .bench.timing import Timing
from .probe import Probe


@dataclass
class PassesResult:
    mode: str  # parallel | sequential
    tokens: int
    forward_passes: int
    median_s: float
    min_s: float
    max_s: float
    repeats: int
    tokens_per_s: float
    reduction_barriers: int  # counted by the profiler from the ops executed
    barriers_per_pass: int
    weight_bytes_read: int  # passes x the weights one pass must read

    def to_dict(self) -> dict:
        return asdict(self)


def decode_weight_bytes(engine) -> int:
    """Weight bytes one one-token pass reads, as the engine holds its weights: every layer's
    matrices and norms, one embedding row, the final norm and the lm_head."""
    return int(engine.op_weight_bytes.sum())


def prefill_vs_decode(engine, tokens: int, repeat: int = 3, seed: int = 0) -> tuple[PassesResult, PassesResult]:
    cfg = engine.cfg
    ids = np.random.default_rng(seed).integers(0, cfg.vocab_size, tokens).tolist()
    weight_bytes = decode_weight_bytes(engine)

    def passes(probe: Probe, parallel: bool) -> None:
        engine.reset(tokens)
        engine.set_lap(probe.lap)
        sampler = engine.make_sampler(SamplingParams(greedy=True))
        try:
            if parallel:
                probe.begin_step("prefill", 0, tokens, 0)
                sample_next(engine, sampler, engine.prefill(ids))
                probe.end_step()
                return
            for i, t in enumerate(ids):
                probe.begin_step("decode", i, 1, engine.pos)
                sample_next(engine, sampler, engine.decode(t))
                probe.end_step()
        finally:
            engine.set_lap(None)

    out = []
    for mode, parallel, n_passes in (("parallel", True, 1), ("sequential", False, tokens)):
        passes(Probe("none"), parallel)  # warm-up
        walls, probe = [], None
        for _ in range(repeat):
            probe = Probe("token")  # counts every op, times every pass, costs ~nothing
            t = time.perf_counter()
            passes(probe, parallel)
            walls.append(time.perf_counter() - t)
        barriers = sum(st.barriers for st in probe.steps)
        tm = Timing.of(walls)
        out.append(PassesResult(mode, tokens, n_passes, tm.median_s, tm.min_s, tm.max_s, tm.repeats,
                                tokens / tm.median_s, barriers, probe.steps[0].barriers, n_passes * weight_bytes))
    return out[0], out[1]
