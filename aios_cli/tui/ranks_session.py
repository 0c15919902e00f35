"""The engine side of `aios top --tp N --pp M`: a worker thread that runs the ranks (spawned
processes, `profilers.dist_live`) and folds what they post into the view.

The ranks generate without end; the worker thread blocks in `run_ranks`, which relays each
rank's summary of each pass to `_on_message` here. The UI thread reads `view()`, which copies
the state under the lock and folds the ranks' figures outside it, a few times a second.
Stopping sets the event `run_ranks` polls: it ends every rank and returns. There is no pause:
the ranks run in step through their collectives, and a rank held between tokens would be
measured as the others' wait.
"""

from __future__ import annotations

import collections
import threading

from engines.model.tokenizer import StreamDecoder
from profilers.dist_live import LiveJob, RanksTally

from ..errors import error_line
from .session import AVG_WINDOW, HISTORY
from .session_base import LiveSession
from .view import GenStat, TopView


class RanksSession(LiveSession):
    THREAD_NAME = "aios-top-ranks"
    can_pause = False
    engine = None  # the engines live in the ranks' processes: no GPU of this process to show

    def __init__(self, ckpt, job: LiveJob, prompts: list[tuple[str, list[int]]], threads: int):
        from engines.dist.launch import prepare_spawn

        super().__init__()
        prepare_spawn()  # before the app takes stderr over
        self.job, self.threads = job, threads
        self.prompts = prompts
        self._stop = threading.Event()
        cfg = ckpt.config
        self._tally = RanksTally(job.tp, job.pp, cfg.num_layers, AVG_WINDOW)
        self.v = TopView(model=ckpt.name, backend=job.backend, num_params=cfg.num_params(), profile=job.opts.profile,
                         prompt=prompts[0][0], layer_rows=tuple(["in"] + [str(i) for i in range(cfg.num_layers)] + ["out"]),
                         rank_threads=threads)
        self.v.ranks = self._tally.figures()
        self._rates = collections.deque(maxlen=HISTORY)  # 1 / the sampling rank's wall of each decode token
        self._gens = collections.deque(maxlen=HISTORY)
        self._head: dict | None = None  # the sampling rank's generation in progress: its prefill, decode so far
        self._decoded = [0, 0.0]  # decode tokens this session, and their wall on the sampling rank
        self._decoder = StreamDecoder(ckpt.tokenizer) if ckpt.tokenizer is not None else None
        self._on_phase = None

    def _stopping(self) -> None:
        self._stop.set()

    def pause(self, paused=None) -> bool:
        return False  # see the module's note

    # --- reads from the UI thread ---------------------------------------------------------
    def view(self) -> TopView:
        with self._lock:
            out = self.v.copy()
            out.decode_rates = list(self._rates)
            out.generations = list(self._gens)
            tally = self._tally.copy()
        fig = out.ranks = tally.figures()
        out.latest, out.latest_wall, out.avg, out.avg_wall = fig.latest, fig.latest_wall, fig.avg, fig.avg_wall
        out.avg_n = fig.tokens
        out.prefill, out.prefill_wall = fig.prefill, fig.prefill_wall
        return out

    def stats(self) -> dict:
        """The run's decode rate over the session (the sampling rank's passes)."""
        with self._lock:
            tokens, wall = self._decoded
            gens = self.v.generation
        return {"decode_tokens": tokens, "decode_tokens_per_s": tokens / wall if wall else None, "generations": gens}

    # --- the worker -----------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            self._run()
        except Exception as e:  # a rank failed: shown in the app, which keeps its last figures
            with self._lock:
                self._set_state("error", f"{error_line(e)} — q quits")

    def _run(self) -> None:
        from profilers.dist_live import rank_live
        from profilers.dist_run import spawn_run

        with self._lock:
            self._set_state("loading", f"starting {self.job.world} ranks (TP={self.job.tp} x PP={self.job.pp}), "
                                       f"{self.threads} thread{'s' if self.threads != 1 else ''} each")
        spawn_run(self.job, self.threads, self._on_message, body=rank_live, stop=self._stop)
        with self._lock:
            if not self._stop.is_set():
                self._close_generation()
                self._set_state("done")

    def run_once(self, on_phase=None) -> None:
        """`--once`: the ranks' one generation (the job's), in this thread; a rank's failure raises."""
        self._on_phase = on_phase
        self._run()

    def _set_state(self, state: str, message: str | None = None) -> None:
        self.v.state, self.v.message = state, message
        if self._on_phase:
            self._on_phase(message or state)

    def _on_message(self, rank: int, payload) -> None:
        kind, value = payload
        with self._lock:
            if kind == "phase":
                self._set_state("warming" if value.startswith("warming") else "loading", value)
            elif kind == "place":
                self._tally.places[rank] = value
                if rank == 0:
                    self.v.dtype, self.v.weights, self.v.device = value["dtype"], value["weights"], value["device"]
            elif kind == "step":
                self._tally.add(rank, value)
                if self._tally.places.get(rank, {}).get("head"):
                    self._on_head_step(value)
                if "tokens" in value:
                    self._on_tokens(value)

    def _on_head_step(self, s: dict) -> None:
        """The sampling rank's pass: the run's tokens/s and TTFT (every rank passes in step)."""
        if s["phase"] == "prefill":
            self._close_generation()
            self._head = {"gen": s["gen"], "ttft_s": s["wall_s"], "prompt_tokens": s["n_tokens"], "n": 0, "wall": 0.0}
            self.v.current_ttft_s, self.v.prefill_tokens = s["wall_s"], s["n_tokens"]
            return
        if s["wall_s"]:
            self._rates.append(1 / s["wall_s"])
        self._head["n"] += 1
        self._head["wall"] += s["wall_s"]
        self._decoded[0] += 1
        self._decoded[1] += s["wall_s"]

    def _close_generation(self) -> None:
        """The sampling rank's generation that ran to here, into the tokens/s history (once)."""
        h, self._head = self._head, None
        if h is None:
            return
        self._gens.append(GenStat(h["gen"] + 1, self.job.backend, h["prompt_tokens"], h["n"] + 1, h["ttft_s"],
                                  h["prompt_tokens"] / h["ttft_s"] if h["ttft_s"] else None,
                                  h["n"] / h["wall"] if h["wall"] else None))
        self.v.current_ttft_s = None

    def _on_tokens(self, s: dict) -> None:
        """Rank 0's tokens: the text, and where the generation is."""
        v = self.v
        if s["phase"] == "prefill":
            v.generation = s["gen"] + 1
            v.prompt = self.prompts[s["gen"] % len(self.prompts)][0]
            v.token_index, v.text = 0, ""
            if self._decoder:
                self._decoder.reset()
            if v.state != "generating":
                self._set_state("generating")
        for token in s["tokens"]:
            v.text += self._decoder.push(token) if self._decoder else f"{token} "
            v.token_index += 1
            v.total_tokens += 1
