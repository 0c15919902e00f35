"""`aios bench latency`: batch-1 prefill and decode over a grid, repeated, one row each."""

from __future__ import annotations

import itertools
from typing import Annotated, Optional

import typer

from ..errors import fail, guarded
from ..outputs import check_format, print_rows
from ..grid import parse_list
from .. import console

FORMATS = ("table", "md", "csv", "json", "jsonl")
_GRID = "Grid (comma lists: every combination runs)"
_OUT = "Output"

# The configuration first, then the statistics, then what made the row (as llama-bench's rows
# carry their build), so files from several machines can be concatenated.
CONFIG_COLUMNS = ("model", "arch", "num_params", "backend", "dtype", "device", "threads", "n_prompt", "n_gen",
                  "repetitions")
STAT_COLUMNS = ("ttft_ms_mean", "ttft_ms_sd", "prefill_tokens_per_s_mean", "prefill_tokens_per_s_sd",
                "decode_tokens_per_s_mean", "decode_tokens_per_s_sd", "load_s", "jit_s")
SAMPLE_COLUMNS = ("samples_ttft_ms", "samples_prefill_tokens_per_s", "samples_decode_tokens_per_s")


def latency_columns() -> tuple[str, ...]:
    from profilers.record import PROVENANCE_FIELDS

    rest = tuple(f for f in PROVENANCE_FIELDS if f != "threads")
    return ("run_id", "started_at", "host", "cpu", *CONFIG_COLUMNS, *STAT_COLUMNS, *SAMPLE_COLUMNS, *rest)


@guarded
def latency(
    model: Annotated[str, typer.Option("--model", "-m", help="Presets, HF-format directories or cached repo ids.", rich_help_panel=_GRID)] = "tiny",
    backend: Annotated[Optional[str], typer.Option("--backend", "-b", help="scalar, simd, cuda, torch. Default: cuda with a usable GPU, else simd.", rich_help_panel=_GRID)] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="Engine dtypes (default: each engine's own; see `aios run --help`).", rich_help_panel=_GRID)] = None,
    n_prompt: Annotated[str, typer.Option("--n-prompt", "-p", help="Prompt lengths in tokens (random ids from a fixed seed).", rich_help_panel=_GRID)] = "32",
    n_gen: Annotated[str, typer.Option("--n-gen", "-n", help="Decode passes timed after each prompt.", rich_help_panel=_GRID)] = "16",
    threads: Annotated[Optional[str], typer.Option("--threads", "-t", help="Threads for every pool (Numba, BLAS, torch). Default: the usable CPUs less those other processes keep busy.", rich_help_panel=_GRID, show_default=False)] = None,
    repetitions: Annotated[int, typer.Option("--repetitions", "-r", help="Timed repetitions of each combination (mean ± sd).", rich_help_panel=_OUT)] = 5,
    format: Annotated[str, typer.Option("--format", "-f", help="table, md, csv, json or jsonl.", rich_help_panel=_OUT)] = "table",
    warmup: Annotated[bool, typer.Option("--warmup/--no-warmup", help="An untimed generation of each combination first.", rich_help_panel=_OUT)] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.", rich_help_panel=_OUT)] = False,
) -> None:
    """Batch-1 latency: TTFT, prefill and decode tokens/s over every combination of the grid,
    repeated, one row per combination (llama-bench's -r, -p, -n, -t; vLLM's bench latency)."""
    from engines import BACKENDS, check_backend, default_backend
    from profilers.threads import MAX_THREADS

    from engines.errors import UserError
    from profilers.threads import check_threads

    check_format(format, FORMATS)
    if not 1 <= repetitions <= 100_000:
        fail(f"--repetitions must be between 1 and 100,000, got {repetitions}")
    try:
        check_threads(None)
    except UserError as e:
        fail(str(e))
    models = parse_list(model, "--model", str)
    backends = parse_list(backend, "--backend", str) if backend is not None else None
    dtypes = parse_list(dtype, "--dtype", str) if dtype is not None else [None]
    prompts = parse_list(n_prompt, "--n-prompt")
    gens = parse_list(n_gen, "--n-gen")
    thread_list = parse_list(threads, "--threads") if threads is not None else None
    if thread_list and max(thread_list) > MAX_THREADS:
        fail(f"--threads must be between 1 and {MAX_THREADS}, got {max(thread_list)}")
    note = None
    if backends is None:
        chosen, why = default_backend()
        backends, note = [chosen], f"backend: {chosen} ({why}; pick with --backend)"
    for b in backends:
        if b not in BACKENDS:
            fail(f"unknown backend {b!r} — choose from: {', '.join(BACKENDS)}")
        for d in dtypes:
            if d is not None and d not in BACKENDS[b].dtypes:
                fail(f"the {b} engine does not run {d} — every --backend × --dtype pair runs, so pass "
                     f"dtypes that all of {', '.join(backends)} run, or one backend at a time")
        check_backend(b, None)

    from profilers.threads import setup

    # pools started at the largest count asked for; each case then sets its own
    plan = setup(max(thread_list) if thread_list else None)
    thread_list = thread_list or [plan.threads]
    err = console.stderr()
    ckpts = _open_models(models, backends, max(prompts) + max(gens) + 1, err, quiet)
    if note and not quiet:
        err.print(note, style="dim", soft_wrap=True)
    said_busy = console.say_busy(err, plan.busy_warning(), quiet)

    from profilers.latency import LatencyCase, describe, run_grid

    cases = [LatencyCase(m, b, d, t, p, g) for m, b, d, t, p, g in
             itertools.product(models, backends, dtypes, thread_list, prompts, gens)]
    results = _run(ckpts, cases, repetitions, plan, warmup, err, quiet, describe, run_grid)
    rows = _rows(results)
    _print(rows, format)
    said_busy()


def _open_models(models, backends, tokens, err, quiet):
    from contextlib import nullcontext

    from engines import engine_class
    from engines.model.sources import open_model
    from engines.errors import UserError

    ckpts = {}
    for m in models:
        with err.status(f"opening {m}", spinner="dots") if not quiet else nullcontext():
            ckpt = open_model(m)
        limit = ckpt.config.max_position_embeddings
        if tokens > limit:  # the longest prompt, its first token and its decode passes must fit
            raise UserError(f"the longest --n-prompt + --n-gen + 1 ({tokens} positions) exceed the model's context of "
                            f"{limit}", "pass shorter prompts or fewer decode passes")
        for b in backends:
            engine_class(b).preflight(ckpt.config, ckpt.name, None, ckpt.quant)
        ckpts[m] = ckpt
    return ckpts


def _run(ckpts, cases, repetitions, plan, warmup, err, quiet, describe, run_grid):
    if quiet:
        return run_grid(ckpts, cases, repetitions, plan, warmup)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err, transient=True)
    with progress:
        task = progress.add_task("preparing", total=len(cases) * repetitions)

        def on_rep(case, rep):
            progress.update(task, description=f"rep {rep + 1}/{repetitions}: {describe(case)}",
                            completed=rep * len(cases) + cases.index(case))

        results = run_grid(ckpts, cases, repetitions, plan, warmup,
                           on_phase=lambda msg: progress.update(task, description=msg), on_rep=on_rep)
        progress.update(task, completed=len(cases) * repetitions)
    return results


def _rows(results) -> list[dict]:
    import time

    from profilers.export import machine_fields
    from profilers.harness import new_run_id

    run_id, started = new_run_id("bench-latency"), time.strftime("%Y-%m-%dT%H:%M:%S")
    return [{"run_id": run_id, "started_at": started, **machine_fields(), **r.row()} for r in results]


def _print(rows: list[dict], format: str) -> None:
    print_rows(rows, latency_columns(), format, markdown, _table)


def pm(mean: float, sd: float, digits: int = 2) -> str:
    """`123.45 ± 6.78`: the mean and the sample standard deviation over the repetitions."""
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


_HEAD = ("model", "backend", "dtype", "threads", "test", "TTFT ms", "prefill tok/s", "decode tok/s")
_KEYS = ("model", "backend", "dtype", "threads", "test")


def _cells(r: dict) -> dict[str, str]:
    return {"model": r["model"], "backend": r["backend"], "dtype": r["dtype"], "threads": str(r["threads"]),
            "test": f"pp{r['n_prompt']} tg{r['n_gen']}", "TTFT ms": pm(r["ttft_ms_mean"], r["ttft_ms_sd"]),
            "prefill tok/s": pm(r["prefill_tokens_per_s_mean"], r["prefill_tokens_per_s_sd"], 1),
            "decode tok/s": pm(r["decode_tokens_per_s_mean"], r["decode_tokens_per_s_sd"], 1)}


def _split(rows: list[dict]) -> tuple[list[str], str]:
    """The columns that vary over the grid, and the settings every row shares (for the title),
    so the table fits a terminal."""
    cells = [_cells(r) for r in rows]
    same = [k for k in _KEYS if len({c[k] for c in cells}) == 1 and len(rows) > 1]
    shared = " · ".join(f"{k} {cells[0][k]}" if k == "threads" else cells[0][k] for k in same)
    return [h for h in _HEAD if h not in same], shared


def _footer(rows: list[dict]) -> str:
    r = rows[0]
    load = f"; load average {r['load_avg_1m']:.2f} at the start" if r["load_avg_1m"] is not None else ""
    return (f"mean ± sample sd over {r['repetitions']} repetitions, interleaved (each a mean over its decode passes); "
            f"pp = prompt tokens, tg = decode passes timed; aios {r['aios_version']}"
            f"{' (git ' + r['git_commit'] + ')' if r['git_commit'] else ''}, torch {r['torch_version']}, "
            f"numba {r['numba_version']}, python {r['python_version']}; "
            f"{'; '.join(dict.fromkeys(x['threading_layer'] for x in rows))}{load}")


def markdown(rows: list[dict]) -> str:
    head = list(_HEAD)
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * 5 + "---:|" * (len(head) - 5)]
    out += ["| " + " | ".join(_cells(r)[h] for h in head) + " |" for r in rows]
    return "\n".join(out) + "\n\n" + _footer(rows) + "\n"


def _table(rows: list[dict]) -> None:
    from rich import box
    from rich.table import Table

    head, shared = _split(rows)
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for h in head:
        t.add_column(h, justify="left" if h in ("model", "backend", "dtype", "test") else "right", no_wrap=True)
    for r in rows:
        cells = _cells(r)
        t.add_row(*(cells[h] for h in head))
    c = console.stdout()
    c.print("bench latency · batch 1" + (f" · {shared}" if shared else ""), soft_wrap=True)
    c.print(t)
    c.print(_footer(rows), soft_wrap=True)
