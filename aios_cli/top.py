"""`aios top`: watch the forward pass live (a Textual app), or print its panels once (--once)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from profilers.threads import quiet_blas_pool

from . import console
from .errors import Terminated, fail, guarded
from .request import DEFAULT_PROMPT, MODEL_PANEL, GenerateRequest, ModelOpt, PromptIdsOpt, QuantOpt, ThreadsOpt

_VIEW = "View"


@guarded
def top(
    backend: Annotated[Optional[str], typer.Option("--backend", "-b", help="scalar, simd, cuda or torch (switch live with b). Default: cuda with a usable GPU, else simd.", rich_help_panel=MODEL_PANEL)] = None,
    model: ModelOpt = "tiny",
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="Engine dtype for the first backend (see `aios run --help`).", rich_help_panel=MODEL_PANEL)] = None,
    prompt: Annotated[Optional[list[str]], typer.Option("--prompt", "-p", help="Prompt text; repeat to cycle through several.", rich_help_panel=MODEL_PANEL)] = None,
    prompt_ids: PromptIdsOpt = None,
    threads: ThreadsOpt = None,
    quant: QuantOpt = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-n", help="Tokens per generation; then it starts again.", rich_help_panel=MODEL_PANEL)] = 64,
    ignore_eos: Annotated[bool, typer.Option("--ignore-eos/--stop-at-eos", help="Generate all --max-new-tokens even past an end-of-sequence token (default: ignore it, so every generation is full length).", rich_help_panel=MODEL_PANEL)] = True,
    temperature: Annotated[float, typer.Option("--temperature", "-t", help="Sampling temperature; 0 means greedy.", rich_help_panel=MODEL_PANEL)] = 0.0,
    seed: Annotated[int, typer.Option("--seed", help="Sampler seed.", rich_help_panel=MODEL_PANEL)] = 0,
    profile: Annotated[str, typer.Option("--profile", help="op: time every op (per-layer bars); token: time tokens, count ops; none: time tokens only.", rich_help_panel=_VIEW)] = "op",
    once: Annotated[bool, typer.Option("--once", "-1", help="Run one generation, print the panels as text and exit (for scripts; like nvitop -1).", rich_help_panel=_VIEW)] = False,
    csv_file: Annotated[Optional[Path], typer.Option("--csv", help="Where e exports (default: aios-top-<time>.csv in the current directory); with --once, write it at the end.", rich_help_panel=_VIEW)] = None,
    exit_after: Annotated[Optional[float], typer.Option("--exit-after", help="Quit after this many seconds of generating (for scripted runs and benchmarks).", rich_help_panel=_VIEW)] = None,
    stats_file: Annotated[Optional[Path], typer.Option("--stats", help="On quit, write engine tok/s and UI refresh rate as JSON to FILE.", rich_help_panel=_VIEW)] = None,
) -> None:
    """Watch the forward pass live: per-layer timings, reduction barriers, memory and tokens/s."""
    quiet_blas_pool()
    req = GenerateRequest(backend=backend, model=model, dtype=dtype, prompts=prompt or [DEFAULT_PROMPT],
                          prompt_ids=prompt_ids, max_new_tokens=max_new_tokens, profile=profile,
                          ignore_eos=ignore_eos, temperature=temperature, seed=seed, threads=threads, quant=quant,
                          outputs={"--csv": csv_file, "--stats": stats_file}, op_outputs=("--csv",))
    _top(req, once, csv_file, exit_after, stats_file)


def _top(req: GenerateRequest, once: bool, csv_file: Path | None, exit_after: float | None,
         stats_file: Path | None) -> None:
    err = console.stderr()
    if exit_after is not None and not exit_after > 0:
        fail(f"--exit-after must be positive, got {exit_after} — e.g. --exit-after 30")
    if req.backend is not None and "," in req.backend:
        fail(f"aios top runs one engine at a time, got --backend {req.backend} — pass one, and switch live with b")
    backends, _ = req.check()
    if not once and not (sys.stdout.isatty() and sys.stdin.isatty()):
        fail("aios top needs a terminal — use aios top --once for a one-shot text report")
    ckpt, prompts = req.open(backends, lambda msg: err.status(msg, spinner="dots"))
    busy = req.thread_plan.busy_warning()
    if busy:  # said before the screen clears, and again in the status bar
        err.print(busy, style="yellow", soft_wrap=True)

    from .tui.session import TopSession

    session = TopSession(ckpt, backends[0], prompts, req.run_options())
    if once:
        from .tui.once import run_once

        run_once(session, err, csv_file)
        return

    from .tui.app import TopApp

    app = TopApp(session, export_path=csv_file, exit_after=exit_after, stats_path=stats_file)
    signals = []

    def on_signal(signum, frame):  # leave the app as `q` does (the terminal restored), then end as the signal says
        signals.append(signum)
        app.exit()

    before = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        app.run()
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    code = app.return_code or 0  # Textual sets 1 when the app itself failed
    if not session.stop(timeout=2.0):
        # the engine is inside one long forward pass; the terminal is already restored
        if signals:
            code = 128 + signals[0]
            print("aios: error: " + ("interrupted" if signals[0] == signal.SIGINT else
                                     f"terminated by {signal.Signals(signals[0]).name}"), file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    if signals:
        raise KeyboardInterrupt if signals[0] == signal.SIGINT else Terminated(signals[0])
    if code:
        raise typer.Exit(code)
