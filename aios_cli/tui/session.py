"""The engine side of `aios top`: a worker thread that generates without end, and the commands
the UI sends it.

The worker pulls the one measuring path (`profilers.harness.ProfiledRun`, the same as `aios
run`) generation after generation, one forward pass at a time, and notes each pass for the
view. Pausing is not pulling: the worker waits between two passes, so paused time never enters
a measurement. The UI thread only ever calls `view()`, which copies the current state under a
lock, and the command methods (`pause`, `switch_backend`, `set_prompt`, ...), which set flags
and return at once. Nothing here imports Textual: `aios top --once` and the tests use the
session directly.
"""

from __future__ import annotations

import collections
import contextlib
import gc
from dataclasses import replace

from engines import BACKENDS, cuda_status, engine_class
from engines.errors import UserError
from engines.generate import check_request
from engines.model.tokenizer import StreamDecoder
from profilers.harness import (ProfiledRun, RunOptions, build_drafter, build_engine, device_label, start_run,
                               warm_up)
from profilers.memory import MemorySample, reset_peak_rss
from profilers.probe import Step
from profilers.record import RunRecord
from profilers.threads import pool_threads

from ..errors import error_line
from .engines import usable_backends
from .retention import Retention
from .session_base import LiveSession
from .view import Folder, GenStat, SpecStat, TopView

AVG_WINDOW = 16  # decode tokens in the moving average
HISTORY = 600  # points kept for the over-time plots


def _can_speculate(opts: RunOptions, backend: str) -> bool:
    from engines.spec.drafters import check_speculate

    try:
        check_speculate(opts.speculate, opts.spec_k, backend=backend)
    except UserError:
        return False
    return True


class TopSession(LiveSession):
    THREAD_NAME = "aios-top-engine"

    def __init__(self, ckpt, backend: str, prompts: list[tuple[str, list[int]]], opts: RunOptions,
                 backends: tuple[str, ...] | None = None):
        super().__init__()
        self.ckpt = ckpt
        self.opts = opts
        self.prompts = list(prompts)
        self._prompt_i = 0
        self._interrupt = False  # end the current generation early
        self._pending_backend: str | None = backend
        self._loading_backend: str | None = None
        self._first_backend = backend  # --dtype applies to this one
        self._retry = False
        self.engine = None
        self.backend = backend
        self.backends = backends or usable_backends(ckpt)
        if opts.speculate:  # `b` cycles through the engines that can run this drafter
            self.backends = tuple(b for b in self.backends if _can_speculate(opts, b))
        self._drafter = None  # built with each engine, and kept for its generations
        self._draft_layers: int | None = None  # a model drafter's engine's layer count (None: prompt lookup)
        self._kept = Retention()
        self._run = None  # the ProfiledRun in progress (for a partial export)
        cfg = ckpt.config
        # (step, op_weight_bytes, activation itemsize): the last decode steps and the prefill,
        # folded into tables only when the UI asks (a few times a second, not every token)
        self._recent: collections.deque = collections.deque(maxlen=AVG_WINDOW)
        self._prefill_step: tuple | None = None
        self._drafts: collections.deque = collections.deque(maxlen=AVG_WINDOW)  # (draft step, its layer count)
        self._draft_wall = 0.0  # draft steps since the last step that emitted
        self._spec: SpecStat | None = None  # this generation's speculative rounds
        self._spec_last: SpecStat | None = None  # the last generation's that had any
        self._folder = Folder(cfg)
        self.v = TopView(model=ckpt.name, backend=backend, num_params=cfg.num_params(), profile=opts.profile,
                         backends=self.backends, prompt=self.prompts[0][0],
                         layer_rows=tuple(["in"] + [str(i) for i in range(cfg.num_layers)] + ["out"]))
        self._rates = collections.deque(maxlen=HISTORY)
        self._shares = collections.deque(maxlen=HISTORY)
        self._mem = collections.deque(maxlen=HISTORY)
        self._gens = collections.deque(maxlen=HISTORY)
        self._decoder = StreamDecoder(ckpt.tokenizer) if ckpt.tokenizer is not None else None
        self.v.speculate = opts.speculate
        ok, why = cuda_status()
        self.v.no_gpu_reason = None if ok else why

    # --- commands from the UI thread: set a flag, wake the worker, return ------------------
    def _pause_wanted(self, paused: bool | None) -> bool:
        if paused is None and self.v.state == "error":
            return False  # after an engine error, the toggle means "go on": unpause and retry
        return super()._pause_wanted(paused)

    def _pause_changed(self) -> None:
        if not self._paused and self.v.state == "error":
            self._retry = True
        elif self.v.state in ("generating", "paused"):
            self._set_state("paused" if self._paused else "generating")

    def switch_backend(self, backend: str | None = None) -> str:
        """Reload the engine as `backend` (default: the next usable one) in the worker."""
        with self._lock:
            if backend is None:
                cur = self._pending_backend or self._loading_backend or self.backend
                i = self.backends.index(cur) if cur in self.backends else -1
                backend = self.backends[(i + 1) % len(self.backends)]
            self._pending_backend = backend
            self._interrupt = True
            self._wake.notify_all()
            return backend

    def set_prompt(self, text: str) -> None:
        """Tokenize now (so a bad prompt is refused here, in one line), use it from the next
        generation on, and end the current one."""
        if self.ckpt.tokenizer is None:
            raise UserError(f"{self.ckpt.name} has no tokenizer.json", "restart aios top with --prompt-ids")
        from engines.model.tokenizer import encode

        ids = encode(self.ckpt.tokenizer, text)
        check_request(self.ckpt.config, ids, self.opts.max_new_tokens)
        with self._lock:
            self.prompts = [(text, ids)]
            self._prompt_i = 0
            self._interrupt = True
            self._retry = True
            self.v.prompt = text
            self._wake.notify_all()

    def _stopping(self) -> None:
        self._interrupt = True

    # --- reads from the UI thread ---------------------------------------------------------
    def view(self) -> TopView:
        with self._lock:
            out = self.v.copy()
            out.decode_rates = list(self._rates)
            out.barrier_shares = list(self._shares)
            out.memory = list(self._mem)
            out.generations = list(self._gens)
            recent = list(self._recent)
            pre = self._prefill_step
            drafts = list(self._drafts)
            spec = self._spec if self._spec is None or self._spec.rounds or self._spec_last is None else self._spec_last
            out.spec = spec.copy() if spec is not None else None
        self._folder.fold(out, recent, pre, drafts)
        return out

    def records(self) -> list[RunRecord]:
        """Every kept generation as a RunRecord, the one in progress included (partial)."""
        with self._lock:
            recs = self._kept.finished()
            run = self._run
        if run is not None and run.steps:
            recs.append(run.record())
        return recs

    # --- the worker -----------------------------------------------------------------------
    def _set_state(self, state: str, message: str | None = None) -> None:
        self.v.state = state
        self.v.message = message

    def _loop(self) -> None:
        while True:
            with self._lock:
                if self._quit:
                    return
                pending = self._pending_backend
                self._pending_backend = None
                waiting = self.v.state == "error" and not self._retry and pending is None
                if waiting or (self._paused and pending is None):
                    self._wake.wait(0.2)
                    continue
                if pending is None and self.engine is None:
                    pending = self.backend  # a retry after a failed first load: load again
                self._retry = False
                self._interrupt = False
                text, ids = self.prompts[self._prompt_i % len(self.prompts)]
            try:
                if pending is not None:
                    self._load(pending, ids)
                with self._lock:
                    if self._paused or self._quit or self.engine is None:
                        continue  # a load while paused waits here, before any prefill
                    self._prompt_i += 1
                self._generate(text, ids)
            except Exception as e:  # shown in the TUI; the worker waits for the next command
                with self._lock:
                    self._loading_backend = None
                msg = error_line(e)
                if self.engine is not None:
                    msg += f" — still on {self.backend}: space goes on, b tries another engine"
                else:
                    msg += " — space tries again, b tries another engine"
                with self._lock:
                    self._run = None
                    self._set_state("error", msg)

    def _load(self, backend: str, ids: list[int], on_phase=None) -> None:
        phase = on_phase or (lambda msg: None)
        msg = f"loading {self.ckpt.name} into the {backend} engine"
        with self._lock:
            self._set_state("loading", msg)
            self.v.load_progress = None
            self._loading_backend = backend
        phase(msg)
        # --quant holds for the engines that take it; switching live to another keeps its floats
        quant = self.opts.quant if BACKENDS[backend].takes_quant(self.opts.quant) else None
        engine_class(backend).preflight(self.ckpt.config, self.ckpt.name, None, quant or self.ckpt.quant)

        def progress(done: int, total: int) -> None:
            with self._lock:
                self.v.load_progress = (done, total)

        old = self.engine
        try:
            dtype = self.opts.dtype if backend == self._first_backend else None
            engine, _ = build_engine(self.ckpt, backend, dtype, progress, quant)
            msg = f"warming up {backend} (JIT compile, caches)"
            with self._lock:
                self._set_state("warming", msg)
            phase(msg)
            warm_up(engine, ids, self.opts)
            drafter = self._build_drafter(engine, dtype, progress, phase) if self.opts.speculate else None
        except Exception:
            with self._lock:  # the engine we had, if any, goes on measuring
                self.v.load_progress = None
            raise
        with self._lock:
            self.engine, self.backend = engine, backend
            self._drafter = drafter
            self.v.backend, self.v.dtype = backend, engine.dtype
            self.v.weights = f"{engine.weight_format} {engine.bits_per_weight:.2f} b/w"
            self.v.device = device_label(engine)
            self.v.threads = pool_threads(backend)["threads"]
            self.v.load_progress = None
            self._loading_backend = None
            self._set_state("paused" if self._paused else "generating")
            self.v.token_index = 0
            self._recent.clear()  # the averages and the tokens/s history start again
            self._rates.clear()
            self._shares.clear()
            self._drafts.clear()
            self._prefill_step = None
        del old
        gc.collect()

    def _build_drafter(self, engine, dtype: str | None, progress, phase):
        """The --speculate drafter for `engine`, built and warmed up once with it (not each
        generation: a draft model loads once); its layers join the per-layer rows."""
        msg = f"loading the drafter ({self.opts.speculate})"
        with self._lock:
            self._set_state("loading", msg)
        phase(msg)
        drafter = build_drafter(engine, replace(self.opts, dtype=dtype), progress)
        if hasattr(drafter, "warmup"):
            drafter.warmup(self.prompts[0][1][:8])
        draft_engine = getattr(drafter, "engine", None)
        with self._lock:
            self._draft_layers = draft_engine.cfg.num_layers if draft_engine is not None else None
            rows = max(self.ckpt.config.num_layers, self._draft_layers or 0)
            self._folder.rows = rows
            self.v.layer_rows = tuple(["in"] + [str(i) for i in range(rows)] + ["out"])
        return drafter

    def _generate(self, text: str, ids: list[int]) -> None:
        engine, backend = self.engine, self.backend
        opts = replace(self.opts, warmup=False)
        if self._drafter is not None:  # start_run without building the drafter again
            reset_peak_rss()
            run = ProfiledRun(self.ckpt, backend, engine, ids, opts, load_s=self.ckpt.open_seconds, jit_s=None,
                              drafter=self._drafter)
        else:
            run = start_run(self.ckpt, backend, ids, opts, engine=engine)
        with self._lock:
            self.v.generation += 1
            self.v.prompt = text
            self.v.token_index = 0
            self.v.text = ""
            self.v.current_ttft_s = None
            self.v.kv_cache_bytes = None
            self._set_state("paused" if self._paused else "generating")
            self._run = run
            self._draft_wall = 0.0
            if self.opts.speculate:
                gen = run.generation
                if self._spec is not None and self._spec.rounds:
                    self._spec_last = self._spec
                self._spec = SpecStat(self.v.generation, gen.k_max, gen.adaptive, k=gen.k, hist=[0] * (gen.k_max + 1))
        if self._decoder:
            self._decoder.reset()
        with contextlib.closing(iter(run)) as passes:
            for st, tokens in passes:
                for token in tokens:
                    self._on_token(token)
                self._on_step(st, run.latest_memory)
                if self._spec is not None:
                    self._on_round(st, run.generation)
                if self._interrupt:
                    break
                while self._paused and not self._interrupt:  # not pulling: the engine waits between passes
                    self._sleep(0.1)
                if self._interrupt:
                    break
        rec = run.record()
        with self._lock:
            self._run = None
            self._kept.add(rec)
            s = rec.summary()
            self._gens.append(GenStat(self.v.generation, backend, s["prompt_tokens"], s["new_tokens"], s["ttft_s"],
                                      s["prefill_tokens_per_s"], s["decode_tokens_per_s"]))

    # the worker's notes on each pass, outside the timed regions
    def _on_token(self, tok: int) -> None:
        piece = self._decoder.push(tok) if self._decoder else f"{tok} "
        with self._lock:
            self.v.token_index += 1
            self.v.total_tokens += 1
            self.v.text += piece

    def _on_step(self, st: Step, mem: MemorySample | None) -> None:
        """Only bookkeeping (the tables are built when the UI asks), so watching costs the
        engine as little as possible."""
        e = self.engine
        with self._lock:
            v = self.v
            if mem is not None and (not self._mem or self._mem[-1] is not mem):
                self._mem.append(mem)
            barriers = st.barriers
            if barriers is not None:
                v.barriers_total += barriers
            v.kv_positions = (e.pos, e.capacity)
            item = (st, e.op_weight_bytes, e.act_itemsize)
            if st.phase == "prefill":
                v.kv_cache_bytes = e.kv_cache_bytes()
                v.prefill_tokens = st.n_tokens
                v.current_ttft_s = st.wall_s
                if st.durs_ns is not None:
                    self._prefill_step = item
            elif st.phase == "draft":  # a speculative round's drafts: no token yet, not the target's pass
                self._draft_wall += st.wall_s
                if st.engine == "draft" and st.durs_ns is not None:
                    self._drafts.append((st, self._draft_layers))
            else:
                v.barriers_per_token = barriers
                wall = st.wall_s + self._draft_wall  # a round's tokens/s counts its drafting
                self._draft_wall = 0.0
                self._rates.append(st.emitted / wall if wall else 0.0)
                if st.durs_ns is not None:
                    self._recent.append(item)
                    if st.wall_s:
                        self._shares.append(st.barrier_share)

    def _on_round(self, st: Step, gen) -> None:
        """A speculative step's part in the generation's rounds (the worker owns `gen`; only
        its latest round is read, so this costs the same at every length)."""
        with self._lock:
            s = self._spec
            if st.phase == "draft":
                s.draft_s += st.wall_s
                s.dropped = gen.dropped
            elif st.phase != "prefill":
                s.target_s += st.wall_s
                s.emitted += st.emitted
                if st.phase == "verify":
                    s.rounds += 1
                    s.drafted += gen.proposed[-1]
                    s.accepted += gen.accepted[-1]
                    s.hist[gen.accepted[-1]] += 1
            s.k = gen.k

    # --- one-shot (aios top --once) -----------------------------------------------------------
    def run_once(self, on_phase=None) -> None:
        """Load, warm up and run one generation in this thread."""
        text, ids = self.prompts[0]
        self._pending_backend = None
        self._load(self.backend, ids, on_phase)
        if on_phase:
            on_phase("generating")
        self._generate(text, ids)
        self.v.state = "done"
