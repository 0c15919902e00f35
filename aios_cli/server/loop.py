"""The engine's one thread in `aios serve`: it owns the batched engine and is the only code
that touches it. HTTP handlers (on the asyncio loop) only submit requests, abort them and read
their token streams.

    submit()  a request in, checked at once (context, pool size, queue limit); returns a Stream
    abort()   a request out, now: its KV blocks go back to the pool before the next step
    Stream    an asyncio.Queue of the request's new token ids, then one `Final`

Between two steps the thread takes what was submitted and aborted, steps while anything is
unfinished, hands each step's tokens to their streams (`loop.call_soon_threadsafe`), and after
each step updates the Prometheus metrics, keeps the step's record for the exports, and
publishes a `ServeView` for `/aios/state` (at most every PUBLISH_S).

Overload: at most `max_num_seqs` requests run and `max_queue` wait; a request beyond that is
refused (`Overloaded`, HTTP 503 with Retry-After) and nothing already admitted is dropped.
Shutdown (`stop_accepting`, then `stop`): new requests are refused, and every unfinished one
is aborted: its stream ends with finish_reason "abort".
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from engines.errors import UserError
from engines.generate import check_request
from profilers.serving import ServeView, ServingMonitor
from profilers.throughput import StepRecord, batched_run, step_record

PUBLISH_S = 0.25
KEEP_STEPS = 200_000  # step records kept for the exports (a few hundred bytes each)


class Overloaded(Exception):
    """The queue is full: try again later (HTTP 503)."""


class ShuttingDown(Exception):
    """The server is stopping and takes no new request (HTTP 503)."""


@dataclass
class Final:
    reason: str  # stop | length | abort | error
    error: str | None = None


@dataclass(eq=False)
class Stream:
    id: str
    prompt_ids: list[int]
    max_new_tokens: int
    params: object
    stop_ids: tuple[int, ...]
    aloop: asyncio.AbstractEventLoop
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    request: object = None  # the engine's Request, once admitted
    submitted_s: float = field(default_factory=time.perf_counter)
    ended: bool = False

    def _put(self, item) -> None:
        self.aloop.call_soon_threadsafe(self.queue.put_nowait, item)


class EngineLoop:
    def __init__(self, be, info: dict, max_queue: int = 256, probe=None, metrics=None):
        self.be = be
        self.info = dict(info)
        self.max_queue = max_queue
        self.probe = probe
        self.metrics = metrics
        self.monitor = ServingMonitor(be)
        self._inbox: deque = deque()
        self._cv = threading.Condition()
        self._streams: dict[str, Stream] = {}
        self._unfinished = 0  # submitted and not yet ended (guarded by _cv)
        self._ids = 0
        self.accepting = True
        self._stop = False
        self._thread: threading.Thread | None = None
        self.t0 = time.perf_counter()
        self.steps: deque[StepRecord] = deque(maxlen=KEEP_STEPS)
        self.finished_requests: deque = deque(maxlen=KEEP_STEPS)
        self._view = self.monitor.capture(state="idle", **self.info)
        self._published = 0.0
        self.error: str | None = None
        self.aborted_at_stop = 0

    # --- from the HTTP side (any thread) --------------------------------------------------------
    def submit(self, prompt_ids: list[int], max_new_tokens: int, params, stop_ids=(),
               aloop: asyncio.AbstractEventLoop | None = None) -> Stream:
        """Check the request now (UserError: HTTP 400) and queue it for the engine thread."""
        if not self.accepting:
            raise ShuttingDown("the server is shutting down")
        check_request(self.be.cfg, list(prompt_ids), max_new_tokens)
        bm = self.be.blocks
        need = bm.blocks_for(len(prompt_ids) + max_new_tokens)
        if need > bm.num_blocks:
            raise UserError(f"{len(prompt_ids)} prompt + {max_new_tokens} new tokens need {need} KV blocks; the "
                            f"pool has {bm.num_blocks}", "ask for fewer max_tokens, or start the server with "
                            "a bigger --kv-cache-bytes")
        with self._cv:
            limit = self.be.scheduler.max_num_seqs + self.max_queue
            if self._unfinished >= limit:
                raise Overloaded(f"{self._unfinished} requests in the server, the limit is {limit} "
                                 f"(--max-num-seqs {self.be.scheduler.max_num_seqs} + --max-queue {self.max_queue})")
            self._ids += 1
            s = Stream(f"cmpl-{self._ids}", list(prompt_ids), max_new_tokens, params, tuple(stop_ids),
                       aloop or asyncio.get_running_loop())
            self._unfinished += 1
            self._inbox.append(("add", s))
            self._cv.notify()
        return s

    def abort(self, s: Stream) -> None:
        """End `s` now (a client went away, or a stop string matched). Idempotent."""
        with self._cv:
            self._inbox.append(("abort", s))
            self._cv.notify()

    def view(self) -> ServeView:
        return self._view

    @property
    def unfinished(self) -> int:
        return self._unfinished

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="aios-serve-engine", daemon=True)
        self._thread.start()

    def stop_accepting(self) -> None:
        """Refuse new requests and abort the unfinished ones (safe from a signal handler: it only
        sets flags; the engine thread does the rest within a few milliseconds)."""
        self.accepting = False
        self._stop = True

    def join(self, timeout: float | None = None) -> bool:
        self._stop = True
        with self._cv:
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    # --- the engine thread ------------------------------------------------------------------------
    def _end(self, s: Stream, final: Final) -> None:
        if s.ended:
            return
        s.ended = True
        self._streams.pop(s.id, None)
        with self._cv:
            self._unfinished -= 1
        if s.request is not None:
            self.finished_requests.append(s.request)
        if self.metrics is not None:
            self.metrics.finished(s, final.reason)
        s._put(final)

    def _take_inbox(self) -> None:
        with self._cv:
            items = list(self._inbox)
            self._inbox.clear()
        be = self.be
        for what, s in items:
            if what == "add":
                if s.ended:
                    continue
                try:
                    s.request = be.add_request(s.prompt_ids, s.max_new_tokens, s.params, s.stop_ids,
                                               request_id=s.id, arrival_s=s.submitted_s)
                except UserError as e:
                    self._end(s, Final("error", str(e)))
                    continue
                self._streams[s.id] = s
                if self.metrics is not None:
                    self.metrics.admitted(s)
            elif not s.ended:
                if s.request is not None:
                    be.abort(s.id)
                self._end(s, Final("abort"))

    def _abort_all(self) -> None:
        self.aborted_at_stop += len(self._streams)
        for s in list(self._streams.values()):
            self.be.abort(s.id)
            self._end(s, Final("abort"))
        with self._cv:
            items = list(self._inbox)
            self._inbox.clear()
        for what, s in items:
            if what == "add":
                self._end(s, Final("abort"))

    def _publish(self, state: str, force: bool = False) -> None:
        """A new view at most every PUBLISH_S, and at once when the state changes (the last
        step's figures are in the view as soon as the engine goes idle)."""
        now = time.perf_counter()
        if force or state != self._view.state or now - self._published >= PUBLISH_S:
            self._view = self.monitor.capture(state=state, **self.info)
            self._published = now

    def _run(self) -> None:
        be = self.be
        if self.probe is not None:
            be.set_lap(self.probe.lap)
        try:
            while True:
                if self._stop:
                    self._abort_all()
                    self._publish("stopped", force=True)
                    return
                self._take_inbox()
                if not be.has_unfinished():
                    if self.metrics is not None and self._view.state != "idle":
                        self.metrics.idle()  # aborts between steps leave no step to say so
                    self._publish("idle")
                    with self._cv:
                        if not self._inbox and not self._stop:
                            self._cv.wait(0.05)
                    continue
                start = time.perf_counter() - self.t0
                out = be.step(self.probe)
                self.steps.append(step_record(out, start))
                self.monitor.on_step(out)
                for req, tok in out.tokens:
                    s = self._streams.get(req.id)
                    if s is not None:
                        s._put(tok)
                for req in out.finished:
                    s = self._streams.get(req.id)
                    if s is not None:
                        self._end(s, Final(req.finish_reason or "stop"))
                if self.metrics is not None:
                    self.metrics.stepped(be, out)
                self._publish("serving")
        except Exception as e:  # the engine failed: every open stream ends with the error
            from ..errors import error_line

            self.error = error_line(e)
            self.accepting = False
            for s in list(self._streams.values()):
                self._end(s, Final("error", self.error))
            with self._cv:
                items = list(self._inbox)
                self._inbox.clear()
            for what, s in items:
                if what == "add":
                    self._end(s, Final("error", self.error))
            self._publish("error", force=True)
        finally:
            if self.probe is not None:
                be.set_lap(None)

    # --- exports ------------------------------------------------------------------------------------
    def run_record(self):
        """What the server served, as `aios bench throughput`'s ThroughputRun (for --csv, --trace)."""
        return batched_run(self.be, list(self.finished_requests), list(self.steps), self.t0)
