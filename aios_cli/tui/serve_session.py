"""The engine side of `aios top --serve`: a worker thread that serves one workload after
another through the batched engine, and publishes what it is doing for the view.

Round k is the workload `aios bench throughput` would run with `--seed seed+k` (random prompts,
so rounds do not hit each other's prefix cache unless `--prefix-len` shares a prefix on
purpose). The worker steps the engine through `profilers.throughput.run_batched`, the measuring
path of `aios bench throughput`, and after a step captures a `ServeView` (at most every
PUBLISH_S): the capture runs in this thread, between two steps, so the UI thread never reads
the scheduler while it changes; it only takes the latest view. Pausing is not pulling: the
worker waits between two steps. Nothing here imports Textual.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass

from profilers.serving import ServeView, ServingMonitor

from ..batch_options import BLOCK_SIZE, MAX_NUM_BATCHED_TOKENS, MAX_NUM_SEQS
from ..errors import error_line
from .session_base import LiveSession

PUBLISH_S = 0.2  # a view at most this often (the UI refreshes at 5 Hz)


@dataclass
class ServeOptions:
    num_requests: int = 64
    rate: float = math.inf
    input_len: tuple[int, int] = (16, 64)
    output_len: tuple[int, int] = (64, 128)
    prefix_len: int = 0
    seed: int = 0
    max_num_seqs: int = MAX_NUM_SEQS
    max_num_batched_tokens: int = MAX_NUM_BATCHED_TOKENS
    kv_blocks: int | None = None
    block_size: int = BLOCK_SIZE
    prefix_caching: bool = True
    profile: str = "op"

    def workload(self) -> str:
        rate = "all at once" if math.isinf(self.rate) else f"Poisson {self.rate:g}/s"
        pre = f" after a shared {self.prefix_len}" if self.prefix_len else ""
        return (f"{self.num_requests} requests a round, {rate}, prompts {self.input_len[0]}–{self.input_len[1]}{pre}, "
                f"outputs {self.output_len[0]}–{self.output_len[1]}")


class _Quit(Exception):
    pass


class ServeSession(LiveSession):
    THREAD_NAME = "aios-top-serve"

    def __init__(self, ckpt, backend: str, dtype: str | None, opts: ServeOptions):
        self.ckpt = ckpt
        self.backend = backend
        self.dtype = dtype
        self.opts = opts
        self.engine = None
        self.be = None
        self.monitor: ServingMonitor | None = None
        self.rounds: list[dict] = []  # ThroughputRun.summary() of each finished round
        self._finished: list[dict] = []  # finished rounds' requests as export rows (not their token times)
        self.round = 0  # the round in progress (1-based once started)
        self._info = {"model": ckpt.name, "backend": backend, "dtype": dtype or "…", "profile": opts.profile,
                      "workload": opts.workload()}
        super().__init__(ServeView(state="starting", **self._info))
        self._published = 0.0
        self._state = "starting"
        self.track_peak = False  # keep `peak`, the view at the busiest step (for --once)
        self.peak: ServeView | None = None
        self._peak_key = (-1, -1)

    # --- the worker (pause: it shows "paused" once it really waits, between two steps) ---------
    def _set_view_state(self, state: str, message: str | None = None) -> None:
        self._state = state
        self._show_state(state, message)

    def _publish(self, state: str, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._published < PUBLISH_S and state == self._state:
            return
        self._state = state
        self._view = self.monitor.capture(state=state, **self._info)
        self._published = now

    def _check(self) -> None:
        """Between two steps: wait while paused; leave the round on quit."""
        if self._paused and not self._quit:
            self._publish("paused", force=True)
            with self._lock:
                while self._paused and not self._quit:
                    self._wake.wait(0.1)
            self._publish("serving", force=True)
        if self._quit:
            raise _Quit

    def _loop(self) -> None:
        try:
            self._load()
            for k in itertools.count():
                self._round(k)
        except _Quit:
            pass
        except Exception as e:  # shown in the view; the worker ends
            self._set_view_state("error", error_line(e) + " — q quits")

    def _load(self, on_phase=None) -> None:
        from engines.batch.engine import BatchEngine
        from profilers import throughput as T
        from profilers.harness import build_engine, device_label
        from profilers.threads import pool_threads

        phase = on_phase or (lambda msg: None)
        msg = f"loading {self.ckpt.name} into the {self.backend} engine"
        self._set_view_state("loading", msg)
        phase(msg)
        engine, _ = build_engine(self.ckpt, self.backend, self.dtype)
        o = self.opts
        first = self._work(0)
        blocks = o.kv_blocks if o.kv_blocks is not None else T.default_kv_blocks(first, o.block_size)
        be = BatchEngine(engine, num_blocks=blocks, block_size=o.block_size, max_num_seqs=o.max_num_seqs,
                         max_num_batched_tokens=o.max_num_batched_tokens, prefix_caching=o.prefix_caching)
        msg = f"warming up {self.backend}"
        self._set_view_state("warming", msg)
        phase(msg)
        T.warm_up(be)
        self.engine, self.be = engine, be
        self._info.update(dtype=engine.dtype, device=device_label(engine),
                          threads=pool_threads(self.backend)["threads"])
        self.monitor = ServingMonitor(be)
        from profilers.probe import make_probe

        self._probe = make_probe("op", engine.tdev.type, engine.tdev) if o.profile == "op" else None
        self._publish("serving", force=True)

    def _work(self, k: int):
        from profilers import throughput as T

        o = self.opts
        return T.synthetic(o.num_requests, o.input_len, o.output_len, o.rate, self.ckpt.config.vocab_size,
                           o.seed + k, o.prefix_len)

    def _round(self, k: int) -> None:
        from profilers import throughput as T

        self.round = k + 1
        work = self._work(k)
        be, mon = self.be, self.monitor

        def on_step(out, rec):
            mon.on_step(out)
            if self.track_peak and (out.running, out.blocks_used) > self._peak_key:
                self._peak_key = (out.running, out.blocks_used)
                self.peak = mon.capture(state="serving", **self._info)
            self._publish("serving")
            self._check()

        def on_idle():
            self._publish("idle")
            self._check()

        try:
            run = T.run_batched(be, work, self._probe, on_step, on_idle=on_idle, id_prefix=f"r{k + 1}-")
        except _Quit:
            unfinished = list(be.requests)
            for rid in unfinished:  # their blocks back to the pool
                be.abort(rid)
            mon.on_abort(len(unfinished))
            raise
        s = run.summary()
        s["round"] = k + 1
        from profilers.export import request_row

        self._finished.extend(request_row("batched", q) for q in run.requests)
        self.rounds.append(s)
        self._publish("serving", force=True)

    # --- one-shot (aios top --serve --once) -------------------------------------------------------
    def run_once(self, on_phase=None) -> None:
        """Load, warm up and serve one round in this thread."""
        self.track_peak = True
        self._load(on_phase)
        if on_phase:
            on_phase(f"serving {self.opts.workload()}")
        self._round(0)
        self._publish("done", force=True)

    def requests_csv(self) -> tuple[str, int]:
        """The requests of every finished round as `aios bench throughput --requests-csv` writes
        them (ids `r<round>-<n>`), and how many rows. Read from the UI's export worker while the
        engine thread goes on: a round's requests are added before the round is counted."""
        from profilers.export import requests_csv_text

        done = self._finished[:]
        return requests_csv_text(done), len(done)

    def stats(self) -> dict:
        """For benchmarks/bench_top.py: the engine's rate under the view, per round and overall."""
        v = self._view
        return {"rounds": [{"round": r["round"], "output_tokens_per_s": r["output_tokens_per_s"],
                            "total_tokens_per_s": r["total_tokens_per_s"], "duration_s": r["duration_s"]}
                           for r in self.rounds],
                "output_tokens": v.output_tokens, "step_seconds": v.step_seconds,
                "engine_output_tokens_per_s": v.engine_tokens_per_s, "steps": v.steps}
