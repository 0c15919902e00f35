"""`aios top`: watch the forward pass live (a Textual app), or print its panels once (--once)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import fail, guarded
from .run import DEFAULT_PROMPT, parse_ids, quiet_blas_pool

_MODEL = "Model"
_VIEW = "View"


def top(
    backend: Annotated[Optional[str], typer.Option("--backend", "-b", help="scalar, simd, cuda or torch (switch live with b). Default: cuda with a usable GPU, else simd.", rich_help_panel=_MODEL)] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="A preset (tiny, qwen2.5-0.5b, ...), an HF-format directory, or a repo id in the local HF cache.", rich_help_panel=_MODEL)] = "tiny",
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="Engine dtype for the first backend (see `aios run --help`).", rich_help_panel=_MODEL)] = None,
    prompt: Annotated[Optional[list[str]], typer.Option("--prompt", "-p", help="Prompt text; repeat to cycle through several.", rich_help_panel=_MODEL)] = None,
    prompt_ids: Annotated[Optional[str], typer.Option("--prompt-ids", help="Token ids, e.g. 1,2,3 (bypasses the tokenizer).", rich_help_panel=_MODEL)] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-n", help="Tokens per generation; then it starts again.", rich_help_panel=_MODEL)] = 64,
    ignore_eos: Annotated[bool, typer.Option("--ignore-eos/--stop-at-eos", help="Generate all --max-new-tokens even past an end-of-sequence token (default: ignore it, so every generation is full length).", rich_help_panel=_MODEL)] = True,
    temperature: Annotated[float, typer.Option("--temperature", "-t", help="Sampling temperature; 0 means greedy.", rich_help_panel=_MODEL)] = 0.0,
    seed: Annotated[int, typer.Option("--seed", help="Sampler seed.", rich_help_panel=_MODEL)] = 0,
    profile: Annotated[str, typer.Option("--profile", help="op: time every op (per-layer bars); token: time tokens, count ops; none: time tokens only.", rich_help_panel=_VIEW)] = "op",
    once: Annotated[bool, typer.Option("--once", "-1", help="Run one generation, print the panels as text and exit (for scripts; like nvitop -1).", rich_help_panel=_VIEW)] = False,
    csv_file: Annotated[Optional[Path], typer.Option("--csv", help="Where e exports (default: aios-top-<time>.csv in the current directory); with --once, write it at the end.", rich_help_panel=_VIEW)] = None,
    exit_after: Annotated[Optional[float], typer.Option("--exit-after", help="Quit after this many seconds of generating (for scripted runs and benchmarks).", rich_help_panel=_VIEW)] = None,
    stats_file: Annotated[Optional[Path], typer.Option("--stats", help="On quit, write engine tok/s and UI refresh rate as JSON to FILE.", rich_help_panel=_VIEW)] = None,
) -> None:
    """Watch the forward pass live: per-layer timings, reduction barriers, memory and tokens/s."""
    params = dict(locals())
    quiet_blas_pool()
    _top(**params)


@guarded
def _top(backend, model, dtype, prompt, prompt_ids, max_new_tokens, ignore_eos, temperature, seed, profile, once,
         csv_file, exit_after, stats_file) -> None:
    import math

    from rich.console import Console

    from engines.checkpoint import open_model
    from engines.generate import check_request
    from engines.sampling import SamplingParams
    from profilers.probe import LEVELS

    from .runner import RunOptions, check_backend

    err = Console(stderr=True, highlight=False)
    if max_new_tokens < 1:
        fail(f"--max-new-tokens must be positive, got {max_new_tokens} — pass 1 or more")
    if profile not in LEVELS:
        fail(f"unknown --profile {profile!r} — choose from: {', '.join(LEVELS)}")
    if not (math.isfinite(temperature) and temperature >= 0):
        fail(f"--temperature must be a finite number >= 0, got {temperature} — e.g. -t 0.8")
    if csv_file is not None and profile != "op":
        fail(f"--csv writes one row per op event, which --profile {profile} does not record — use --profile op")
    if exit_after is not None and not exit_after > 0:
        fail(f"--exit-after must be positive, got {exit_after} — e.g. --exit-after 30")
    for flag, path in (("--csv", csv_file), ("--stats", stats_file)):
        if path is not None:
            from profilers.files import check_writable

            why = check_writable(path)
            if why:
                fail(f"{flag} {path}: {why} — pick a writable path")
    if not once and not (sys.stdout.isatty() and sys.stdin.isatty()):
        fail("aios top needs a terminal — use aios top --once for a one-shot text report")
    if backend is None:
        from engines import default_backend

        backend, _ = default_backend()
    check_backend(backend, dtype)

    with err.status(f"opening {model}", spinner="dots"):
        ckpt = open_model(model)
    if prompt_ids is not None:
        prompts = [(prompt_ids, parse_ids(prompt_ids))]
    else:
        if ckpt.tokenizer is None:
            fail(f"{model} has no tokenizer.json — pass --prompt-ids 1,2,3 instead of --prompt")
        prompts = [(p, ckpt.tokenizer.encode(p).ids) for p in (prompt or [DEFAULT_PROMPT])]
    for _, ids in prompts:
        check_request(ckpt.config, ids, max_new_tokens)
    from engines import engine_class

    engine_class(backend).preflight(ckpt.config, ckpt.name)

    from .tui.session import TopSession

    sampling = SamplingParams(greedy=temperature == 0, temperature=temperature, seed=seed)
    opts = RunOptions(max_new_tokens=max_new_tokens, sampling=sampling, dtype=dtype, profile=profile,
                      warmup=True, ignore_eos=ignore_eos)
    session = TopSession(ckpt, backend, prompts, opts)
    if once:
        from .tui.once import run_once

        run_once(session, err, csv_file)
        return

    from .tui.app import TopApp

    app = TopApp(session, export_path=csv_file, exit_after=exit_after, stats_path=stats_file)
    app.run()
    code = app.return_code or 0  # Textual sets 1 when the app itself failed
    if not session.stop(timeout=2.0):
        # the engine is inside one long forward pass; the terminal is already restored
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    if code:
        raise typer.Exit(code)
