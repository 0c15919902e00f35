"""Probes: the `lap` an engine calls after every op it executes, when someone measures.

The engine's whole contract is one call per op: ``lap(layer, op_id)``. A lap closes the
interval that began at the previous lap (or at the start of the step), so the ops of a step
tile its wall time with no gaps: per-op times add up, and whatever is left between the last
lap and the end of the step is reported as ``other``.

Levels:
  op     every lap is timestamped (CPU: perf_counter_ns; GPU: a CUDA event, no host sync);
  token  laps are only counted (barriers per token stay measured), steps are timed;
  none   ``lap`` is a no-op function; only steps are timed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from engines.ops import BARRIER_MASK, BARRIERS_PER_OP, OPS, noop_lap

LEVELS = ("op", "token", "none")

# What a step is. Batch-1 generation: `prefill` (the prompt) then `decode` (one token a pass);
# the batched engine: `batch` (one step of many requests); speculative decoding: `draft` (the
# drafter proposes tokens, emitting none) and `verify` (the target checks them in one pass,
# emitting the accepted ones and one more); training: `forward`, `backward`, `optimizer`.
PHASES = ("prefill", "decode", "batch", "draft", "verify", "forward", "backward", "optimizer")
# The phases whose steps come after the prompt and whose time is generation time (tokens/s).
GENERATION_PHASES = ("decode", "draft", "verify")


@dataclass
class Step:
    """One measured step: a forward pass (the prefill over the prompt, one decode token), or
    any unit a phase names: a speculative round's draft or verify, a batched step, a training
    phase. Every lap of a step was made by the step's `engine` on its `rank`."""

    phase: str  # one of PHASES
    token_index: int  # index of the first token this step emitted among the generated ones (prefill: 0)
    n_tokens: int  # tokens pushed through the pass (T)
    past: int  # tokens already in the KV cache (P)
    wall_s: float = 0.0
    start_s: float = 0.0  # since the start of the run
    # op level: one row per executed op (layer, op id, start ns since step start, duration ns)
    layers: np.ndarray | None = None
    ops: np.ndarray | None = None
    starts_ns: np.ndarray | None = None
    durs_ns: np.ndarray | None = None
    # token and op level: how many times each op of the table ran
    op_counts: np.ndarray | None = None
    emitted: int = 1  # tokens the step added to the output: prefill and decode 1, draft 0, verify 1..k+1
    engine: str = ""  # which engine or model made its laps ("" the run's one engine; "draft", "target")
    rank: int = 0  # the rank that ran it, in a distributed run

    @property
    def ops_counted(self) -> int | None:
        return None if self.op_counts is None else int(self.op_counts.sum())

    @property
    def barriers(self) -> int | None:
        """Reduction barriers the pass waited on, counted from the ops it executed (a composite
        op counts the barriers it covers)."""
        return None if self.op_counts is None else int(self.op_counts @ BARRIERS_PER_OP)

    @property
    def op_seconds(self) -> float:
        return 0.0 if self.durs_ns is None else float(self.durs_ns.sum()) * 1e-9

    @property
    def barrier_seconds(self) -> float | None:
        """Time in barrier ops (op level only)."""
        return None if self.durs_ns is None else float(self.durs_ns[BARRIER_MASK[self.ops]].sum()) * 1e-9

    @property
    def barrier_share(self) -> float | None:
        """Barrier time over the pass's wall time (op level only)."""
        b = self.barrier_seconds
        return None if b is None or not self.wall_s else b / self.wall_s


class Probe:
    """CPU probe. `begin_step` / `lap`* / `end_step`, driven by the generate loop. `engine` and
    `rank` label every step it records unless `begin_step` names another engine."""

    def __init__(self, level: str = "op", engine: str = "", rank: int = 0):
        if level not in LEVELS:
            raise ValueError(level)
        self.level = level
        self.engine, self.rank = engine, rank
        self.steps: list[Step] = []
        self._t0 = time.perf_counter_ns()
        self._buf: list = []
        self._counts = [0] * len(OPS)
        self.lap = {"op": self._lap_op, "token": self._lap_count, "none": noop_lap}[level]

    @property
    def origin_ns(self) -> int:
        """The clock reading (`perf_counter_ns`) that the steps' `start_s` count from."""
        return self._t0

    # -- hot path ---------------------------------------------------------------------
    def _lap_op(self, layer: int, op: int) -> None:
        t = time.perf_counter_ns()
        self._buf.append((layer, op, t))

    def _lap_count(self, layer: int, op: int) -> None:
        self._counts[op] += 1

    # -- step boundaries --------------------------------------------------------------
    def begin_step(self, phase: str, token_index: int, n_tokens: int, past: int, emitted: int = 1,
                   engine: str | None = None) -> None:
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        self._step = Step(phase, token_index, n_tokens, past, emitted=emitted,
                          engine=self.engine if engine is None else engine, rank=self.rank)
        self._buf = []
        self._counts = [0] * len(OPS)
        self._step_t = time.perf_counter_ns()

    def end_step(self, emitted: int | None = None) -> Step:
        """Close the step; `emitted` when only its end knows how many tokens it added (a verify
        step accepts some of the drafted ones)."""
        t_end = time.perf_counter_ns()
        st = self._step
        if emitted is not None:
            st.emitted = emitted
        st.wall_s = (t_end - self._step_t) * 1e-9
        st.start_s = (self._step_t - self._t0) * 1e-9
        if self.level == "op":
            self._finish_op_step(st, self._step_t)
        elif self.level == "token":
            st.op_counts = np.array(self._counts, dtype=np.int64)
        self.steps.append(st)
        return st

    def _finish_op_step(self, st: Step, t_start: int) -> None:
        buf = self._buf
        n = len(buf)
        st.layers = np.fromiter((b[0] for b in buf), np.int32, n)
        st.ops = np.fromiter((b[1] for b in buf), np.int16, n)
        ends = np.fromiter((b[2] for b in buf), np.int64, n)
        starts = np.empty_like(ends)
        if n:
            starts[0] = t_start
            starts[1:] = ends[:-1]
        st.starts_ns = starts - t_start
        st.durs_ns = ends - starts
        st.op_counts = np.bincount(st.ops, minlength=len(OPS)).astype(np.int64)


class CudaProbe(Probe):
    """GPU probe: each lap records a CUDA event on the current stream (no host sync). Events
    are resolved once per step, after the step has synchronised anyway to read the token id.
    Every op, sampling included, runs on the device, so every lap is an event."""

    def __init__(self, level: str = "op", device=None, engine: str = "", rank: int = 0):
        import torch

        self._torch = torch
        self._device = device
        self._pool: list = []
        super().__init__(level, engine, rank)
        if level == "op":
            self.lap = self._lap_event

    def _event(self, i: int):
        pool = self._pool
        while len(pool) <= i:
            pool.append(self._torch.cuda.Event(enable_timing=True))
        return pool[i]

    def _lap_event(self, layer: int, op: int) -> None:
        i = len(self._buf) + 1
        self._event(i).record()
        self._buf.append((layer, op, i))

    def begin_step(self, phase: str, token_index: int, n_tokens: int, past: int, emitted: int = 1,
                   engine: str | None = None) -> None:
        super().begin_step(phase, token_index, n_tokens, past, emitted, engine)
        if self.level == "op":
            self._event(0).record()

    def _finish_op_step(self, st: Step, t_start: int) -> None:
        self._torch.cuda.synchronize(self._device)
        buf = self._buf
        n = len(buf)
        st.layers = np.fromiter((b[0] for b in buf), np.int32, n)
        st.ops = np.fromiter((b[1] for b in buf), np.int16, n)
        e0 = self._event(0)
        ends = np.fromiter((int(e0.elapsed_time(self._event(b[2])) * 1e6) for b in buf), np.int64, n)
        starts = np.zeros_like(ends)
        starts[1:] = ends[:-1]
        st.starts_ns, st.durs_ns = starts, ends - starts
        st.op_counts = np.bincount(st.ops, minlength=len(OPS)).astype(np.int64)


def make_probe(level: str, device_type: str = "cpu", device=None, engine: str = "", rank: int = 0) -> Probe:
    if device_type == "cuda":
        return CudaProbe(level, device, engine, rank)
    return Probe(level, engine, rank)
