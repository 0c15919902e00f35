"""What a serving engine is doing, as one picture a viewer can draw: the queue and the running
batch, the KV-block map, throughput and batch size over time, TTFT and TPOT of finished
requests, and the per-layer op times of the batched step.

`ServingMonitor` watches a `engines.batch.engine.BatchEngine`. Its `on_step` is called after
every step with what the step returned (cheap: a few appends), and `capture()` reads the
engine's state into a `ServeView`. Both run in the thread that steps the engine, between two
steps, so nothing is read while the scheduler changes it; a viewer in another thread only
takes the latest published view. A `ServeView` holds plain numbers and lists, so it crosses a
process boundary as JSON (`to_json` / `from_json`) as it is.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field, fields

import numpy as np

from .record import step_layer_table

HISTORY = 2000  # steps kept for the over-time plots
KEEP_LATENCIES = 2000  # finished requests kept for the TTFT / TPOT distributions
AVG_STEPS = 16  # steps in the per-layer moving average
SHOW_WAITING = 64  # queued requests listed (the count is always whole)

FREE, FREE_CACHED = -1, -2  # KV map codes of blocks no running request holds


@dataclass
class ServeView:
    """One frame of the serving view. Times are seconds; `elapsed_s` and each history row's
    time count from when the monitor started."""

    model: str = ""
    backend: str = ""
    dtype: str = ""
    device: str = ""
    threads: int | None = None
    state: str = "starting"  # starting | loading | warming | serving | idle | paused | error | done
    message: str | None = None
    workload: str = ""  # what is being served, in words
    elapsed_s: float = 0.0
    steps: int = 0
    finished: int = 0  # requests finished (all reasons)
    output_tokens: int = 0
    step_seconds: float = 0.0  # wall time of all steps: output_tokens / step_seconds is the engine's rate
    preemptions: int = 0
    prefix_hits: int = 0  # in blocks
    prefix_lookups: int = 0
    max_num_seqs: int = 0
    # the batch: one dict per running request, in scheduling order; the first SHOW_WAITING queued
    running: list[dict] = field(default_factory=list)  # id, prompt, out, max, prefill, blocks, cached, preempted
    waiting: list[dict] = field(default_factory=list)  # id, prompt, max, wait_s, preempted
    num_waiting: int = 0
    # the KV pool: per block, the index in `running` of its first holder, or FREE / FREE_CACHED
    num_blocks: int = 0
    block_size: int = 0
    owners: list[int] = field(default_factory=list)
    shared: list[int] = field(default_factory=list)  # ids of blocks held by more than one request
    # per step: [end time, wall, output tokens, running, waiting, blocks used, prefill tokens]
    history: list[list[float]] = field(default_factory=list)
    ttft_s: list[float] = field(default_factory=list)  # of finished requests, oldest first
    tpot_s: list[float] = field(default_factory=list)
    # per-layer seconds by op kind, rows in, 0..L-1, out (the batch-1 view's table)
    layer_rows: list[str] = field(default_factory=list)
    latest: np.ndarray | None = None
    latest_wall: float | None = None
    latest_prefill: int = 0  # prefill tokens and decode sequences of that step
    latest_decode: int = 0
    avg: np.ndarray | None = None
    avg_wall: float | None = None
    avg_n: int = 0
    profile: str = "op"

    @property
    def blocks_used(self) -> int:
        return sum(1 for o in self.owners if o >= 0)

    @property
    def prefix_hit_rate(self) -> float | None:
        return self.prefix_hits / self.prefix_lookups if self.prefix_lookups else None

    @property
    def engine_tokens_per_s(self) -> float | None:
        """Output tokens over the steps' wall time: what the engine sustains while busy."""
        return self.output_tokens / self.step_seconds if self.step_seconds else None

    def window_rate(self, seconds: float = 10.0) -> float | None:
        """Output tokens per second over the last `seconds` of wall time (idle time counts)."""
        if not self.history:
            return None
        end = max(self.history[-1][0], self.elapsed_s)  # idle time since the last step counts
        start = end - seconds
        rows = [h for h in self.history if h[0] > start]
        span = min(seconds, end - (self.history[0][0] - self.history[0][1]))
        return sum(h[2] for h in rows) / span if span > 0 else None

    def to_json(self) -> dict:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.tolist() if isinstance(v, np.ndarray) else v
        return out

    @classmethod
    def from_json(cls, d: dict) -> "ServeView":
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        for k in ("latest", "avg"):
            if kw.get(k) is not None:
                kw[k] = np.asarray(kw[k], float)
        return cls(**kw)


class ServingMonitor:
    def __init__(self, be, clock=time.perf_counter):
        self.be = be
        self.clock = clock
        self.t0 = clock()
        self.cfg = be.cfg
        self._history: collections.deque = collections.deque(maxlen=HISTORY)
        self._ttft: collections.deque = collections.deque(maxlen=KEEP_LATENCIES)
        self._tpot: collections.deque = collections.deque(maxlen=KEEP_LATENCIES)
        self._probe_steps: collections.deque = collections.deque(maxlen=AVG_STEPS)
        self._latest = None  # (probe step, prefill tokens, decode seqs)
        self._tables: dict[int, tuple] = {}
        self.steps = 0
        self.finished = 0
        self.output_tokens = 0
        self.step_seconds = 0.0

    def on_step(self, out) -> None:
        """After each `BatchEngine.step()`: the step's figures and its finished requests."""
        now = self.clock()
        self.steps += 1
        self.output_tokens += len(out.tokens)
        self.step_seconds += out.wall_s
        sched = out.scheduled
        self._history.append([now - self.t0, out.wall_s, len(out.tokens), out.running, out.waiting,
                              out.blocks_used, sched.prefill_tokens])
        for req in out.finished:
            self.finished += 1
            if req.first_token_s is not None:
                self._ttft.append(req.first_token_s - req.arrival_s)
                if len(req.output_ids) > 1 and req.finished_s is not None:
                    self._tpot.append((req.finished_s - req.first_token_s) / (len(req.output_ids) - 1))
        st = out.probe_step
        if st is not None and st.durs_ns is not None:
            self._probe_steps.append(st)
            self._latest = (st, sched.prefill_tokens, sched.decode_seqs)

    def on_abort(self, n: int = 1) -> None:
        self.finished += n

    def _table(self, st) -> np.ndarray:
        got = self._tables.get(id(st))
        if got is None or got[0] is not st:
            got = (st, step_layer_table(st, self.cfg.num_layers))
            self._tables[id(st)] = got
        return got[1]

    def capture(self, **info) -> ServeView:
        """The engine's state now, as a ServeView (`info`: model, backend, state, ... as is)."""
        be = self.be
        sched, bm = be.scheduler, be.blocks
        now = self.clock()
        v = ServeView(**info)
        v.elapsed_s = now - self.t0
        v.steps, v.finished, v.output_tokens, v.step_seconds = self.steps, self.finished, self.output_tokens, self.step_seconds
        v.preemptions, v.prefix_hits, v.prefix_lookups = sched.preemptions, bm.hits, bm.lookups
        v.max_num_seqs = sched.max_num_seqs
        v.num_blocks, v.block_size = bm.num_blocks, bm.block_size
        owners = [FREE] * bm.num_blocks
        for b in bm.blocks:
            if b.ref_count == 0 and b.hash is not None and bm.cached.get(b.hash) == b.id:
                owners[b.id] = FREE_CACHED
        shared = set()
        for i, r in enumerate(sched.running):
            for bid in r.table.blocks:
                if owners[bid] < 0:
                    owners[bid] = i
                if bm.blocks[bid].ref_count > 1:
                    shared.add(bid)
            v.running.append({"id": r.id, "prompt": len(r.prompt_ids), "out": len(r.output_ids),
                              "max": r.max_new_tokens, "prefill": r.in_prefill, "computed": r.num_computed,
                              "blocks": len(r.table.blocks), "cached": r.num_cached, "preempted": r.preemptions})
        v.owners, v.shared = owners, sorted(shared)
        mono = time.perf_counter()
        for k, r in enumerate(sched.waiting):
            if k >= SHOW_WAITING:
                break
            v.waiting.append({"id": r.id, "prompt": len(r.prompt_ids), "max": r.max_new_tokens,
                              "wait_s": max(0.0, mono - r.arrival_s), "preempted": r.preemptions})
        v.num_waiting = len(sched.waiting)
        v.history = [list(h) for h in self._history]
        v.ttft_s, v.tpot_s = list(self._ttft), list(self._tpot)
        L = self.cfg.num_layers
        v.layer_rows = ["in"] + [str(i) for i in range(L)] + ["out"]
        if self._latest is not None:
            st, v.latest_prefill, v.latest_decode = self._latest
            v.latest, v.latest_wall = self._table(st), st.wall_s
            tabs = [self._table(s) for s in self._probe_steps]
            v.avg = sum(tabs) / len(tabs)
            v.avg_wall = sum(s.wall_s for s in self._probe_steps) / len(tabs)
            v.avg_n = len(tabs)
            keep = {id(s) for s in self._probe_steps}
            for k in [k for k in self._tables if k not in keep]:
                del self._tables[k]
        return v
