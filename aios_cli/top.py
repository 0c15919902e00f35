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
from .batch_options import (BLOCK_SIZE, MAX_NUM_BATCHED_TOKENS, MAX_NUM_SEQS, BlockSizeOpt, KvBlocksOpt,
                            MaxNumBatchedTokensOpt, MaxNumSeqsOpt, variant)
from .errors import Terminated, fail, guarded
from .parallel import DistTimeoutOpt, PpOpt, TpOpt
from .request import DEFAULT_PROMPT, MODEL_PANEL, GenerateRequest, ModelOpt, PromptIdsOpt, QuantOpt, ThreadsOpt
from .request import SPEC_PANEL, SPECULATE_HELP, DraftMaxOpt, DraftMinOpt, DraftPMinOpt, SpecKOpt

_VIEW = "View"
_SERVE = "Serving view (--serve)"


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
    temperature: Annotated[float, typer.Option("--temperature", help="Sampling temperature; 0 means greedy.", rich_help_panel=MODEL_PANEL)] = 0.0,
    seed: Annotated[int, typer.Option("--seed", help="Sampler seed.", rich_help_panel=MODEL_PANEL)] = 0,
    speculate: Annotated[Optional[str], typer.Option("--speculate", help=SPECULATE_HELP + " Shows the acceptance live, and a model drafter's layers beside the target's.", rich_help_panel=SPEC_PANEL, show_default=False)] = None,
    spec_k: SpecKOpt = 4,
    draft_max: DraftMaxOpt = None,
    draft_min: DraftMinOpt = 0,
    draft_p_min: DraftPMinOpt = 0.0,
    profile: Annotated[str, typer.Option("--profile", help="op: time every op (per-layer bars); token: time tokens, count ops; none: time tokens only.", rich_help_panel=_VIEW)] = "op",
    once: Annotated[bool, typer.Option("--once", "-1", help="Run one generation, print the panels as text and exit (for scripts; like nvitop -1).", rich_help_panel=_VIEW)] = False,
    csv_file: Annotated[Optional[Path], typer.Option("--csv", help="Where e exports (default: aios-top-<time>.csv, with --serve aios-top-serve-<time>.csv, in the current directory); with --once, write it at the end. With --serve: one row per finished request.", rich_help_panel=_VIEW)] = None,
    exit_after: Annotated[Optional[float], typer.Option("--exit-after", help="Quit after this many seconds of generating (for scripted runs and benchmarks).", rich_help_panel=_VIEW)] = None,
    stats_file: Annotated[Optional[Path], typer.Option("--stats", help="On quit, write engine tok/s and UI refresh rate as JSON to FILE.", rich_help_panel=_VIEW)] = None,
    url: Annotated[Optional[str], typer.Option("--url", help="Watch a running aios serve at this base URL (its /aios/state): the serving view, as --serve draws it.", rich_help_panel=_SERVE, show_default=False)] = None,
    api_key: Annotated[Optional[str], typer.Option("--api-key", help="With --url: the server's API key (or set AIOS_API_KEY).", envvar="AIOS_API_KEY", rich_help_panel=_SERVE, show_default=False)] = None,
    serve: Annotated[bool, typer.Option("--serve", help="Watch the batched engine serve a workload instead: the queue and running batch, the KV-block map, throughput, TTFT/TPOT and the batched step's layers.", rich_help_panel=_SERVE)] = False,
    num_requests: Annotated[int, typer.Option("--num-requests", "-N", help="Requests a round (rounds repeat with --seed+1, +2, ...).", rich_help_panel=_SERVE)] = 64,
    rate: Annotated[str, typer.Option("--rate", help="Arrivals per second (Poisson), or inf: a round's requests all at once.", rich_help_panel=_SERVE)] = "inf",
    input_len: Annotated[str, typer.Option("--input-len", help="Prompt lengths A:B, uniform (random ids).", rich_help_panel=_SERVE)] = "16:64",
    output_len: Annotated[str, typer.Option("--output-len", help="Output lengths A:B, uniform (EOS ignored).", rich_help_panel=_SERVE)] = "64:128",
    prefix_len: Annotated[int, typer.Option("--prefix-len", help="Prompts start with the same this many ids (shared prefix blocks show in the KV map).", rich_help_panel=_SERVE)] = 0,
    max_num_seqs: variant(MaxNumSeqsOpt, panel=_SERVE) = MAX_NUM_SEQS,
    max_num_batched_tokens: variant(MaxNumBatchedTokensOpt, panel=_SERVE) = MAX_NUM_BATCHED_TOKENS,
    kv_blocks: variant(KvBlocksOpt, panel=_SERVE, more="Default: a round's requests all at their longest.") = None,
    block_size: variant(BlockSizeOpt, panel=_SERVE) = BLOCK_SIZE,
    tp: TpOpt = 1,
    pp: PpOpt = 1,
    dist_timeout: DistTimeoutOpt = 300.0,
) -> None:
    """Watch the forward pass live: per-layer timings, reduction barriers, memory and tokens/s
    (--serve: the batched engine serving a workload)."""
    quiet_blas_pool()
    if csv_file is not None and not once:
        from engines.files import standard_stream

        if standard_stream(csv_file):  # the live view owns the terminal: an export there is lost in it
            fail(f"--csv {csv_file} is the terminal the live view draws on — write to a file, or use --once")
    if (tp, pp) != (1, 1):
        for flag, given in (("--serve", serve), ("--url", url is not None), ("--speculate", speculate is not None),
                            ("--csv", csv_file is not None)):
            if given:
                fail(f"--tp/--pp watch one generation split over ranks spawned here; {NOT_WITH_RANKS[flag]}")
    if speculate is not None and (url is not None or serve):
        fail(f"--speculate runs one generation at a time, not {'--url' if url is not None else '--serve'} — drop one")
    if url is not None:
        if serve:
            fail("--url watches a server, --serve runs the engine here — pass one")
        if csv_file is not None:
            fail("--csv with --url: the server writes its own requests — aios serve --requests-csv FILE")
        _top_url(url, api_key, once, exit_after, stats_file)
        return
    if serve:
        if prompt or prompt_ids:
            fail("--serve makes random prompts (see --input-len, --prefix-len) — drop --prompt / --prompt-ids")
        if quant:
            fail("--serve runs the batched engine on float weights — drop --quant")
        if profile not in ("op", "none"):
            fail(f"--serve takes --profile op or none, got {profile!r}")
        _top_serve(backend, model, dtype, threads, seed, profile, once, exit_after, stats_file, num_requests, rate,
                   input_len, output_len, prefix_len, max_num_seqs, max_num_batched_tokens, kv_blocks, block_size,
                   csv_file)
        return
    req = GenerateRequest(backend=backend, model=model, dtype=dtype, prompts=prompt or [DEFAULT_PROMPT],
                          prompt_ids=prompt_ids, max_new_tokens=max_new_tokens, profile=profile,
                          ignore_eos=ignore_eos, temperature=temperature, seed=seed, threads=threads, quant=quant,
                          speculate=speculate, spec_k=spec_k, draft_max=draft_max, draft_min=draft_min,
                          draft_p_min=draft_p_min, spec_baseline=False,
                          outputs={"--csv": csv_file, "--stats": stats_file}, op_outputs=("--csv",))
    if (tp, pp) != (1, 1):
        from .parallel import check_layout

        _top_ranks(req, check_layout(tp, pp, dist_timeout), dist_timeout, once, exit_after, stats_file)
        return
    _top(req, once, csv_file, exit_after, stats_file)


NOT_WITH_RANKS = {
    "--serve": "--serve runs the batched engine in this process — drop one (aios bench throughput --tp N --pp M "
               "serves a workload over ranks)",
    "--url": "--url watches a server — pass one",
    "--speculate": "--speculate does not combine with them yet — drop one",
    "--csv": "the ranks view keeps no op events to export — drop --csv (aios run --tp N --pp M --csv FILE "
             "writes every rank's)",
}


def _check_exit_after(exit_after: float | None) -> None:
    if exit_after is not None and not exit_after > 0:
        fail(f"--exit-after must be positive, got {exit_after} — e.g. --exit-after 30")


def _top_ranks(req: GenerateRequest, layout: tuple[int, int], timeout_s: float, once: bool,
               exit_after: float | None, stats_file: Path | None) -> None:
    """--tp/--pp: the ranks spawned here, side by side (one generation with --once)."""
    from .top_ranks import open_ranks

    _check_exit_after(exit_after)
    err = console.stderr()
    session = open_ranks(req, layout, timeout_s, once, err)
    if once:
        from .tui.ranks_once import run_once

        run_once(session, err)
        return
    from .tui.ranks_app import RanksApp

    app = RanksApp(session, exit_after=exit_after, stats_path=stats_file)
    _run_app(app, session.stop)


def _top(req: GenerateRequest, once: bool, csv_file: Path | None, exit_after: float | None,
         stats_file: Path | None) -> None:
    err = console.stderr()
    _check_exit_after(exit_after)
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
    _run_app(app, session.stop)


def _top_serve(backend, model, dtype, threads, seed, profile, once, exit_after, stats_file, num_requests, rate,
               input_len, output_len, prefix_len, max_num_seqs, max_num_batched_tokens, kv_blocks, block_size,
               csv_file) -> None:
    from .batch_options import batched_backend, check_workload
    from .outputs import check_outputs

    _check_exit_after(exit_after)
    r, in_range, out_range = check_workload(num_requests, rate, input_len, output_len, prefix_len,
                                            most_requests=100_000)
    backend = batched_backend(backend, dtype)
    check_outputs({"--stats": stats_file, "--csv": csv_file})
    if not once and not (sys.stdout.isatty() and sys.stdin.isatty()):
        fail("aios top needs a terminal — use aios top --serve --once for a one-shot text report")
    from profilers.threads import setup

    plan = setup(threads)
    err = console.stderr()
    busy = plan.busy_warning()
    if busy:
        err.print(busy, style="yellow", soft_wrap=True)
    from engines.model.sources import open_model

    with err.status(f"opening {model}", spinner="dots"):
        ckpt = open_model(model)
    longest = prefix_len + in_range[1] + out_range[1]
    if longest > ckpt.config.max_position_embeddings:
        fail(f"a request of up to {longest} tokens exceeds the model's context of "
             f"{ckpt.config.max_position_embeddings} — pass shorter --input-len / --output-len / --prefix-len")
    from .tui.serve_session import ServeOptions, ServeSession

    opts = ServeOptions(num_requests, r, in_range, out_range, prefix_len, seed, max_num_seqs, max_num_batched_tokens,
                        kv_blocks, block_size, True, profile)
    session = ServeSession(ckpt, backend, dtype, opts)
    if once:
        from .tui.serve_once import run_once

        run_once(session, err, csv_file)
        return
    from .tui.serve_app import ServeApp

    app = ServeApp(session, exit_after=exit_after, stats_path=stats_file, export_path=csv_file)
    _run_app(app, session.stop)


def _top_url(url: str, api_key: str | None, once: bool, exit_after: float | None, stats_file: Path | None) -> None:
    from .outputs import check_outputs

    _check_exit_after(exit_after)
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        fail(f"--url must start with http:// or https://, got {url!r}")
    check_outputs({"--stats": stats_file})
    from .tui.remote_session import RemoteError, RemoteSession, fetch

    try:
        first = fetch(url, api_key)
    except RemoteError as e:
        fail(f"{e} — start it with aios serve, or fix --url")
    if once:
        import psutil

        from .tui.serve_once import report

        out = console.stdout(panels=True)
        out.print(report(first, psutil.cpu_percent(interval=0.2, percpu=True), None, out.width))
        return
    if not (sys.stdout.isatty() and sys.stdin.isatty()):
        fail("aios top needs a terminal — use aios top --url URL --once for a one-shot text report")
    from .tui.serve_app import ServeApp

    session = RemoteSession(url, api_key)
    session._view = first
    app = ServeApp(session, exit_after=exit_after, stats_path=stats_file)
    _run_app(app, session.stop)


def _run_app(app, stop) -> None:
    """Run a Textual app: SIGINT, SIGTERM and SIGHUP leave it as `q` does (the terminal
    restored), then end the command as the signal says. `stop(timeout)` ends the engine's
    worker; one stuck inside a long forward pass ends the process at once."""
    signals = []

    def on_signal(signum, frame):
        signals.append(signum)
        app.exit()

    before = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        app.run()
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    code = app.return_code or 0  # Textual sets 1 when the app itself failed
    if not stop(2.0):
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
