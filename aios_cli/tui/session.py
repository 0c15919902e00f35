"""The engine side of `aios top`: a worker thread that generates without end, and the views
the screen draws from.

The worker drives the one measuring path (`runner.profile_run`, the same as `aios run`)
generation after generation, and folds each step into a `TopView` as it ends. The UI thread
only ever calls `view()`, which copies the current state under a lock, and the command
methods (`pause`, `switch_backend`, `set_prompt`, ...), which set flags and return at once.
Nothing here imports Textual: `aios top --once` and the tests use the session directly.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field

import numpy as np

from engines import BACKENDS, cuda_status, engine_class
from engines.errors import UserError
from engines.tokenizer import StreamDecoder
from profilers.costs import op_costs
from profilers.memory import MemorySample
from profilers.probe import BARRIER_MASK, Step
from profilers.record import RunRecord, step_layer_bytes, step_layer_table

from ..runner import (RunOptions, build_engine, device_label, gpu_index_of, make_record, new_run_id, profile_run,
                      warm_up)

AVG_WINDOW = 16  # decode tokens in the moving average
HISTORY = 600  # points kept for the over-time plots
KEEP_STEPS = 20_000  # forward passes kept for export (qwen2.5-0.5b: ~6 KB each); older generations are dropped whole


@dataclass
class GenStat:
    """One finished (or interrupted) generation, for the tokens/s history."""

    index: int
    backend: str
    prompt_tokens: int
    new_tokens: int
    ttft_s: float
    prefill_tokens_per_s: float
    decode_tokens_per_s: float | None


@dataclass
class TopView:
    """Everything one frame shows: a copy, safe to read while the worker goes on."""

    model: str
    backend: str
    dtype: str = "…"
    device: str = "…"
    num_params: int = 0
    profile: str = "op"
    state: str = "starting"  # starting | loading | warming | generating | paused | error
    message: str | None = None  # what is loading, or the last error
    load_progress: tuple[int, int] | None = None
    backends: tuple[str, ...] = ()
    prompt: str = ""
    generation: int = 0  # generations started this session
    token_index: int = 0  # tokens generated in the current generation
    total_tokens: int = 0  # tokens generated this session, all generations
    layer_rows: tuple[str, ...] = ()
    # per-layer tables, shape (L+2, len(KINDS)): seconds and minimum bytes moved
    latest: np.ndarray | None = None
    latest_bytes: np.ndarray | None = None
    latest_wall: float | None = None
    avg: np.ndarray | None = None
    avg_bytes: np.ndarray | None = None
    avg_wall: float | None = None
    avg_n: int = 0
    prefill: np.ndarray | None = None
    prefill_bytes: np.ndarray | None = None
    prefill_wall: float | None = None
    prefill_tokens: int = 0
    # tokens/s
    decode_rates: list[float] = field(default_factory=list)  # 1 / wall of each decode token, oldest first
    generations: list[GenStat] = field(default_factory=list)
    current_ttft_s: float | None = None
    # reduction barriers
    barriers_per_token: int | None = None
    barrier_share: float | None = None  # of the latest decode token's time
    barrier_share_avg: float | None = None  # over the moving-average window
    barriers_total: int = 0  # barriers waited on this session (prefill and decode)
    barrier_shares: list[float] = field(default_factory=list)
    # memory
    memory: list[MemorySample] = field(default_factory=list)
    kv_cache_bytes: int | None = None
    kv_positions: tuple[int, int] | None = None  # (filled, capacity)
    no_gpu_reason: str | None = None
    # text
    text: str = ""


class TopSession:
    def __init__(self, ckpt, backend: str, prompts: list[tuple[str, list[int]]], opts: RunOptions,
                 backends: tuple[str, ...] | None = None):
        self.ckpt = ckpt
        self.opts = opts
        self.prompts = list(prompts)
        self._prompt_i = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._paused = False
        self._interrupt = False  # end the current generation early
        self._quit = False
        self._pending_backend: str | None = backend
        self._loading_backend: str | None = None
        self._first_backend = backend  # --dtype applies to this one
        self._retry = False
        self.engine = None
        self.backend = backend
        self.backends = backends or usable_backends(ckpt)
        self._thread: threading.Thread | None = None
        self._records: collections.deque[RunRecord] = collections.deque()
        self._kept_steps = 0
        self._current: dict | None = None  # the generation in progress (for a partial export)
        cfg = ckpt.config
        self._L = cfg.num_layers
        # (step, weight itemsize, activation itemsize): the last decode steps and the prefill,
        # folded into tables only when the UI asks (a few times a second, not every token)
        self._recent: collections.deque = collections.deque(maxlen=AVG_WINDOW)
        self._prefill_step: tuple | None = None
        self._tables: dict[int, tuple] = {}  # id(step) -> (seconds table, bytes table, barrier share)
        self.v = TopView(model=ckpt.name, backend=backend, num_params=cfg.num_params(), profile=opts.profile,
                         backends=self.backends, prompt=self.prompts[0][0],
                         layer_rows=tuple(["in"] + [str(i) for i in range(self._L)] + ["out"]))
        self._rates = collections.deque(maxlen=HISTORY)
        self._shares = collections.deque(maxlen=HISTORY)
        self._mem = collections.deque(maxlen=HISTORY)
        self._gens = collections.deque(maxlen=HISTORY)
        self._decoder = StreamDecoder(ckpt.tokenizer) if ckpt.tokenizer is not None else None
        ok, why = cuda_status()
        self.v.no_gpu_reason = None if ok else why

    # --- commands from the UI thread: set a flag, wake the worker, return ------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="aios-top-engine", daemon=True)
        self._thread.start()

    def pause(self, paused: bool | None = None) -> bool:
        """Toggle (or set) the pause. After an engine error, the toggle means "go on": it
        unpauses and retries."""
        with self._lock:
            if paused is None and self.v.state == "error":
                paused = False
            self._paused = (not self._paused) if paused is None else paused
            if not self._paused and self.v.state == "error":
                self._retry = True
            elif self.v.state in ("generating", "paused"):
                self._set_state("paused" if self._paused else "generating")
            self._wake.notify_all()
            return self._paused

    @property
    def paused(self) -> bool:
        return self._paused

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
        from engines.generate import check_request

        ids = self.ckpt.tokenizer.encode(text).ids
        check_request(self.ckpt.config, ids, self.opts.max_new_tokens)
        with self._lock:
            self.prompts = [(text, ids)]
            self._prompt_i = 0
            self._interrupt = True
            self._retry = True
            self.v.prompt = text
            self._wake.notify_all()

    def stop(self, timeout: float = 2.0) -> bool:
        """Ask the worker to finish; True if it did within `timeout`."""
        with self._lock:
            self._quit = self._interrupt = True
            self._paused = False
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    # --- reads from the UI thread ---------------------------------------------------------
    def view(self) -> TopView:
        with self._lock:
            v = self.v
            out = TopView(**{k: getattr(v, k) for k in v.__dataclass_fields__})
            out.decode_rates = list(self._rates)
            out.barrier_shares = list(self._shares)
            out.memory = list(self._mem)
            out.generations = list(self._gens)
            recent = list(self._recent)
            pre = self._prefill_step
        self._fold(out, recent, pre)
        return out

    def _table(self, item: tuple) -> tuple:
        st, wb, ab = item
        got = self._tables.get(id(st))
        if got is None or got[0] is not st:
            _, b = op_costs(self.ckpt.config, st.n_tokens, st.past, wb, ab)
            share = float(st.durs_ns[BARRIER_MASK[st.ops]].sum()) * 1e-9 / st.wall_s if st.wall_s else None
            got = (st, step_layer_table(st, self._L), step_layer_bytes(st, self._L, b), share)
            self._tables[id(st)] = got
        return got[1:]

    def _fold(self, out: TopView, recent: list[tuple], pre: tuple | None) -> None:
        """Per-layer tables for the latest decode token, the moving average and the prefill."""
        if pre is not None:
            out.prefill, out.prefill_bytes, _ = self._table(pre)
            out.prefill_wall = pre[0].wall_s
        if recent:
            tabs = [self._table(it) for it in recent]
            walls = [it[0].wall_s for it in recent]
            out.latest, out.latest_bytes, out.barrier_share = tabs[-1]
            out.latest_wall = walls[-1]
            n = len(tabs)
            out.avg = sum(t[0] for t in tabs) / n
            out.avg_bytes = sum(t[1] for t in tabs) / n
            out.avg_wall = sum(walls) / n
            out.avg_n = n
            timed = [(t[2], w) for t, w in zip(tabs, walls) if t[2] is not None]
            wall = sum(w for _, w in timed)  # barrier time / token time, as `aios run` reports it
            out.barrier_share_avg = sum(sh * w for sh, w in timed) / wall if wall else None
        keep = {id(it[0]) for it in recent} | ({id(pre[0])} if pre else set())
        for k in [k for k in self._tables if k not in keep]:
            self._tables.pop(k, None)

    def records(self) -> list[RunRecord]:
        """Every kept generation as a RunRecord, the one in progress included (partial)."""
        with self._lock:
            recs = list(self._records)
            cur = dict(self._current) if self._current else None
            if cur:
                cur["steps"] = list(cur["steps"])
                cur["generated_ids"] = list(cur["generated_ids"])
                cur["memory"] = list(cur["memory"])
        if cur and cur["steps"]:
            recs.append(make_record(self.ckpt, cur["backend"], cur["engine"], self.opts, cur["prompt_ids"],
                                    cur["generated_ids"], cur["steps"], cur["memory"], run_id=cur["run_id"],
                                    meta={"partial": True}))
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
                    self._current = None
                    self._set_state("error", msg)

    def _load(self, backend: str, ids: list[int], on_phase=None) -> None:
        phase = on_phase or (lambda msg: None)
        msg = f"loading {self.ckpt.name} into the {backend} engine"
        with self._lock:
            self._set_state("loading", msg)
            self.v.load_progress = None
            self._loading_backend = backend
        phase(msg)
        engine_class(backend).preflight(self.ckpt.config, self.ckpt.name)

        def progress(done: int, total: int) -> None:
            with self._lock:
                self.v.load_progress = (done, total)

        old = self.engine
        try:
            dtype = self.opts.dtype if backend == self._first_backend else None
            engine, _ = build_engine(self.ckpt, backend, dtype, progress)
            msg = f"warming up {backend} (JIT compile, caches)"
            with self._lock:
                self._set_state("warming", msg)
            phase(msg)
            warm_up(engine, ids, self.opts)
        except Exception:
            with self._lock:  # the engine we had, if any, goes on measuring
                self.v.load_progress = None
            raise
        with self._lock:
            self.engine, self.backend = engine, backend
            self.v.backend, self.v.dtype = backend, engine.dtype
            self.v.device = device_label(engine)
            self.v.load_progress = None
            self._loading_backend = None
            self._set_state("paused" if self._paused else "generating")
            self.v.token_index = 0
            self._recent.clear()  # the averages and the tokens/s history start again
            self._rates.clear()
            self._shares.clear()
            self._prefill_step = None
        del old
        import gc

        gc.collect()

    def _generate(self, text: str, ids: list[int]) -> None:
        engine, backend = self.engine, self.backend
        run_id = new_run_id(backend)
        with self._lock:
            self.v.generation += 1
            self.v.prompt = text
            self.v.token_index = 0
            self.v.text = ""
            self.v.current_ttft_s = None
            self.v.kv_cache_bytes = None
            self._set_state("paused" if self._paused else "generating")
            self._current = {"backend": backend, "engine": engine, "prompt_ids": ids, "run_id": run_id,
                             "steps": [], "generated_ids": [], "memory": []}
        if self._decoder:
            self._decoder.reset()
        opts = RunOptions(**{**self.opts.__dict__, "warmup": False})
        rec = profile_run(self.ckpt, backend, ids, opts, engine=engine, run_id=run_id,
                          on_token=self._on_token, on_step=self._on_step, should_stop=self._should_stop)
        with self._lock:
            self._current = None
            self._records.append(rec)
            self._kept_steps += len(rec.steps)
            while self._kept_steps > KEEP_STEPS and len(self._records) > 1:
                self._kept_steps -= len(self._records.popleft().steps)
            s = rec.summary()
            self._gens.append(GenStat(self.v.generation, backend, s["prompt_tokens"], s["new_tokens"], s["ttft_s"],
                                      s["prefill_tokens_per_s"], s["decode_tokens_per_s"]))

    # called by the generate loop, outside the timed regions
    def _should_stop(self) -> bool:
        return self._interrupt

    def _on_token(self, tok: int) -> None:
        piece = self._decoder.push(tok) if self._decoder else f"{tok} "
        with self._lock:
            if self._current is not None:
                self._current["generated_ids"].append(tok)
            self.v.token_index += 1
            self.v.total_tokens += 1
            self.v.text += piece

    def _on_step(self, st: Step, mem: MemorySample | None) -> None:
        """Runs in the worker after every step: only bookkeeping (the tables are built when
        the UI asks), so watching costs the engine as little as possible."""
        e = self.engine
        with self._lock:
            v = self.v
            cur = self._current
            if cur is not None:
                cur["steps"].append(st)
                if mem is not None and (not cur["memory"] or cur["memory"][-1] is not mem):
                    cur["memory"].append(mem)
            if mem is not None and (not self._mem or self._mem[-1] is not mem):
                self._mem.append(mem)
            barriers = st.barriers
            if barriers is not None:
                v.barriers_total += barriers
            v.kv_positions = (e.pos, e.capacity)
            item = (st, e.weight_itemsize, e.act_itemsize)
            if st.phase == "prefill":
                v.kv_cache_bytes = e.kv_cache_bytes()
                v.prefill_tokens = st.n_tokens
                v.current_ttft_s = st.wall_s
                if st.durs_ns is not None:
                    self._prefill_step = item
            else:
                v.barriers_per_token = barriers
                self._rates.append(1.0 / st.wall_s if st.wall_s else 0.0)
                if st.durs_ns is not None:
                    self._recent.append(item)
                    if st.wall_s:
                        self._shares.append(float(st.durs_ns[BARRIER_MASK[st.ops]].sum()) * 1e-9 / st.wall_s)
        while self._paused and not self._interrupt:  # a pause holds the engine between steps
            with self._lock:
                self._wake.wait(0.1)

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


def engine_gpu(engine):
    """NVML's view (utilisation, power, temperature) of the GPU `engine` runs on; None for
    CPU engines."""
    if engine is None or engine.device != "cuda":
        return None
    from profilers import nvml

    i = gpu_index_of(engine)
    return nvml.gpu(i) if i is not None else None


def usable_backends(ckpt) -> tuple[str, ...]:
    """The engines `b` cycles through: those that can run this model on this machine."""
    out = []
    for b in BACKENDS:
        if b == "cuda" and not cuda_status()[0]:
            continue
        try:
            engine_class(b).preflight(ckpt.config, ckpt.name)
        except UserError:
            continue
        out.append(b)
    return tuple(out)


def error_line(e: BaseException) -> str:
    """One line for an engine error shown in the TUI."""
    name = type(e).__name__
    if isinstance(e, UserError):
        return str(e)
    if isinstance(e, MemoryError):
        return "out of host memory — try a smaller model or fewer --max-new-tokens"
    if name == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
        return "out of GPU memory — try a smaller model, --dtype bfloat16 or fewer --max-new-tokens"
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{name}: {msg}" if msg else name
