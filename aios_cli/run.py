"""`aios run`: generate on one or more engines and show where the time goes, op by op."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import fail, guarded

FORMATS = ("table", "csv", "json", "md")
DEFAULT_PROMPT = "The quick brown fox"

_MODEL = "Model"
_SAMPLING = "Sampling"
_OUTPUT = "Output"


def quiet_blas_pool() -> None:
    """Let OpenBLAS's idle workers sleep at once instead of spinning for ~0.1 s (its default).
    The simd engine's prefill calls BLAS and its decode runs on Numba's threads; on a 2-core
    machine the spinning BLAS workers steal a core from decode (measured on `tiny`: 254 tok/s
    with the default spin, 617 tok/s without). Read when NumPy loads OpenBLAS, so this must
    run before the first numpy import; a value the user exported wins."""
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")


def parse_ids(s: str) -> list[int]:
    parts = s.replace(" ", "").split(",")
    if parts and parts[-1] == "":
        parts.pop()  # allow one trailing comma
    try:
        ids = [int(x) for x in parts]
    except ValueError:
        fail(f"--prompt-ids must be comma-separated integers, got {s!r} — e.g. --prompt-ids 1,2,3")
    if not ids:
        fail("--prompt-ids is empty — e.g. --prompt-ids 1,2,3")
    return ids


def run(
    backend: Annotated[Optional[str], typer.Option("--backend", "-b", help="scalar, simd, cuda or torch; a comma list runs each in turn. Default: cuda with a usable GPU, else simd.", rich_help_panel=_MODEL)] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="A preset (tiny, qwen2.5-0.5b, ...), an HF-format directory, or a repo id in the local HF cache.", rich_help_panel=_MODEL)] = "tiny",
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="Engine dtype: scalar float64, simd float32, cuda bfloat16|float16|float32 (default bfloat16), torch float32|bfloat16.", rich_help_panel=_MODEL)] = None,
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="Prompt text.", rich_help_panel=_MODEL)] = DEFAULT_PROMPT,
    prompt_ids: Annotated[Optional[str], typer.Option("--prompt-ids", help="Token ids, e.g. 1,2,3 (bypasses the tokenizer).", rich_help_panel=_MODEL)] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-n", help="Tokens to generate.", rich_help_panel=_MODEL)] = 16,
    ignore_eos: Annotated[bool, typer.Option("--ignore-eos", help="Keep generating past an end-of-sequence token.", rich_help_panel=_MODEL)] = False,
    greedy: Annotated[bool, typer.Option("--greedy", help="Always take the most likely token (the default unless --temperature > 0).", rich_help_panel=_SAMPLING)] = False,
    temperature: Annotated[float, typer.Option("--temperature", "-t", help="Sampling temperature; 0 means greedy.", rich_help_panel=_SAMPLING)] = 0.0,
    top_k: Annotated[int, typer.Option("--top-k", help="Keep the k most likely tokens (0: off).", rich_help_panel=_SAMPLING)] = 0,
    top_p: Annotated[float, typer.Option("--top-p", help="Keep the smallest set with this much probability (1: off).", rich_help_panel=_SAMPLING)] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="Sampler seed: same seed, same tokens.", rich_help_panel=_SAMPLING)] = 0,
    profile: Annotated[str, typer.Option("--profile", help="op: time every op; token: time tokens, count ops; none: time tokens only.", rich_help_panel=_OUTPUT)] = "op",
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv (summary row per backend), json or md.", rich_help_panel=_OUTPUT)] = "table",
    csv_file: Annotated[Optional[Path], typer.Option("--csv", help="Write one tidy row per op event to FILE.", rich_help_panel=_OUTPUT)] = None,
    trace_file: Annotated[Optional[Path], typer.Option("--trace", help="Write a Chrome trace-event JSON (opens in Perfetto) to FILE.", rich_help_panel=_OUTPUT)] = None,
    warmup: Annotated[bool, typer.Option("--warmup/--no-warmup", help="Run an untimed warm-up first (JIT, caches).", rich_help_panel=_OUTPUT)] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or streamed text; only the result.", rich_help_panel=_OUTPUT)] = False,
) -> None:
    """Generate text and profile every op of the forward pass, per layer and per token."""
    params = dict(locals())
    quiet_blas_pool()
    _run(**params)


@guarded
def _run(backend, model, dtype, prompt, prompt_ids, max_new_tokens, ignore_eos, greedy, temperature, top_k,
         top_p, seed, profile, format, csv_file, trace_file, warmup, quiet) -> None:
    from rich.console import Console

    from engines.checkpoint import open_model
    from engines.generate import check_request
    from engines.sampling import SamplingParams
    from profilers.probe import LEVELS

    from . import render
    from .runner import RunOptions, check_backend

    err = Console(stderr=True, highlight=False)
    # --- validate everything before loading anything --------------------------------
    if max_new_tokens < 1:
        fail(f"--max-new-tokens must be positive, got {max_new_tokens} — pass 1 or more")
    if profile not in LEVELS:
        fail(f"unknown --profile {profile!r} — choose from: {', '.join(LEVELS)}")
    if format not in FORMATS:
        fail(f"unknown --format {format!r} — choose from: {', '.join(FORMATS)}")
    if not (math.isfinite(temperature) and temperature >= 0) or not 0 < top_p <= 1 or top_k < 0:
        fail("sampling needs a finite --temperature >= 0, 0 < --top-p <= 1 and --top-k >= 0 — e.g. -t 0.8 --top-p 0.95")
    if csv_file is not None and profile != "op":
        fail(f"--csv writes one row per op event, which --profile {profile} does not record — use --profile op")
    for flag, path in (("--csv", csv_file), ("--trace", trace_file)):
        if path is not None:
            from profilers.export import check_writable

            why = check_writable(path)
            if why:
                fail(f"{flag} {path}: {why} — pick a writable path")
    chosen_note = None
    if backend is None:
        from engines import default_backend

        chosen, why = default_backend()
        backends = [chosen]
        chosen_note = f"[dim]backend:[/] {chosen} [dim]({why}; pick one with --backend)[/]"
    else:
        backends = [b.strip() for b in backend.split(",") if b.strip()]
        if not backends:
            from engines import BACKENDS

            fail(f"--backend is empty — choose from {', '.join(BACKENDS)}")
    for b in backends:
        check_backend(b, dtype)
    ids = parse_ids(prompt_ids) if prompt_ids is not None else None

    # --- model and prompt -------------------------------------------------------------
    with err.status(f"opening {model}", spinner="dots") if not quiet else _null():
        ckpt = open_model(model)
    if ids is None:
        if ckpt.tokenizer is None:
            fail(f"{model} has no tokenizer.json — pass --prompt-ids 1,2,3 instead of --prompt")
        ids = ckpt.tokenizer.encode(prompt).ids
    check_request(ckpt.config, ids, max_new_tokens)
    from engines import engine_class

    for b in backends:  # refuse now, not after the first backend has run
        engine_class(b).preflight(ckpt.config, ckpt.name)
    if not quiet:
        if chosen_note:  # only once the input is known to be good: a bad input gets one line
            err.print(chosen_note)
        for note in ckpt.notes:
            err.print(f"[dim]note: {note}[/]")

    sampling = SamplingParams(greedy=greedy or temperature == 0, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    opts = RunOptions(max_new_tokens=max_new_tokens, sampling=sampling, dtype=dtype, profile=profile,
                      warmup=warmup, ignore_eos=ignore_eos)
    records = []
    for b in backends:
        records.append(_one_backend(ckpt, b, ids, opts, err, quiet, stream=format == "table"))

    # --- output ---------------------------------------------------------------------------
    from profilers import export

    out = Console(highlight=False, soft_wrap=True)
    if format == "table":
        render.print_tables(out, records)
    elif format == "md":
        sys.stdout.write(render.markdown(records))
    elif format == "json":
        sys.stdout.write(export.to_json(records) + "\n")
    else:
        sys.stdout.write(export.summary_csv(records))
    if csv_file is not None:
        export.atomic_write(csv_file, export.events_csv(records))
        if not quiet:
            err.print(f"[dim]wrote {csv_file} (one row per op event)[/]")
    if trace_file is not None:
        export.atomic_write(trace_file, export.chrome_trace(records))
        if not quiet:
            err.print(f"[dim]wrote {trace_file} (open it in https://ui.perfetto.dev)[/]")


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _one_backend(ckpt, backend, ids, opts, err, quiet, stream):
    import gc

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from engines.tokenizer import StreamDecoder

    from .runner import profile_run

    decoder = StreamDecoder(ckpt.tokenizer) if ckpt.tokenizer is not None else None
    text_out = sys.stdout if stream else sys.stderr
    if quiet:
        rec = profile_run(ckpt, backend, ids, opts)
    else:
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=err, transient=True)
        state = {"task": None, "started": False}

        def on_phase(msg):
            if state["task"] is None:
                progress.start()
                state["task"] = progress.add_task(f"{backend}: {msg}", total=None)
            else:
                progress.update(state["task"], description=f"{backend}: {msg}", total=None, completed=0)
            if msg == "generating":
                progress.stop()

        def on_load(done, total):
            progress.update(state["task"], total=total, completed=done)

        def on_token(tok):
            if not state["started"]:
                state["started"] = True
                text_out.write(f"[{backend}] ")
            piece = decoder.push(tok) if decoder else f"{tok} "
            text_out.write(piece)
            text_out.flush()

        try:
            rec = profile_run(ckpt, backend, ids, opts, on_token=on_token, on_phase=on_phase, progress=on_load)
        finally:
            progress.stop()
        if decoder:
            text_out.write(decoder.flush())
        text_out.write("\n")
        text_out.flush()
    gc.collect()
    return rec
