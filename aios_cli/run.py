"""`aios run`: generate on one or more engines and show where the time goes, op by op."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from profilers.threads import quiet_blas_pool

from .errors import guarded, printable
from .outputs import check_format
from .request import DEFAULT_PROMPT, MODEL_PANEL, BackendOpt, GenerateRequest, ModelOpt, PromptIdsOpt, QuantOpt, ThreadsOpt
from .request import SPEC_PANEL, SPECULATE_HELP, DraftMaxOpt, DraftMinOpt, DraftPMinOpt, SpecKOpt
from . import console
from .parallel import DistTimeoutOpt, PpOpt, TpOpt

_SAMPLING = "Sampling"
_OUTPUT = "Output"


@guarded
def run(
    backend: BackendOpt = None,
    model: ModelOpt = "tiny",
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="Engine dtype: scalar float64; simd float32; cuda bfloat16 (default), float16, float32; torch float32 (default), bfloat16, float16.", rich_help_panel=MODEL_PANEL)] = None,
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="Prompt text.", rich_help_panel=MODEL_PANEL)] = DEFAULT_PROMPT,
    prompt_ids: PromptIdsOpt = None,
    threads: ThreadsOpt = None,
    quant: QuantOpt = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-n", help="Tokens to generate.", rich_help_panel=MODEL_PANEL)] = 16,
    ignore_eos: Annotated[bool, typer.Option("--ignore-eos", help="Keep generating past an end-of-sequence token.", rich_help_panel=MODEL_PANEL)] = False,
    greedy: Annotated[bool, typer.Option("--greedy", help="Always take the most likely token (the default unless --temperature > 0).", rich_help_panel=_SAMPLING)] = False,
    temperature: Annotated[float, typer.Option("--temperature", help="Sampling temperature; 0 means greedy.", rich_help_panel=_SAMPLING)] = 0.0,
    top_k: Annotated[int, typer.Option("--top-k", help="Keep the k most likely tokens (0: off).", rich_help_panel=_SAMPLING)] = 0,
    top_p: Annotated[float, typer.Option("--top-p", help="Keep the smallest set with this much probability (1: off).", rich_help_panel=_SAMPLING)] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="Sampler seed: same seed, same tokens.", rich_help_panel=_SAMPLING)] = 0,
    speculate: Annotated[Optional[str], typer.Option("--speculate", help=SPECULATE_HELP, rich_help_panel=SPEC_PANEL, show_default=False)] = None,
    spec_k: SpecKOpt = 4,
    draft_max: DraftMaxOpt = None,
    draft_min: DraftMinOpt = 0,
    draft_p_min: DraftPMinOpt = 0.0,
    baseline: Annotated[bool, typer.Option("--baseline/--no-baseline", help="After a speculative run, the same run without it, for the speed-up (once, not interleaved: aios bench spec interleaves).", rich_help_panel=SPEC_PANEL)] = True,
    tp: TpOpt = 1,
    pp: PpOpt = 1,
    dist_timeout: DistTimeoutOpt = 300.0,
    profile: Annotated[str, typer.Option("--profile", help="op: time every op; token: time tokens, count ops; none: time tokens only.", rich_help_panel=_OUTPUT)] = "op",
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv (summary row per backend), json or md.", rich_help_panel=_OUTPUT)] = "table",
    csv_file: Annotated[Optional[Path], typer.Option("--csv", help="Write one tidy row per op event to FILE.", rich_help_panel=_OUTPUT)] = None,
    trace_file: Annotated[Optional[Path], typer.Option("--trace", help="Write a Chrome trace-event JSON (opens in Perfetto) to FILE.", rich_help_panel=_OUTPUT)] = None,
    warmup: Annotated[bool, typer.Option("--warmup/--no-warmup", help="Run an untimed warm-up first (JIT, caches).", rich_help_panel=_OUTPUT)] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or streamed text; only the result.", rich_help_panel=_OUTPUT)] = False,
) -> None:
    """Generate text and profile every op of the forward pass, per layer and per token."""
    quiet_blas_pool()
    req = GenerateRequest(backend=backend, model=model, dtype=dtype, prompts=[prompt], prompt_ids=prompt_ids,
                          max_new_tokens=max_new_tokens, profile=profile, ignore_eos=ignore_eos, warmup=warmup,
                          greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                          threads=threads, quant=quant, speculate=speculate, spec_k=spec_k, draft_max=draft_max,
                          draft_min=draft_min, draft_p_min=draft_p_min, spec_baseline=baseline,
                          outputs={"--csv": csv_file, "--trace": trace_file},
                          op_outputs=("--csv",))
    from .parallel import check_layout, run_distributed

    layout = check_layout(tp, pp, dist_timeout)
    if layout is not None:
        run_distributed(req, layout, dist_timeout, format, csv_file, trace_file, quiet)
        return
    _run(req, format, csv_file, trace_file, quiet)


def _run(req: GenerateRequest, format: str, csv_file: Path | None, trace_file: Path | None, quiet: bool) -> None:
    err = console.stderr()
    check_format(format)
    backends, chosen_why = req.check()
    status = (lambda msg: err.status(msg, spinner="dots")) if not quiet else None
    ckpt, [(_, ids)] = req.open(backends, status)
    # only once the input is known to be good: a bad input gets one line
    if chosen_why and not quiet:
        err.print(f"backend: {backends[0]} ({chosen_why}; pick one with --backend)", style="dim")
    if not quiet:
        for note in req.notes(ckpt):
            err.print(note, style="dim", soft_wrap=True)
    said_busy = console.say_busy(err, req.thread_plan.busy_warning(), quiet)
    opts = req.run_options()
    records = [_one_backend(ckpt, b, ids, opts, err, quiet, stream=format == "table") for b in backends]

    from .outputs import emit_records

    emit_records(records, format, csv_file, trace_file, quiet, err, streamed=not quiet)
    said_busy()


def _one_backend(ckpt, backend, ids, opts, err, quiet, stream):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from engines.model.tokenizer import StreamDecoder
    from profilers.harness import start_run

    if quiet:
        run = start_run(ckpt, backend, ids, opts)
        for _ in run:
            pass
        return _with_baseline(run, ckpt, backend, ids, opts, None)
    decoder = StreamDecoder(ckpt.tokenizer) if ckpt.tokenizer is not None else None
    text_out = sys.stdout if stream else sys.stderr
    # a vocabulary may hold escape sequences: on a terminal, generated text is shown, not obeyed
    shown = (lambda s: printable(s, keep="\n\t")) if text_out.isatty() else (lambda s: s)
    progress = Progress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err, transient=True)
    state = {"task": None}

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

    try:
        run = start_run(ckpt, backend, ids, opts, on_phase=on_phase, progress=on_load)
    finally:
        progress.stop()
    text_out.write(f"[{backend}] ")
    for _, tokens in run:
        for token in tokens:
            text_out.write(shown(decoder.push(token)) if decoder else f"{token} ")
        text_out.flush()
    if decoder:
        text_out.write(shown(decoder.flush()))
    text_out.write("\n")
    text_out.flush()
    return _with_baseline(run, ckpt, backend, ids, opts, err)


def _with_baseline(run, ckpt, backend, ids, opts, err):
    """The run's record; after a speculative run, with the same run without speculation
    measured on the same engine (--baseline, the default)."""
    import gc

    from profilers.harness import add_baseline

    rec = run.record()
    if opts.speculate and opts.spec_baseline:
        if err is not None:
            with err.status(f"{backend}: the same run without speculation, for the speed-up", spinner="dots"):
                add_baseline(rec, ckpt, backend, ids, opts, run.engine)
        else:
            add_baseline(rec, ckpt, backend, ids, opts, run.engine)
    gc.collect()
    return rec
