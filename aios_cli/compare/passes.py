"""`aios compare prefill-decode`: the same N tokens as one parallel pass and as N one-token
passes, on a real engine."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import fail, guarded
from ..fmt import fmt_bytes, fmt_sig, time_unit
from ..outputs import write
from .common import common_checks, record_fields
from ..request import ThreadsOpt
from profilers.provenance import PROVENANCE_FIELDS
from .. import console

PASSES_COLUMNS = (
    "run_id", "host", "cpu", "backend", "model", "dtype", "weight_format", "bits_per_weight", "tokens", "mode",
    "forward_passes", "median_s", "min_s",
    "max_s", "repeats", "tokens_per_s", "reduction_barriers", "barriers_per_pass", "weight_bytes_read",
    "slowdown_vs_parallel", *PROVENANCE_FIELDS,
)


@guarded
def prefill_decode(
    backend: Annotated[Optional[str], typer.Option("--backend", "-b", help="scalar, simd, cuda or torch (default: cuda with a GPU, else simd).")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="A preset, an HF-format directory or a cached repo id.")] = "tiny",
    tokens: Annotated[str, typer.Option("--tokens", help="Comma list of N: tokens pushed through both ways.")] = "32",
    repeat: Annotated[int, typer.Option("--repeat", "-r", help="Timed repeats (median and min–max).")] = 3,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="Engine dtype (as in `aios run`).")] = None,
    quant: Annotated[Optional[str], typer.Option("--quant", help="Weights as q8_0, q4_0, q4_1 or none (as in `aios run`).", show_default=False)] = None,
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv, json or md.")] = "table",
    csv_file: Annotated[Optional[Path], typer.Option("--csv", help="Write one row per N × mode to FILE.")] = None,
    threads: ThreadsOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """The same N tokens as one parallel pass (training, prefill) and as N one-token passes
    (generation): time, forward passes, reduction barriers and weight bytes read."""
    from engines import check_backend, check_quant, default_backend, engine_class
    from engines.model.sources import open_model
    from profilers.harness import new_run_id
    from profilers.passes import prefill_vs_decode

    plan = common_checks(format, csv_file, threads)
    if repeat < 1:
        fail(f"--repeat must be positive, got {repeat}")
    ns = []
    for part in tokens.split(","):
        try:
            ns.append(int(part))
        except ValueError:
            fail(f"--tokens must be whole numbers like 8,32,128, got {part!r}")
    if not ns or min(ns) < 1:
        fail("--tokens must be positive whole numbers, e.g. 8,32,128")
    err = console.stderr()
    note = None
    if backend is None:
        backend, why = default_backend()
        note = f"backend: {backend} ({why})"
    check_backend(backend, dtype)
    check_quant(backend, quant)
    with err.status(f"opening {model}", spinner="dots") if not quiet else nullcontext():
        ckpt = open_model(model)
    if note and not quiet:  # printed once the input is known to be good
        err.print(note, style="dim")
    said_busy = console.say_busy(err, plan.busy_warning(), quiet)
    limit = ckpt.config.max_position_embeddings
    if max(ns) > limit:
        fail(f"--tokens {max(ns)} exceeds the model's context of {limit} — use smaller N")
    cls = engine_class(backend)
    cls.preflight(ckpt.config, ckpt.name, dtype, quant or ckpt.quant)
    with err.status(f"loading {model} into the {backend} engine", spinner="dots") if not quiet else nullcontext():
        engine = cls(ckpt, dtype=dtype, **({"quant": quant} if quant is not None else {}))
        engine.warmup()
    run_id = new_run_id(f"passes-{backend}")
    rows = []
    for n in sorted(set(ns)):
        with err.status(f"N={n}: one parallel pass, then {n} sequential passes", spinner="dots") if not quiet else nullcontext():
            par, seq = prefill_vs_decode(engine, n, repeat)
        m = record_fields(plan, backend)
        for r in (par, seq):
            d = r.to_dict()
            d.update(run_id=run_id, backend=backend, model=ckpt.name, dtype=engine.dtype,
                     weight_format=engine.weight_format, bits_per_weight=engine.bits_per_weight,
                     slowdown_vs_parallel=r.median_s / par.median_s, **m)
            rows.append(d)
    if format == "json":
        import json

        print(json.dumps({"run_id": run_id, "backend": backend, "model": ckpt.name, "dtype": engine.dtype,
                          "weight_format": engine.weight_format, "bits_per_weight": engine.bits_per_weight,
                          "machine": m, "results": rows}, indent=2))
    elif format == "csv":
        from profilers.export import to_csv

        sys.stdout.write(to_csv(rows, PASSES_COLUMNS))
    elif format == "md":
        sys.stdout.write(_passes_md(rows))
    else:
        _passes_table(console.stdout(), rows, backend, ckpt.name,
                      f"{engine.dtype} · {engine.weight_format} {engine.bits_per_weight:.2f} bits/weight")
    if csv_file is not None:
        from profilers.export import to_csv

        write("--csv", csv_file, to_csv(rows, PASSES_COLUMNS))
    said_busy()


def _passes_cells(d) -> list[str]:
    k, u = time_unit(d["median_s"])
    return [f"{d['tokens']:,}", d["mode"], f"{d['forward_passes']:,}", f"{d['median_s'] * k:.3g} {u}",
            f"{fmt_sig(d['min_s'] * k)}–{fmt_sig(d['max_s'] * k)}", f"{d['tokens_per_s']:,.1f}",
            f"{d['reduction_barriers']:,}",
            fmt_bytes(d["weight_bytes_read"]), f"{d['slowdown_vs_parallel']:.1f}×"]


PASSES_HEADERS = ("N", "mode", "passes", "wall", "min–max", "tok/s", "barriers", "weights", "×par")


def _passes_table(console, rows, backend, model, dtype) -> None:
    from rich import box
    from rich.table import Table

    t = Table(title=f"prefill vs decode · {backend} · {model} · {dtype} (median of repeats)", title_justify="left",
              box=box.SIMPLE_HEAD, pad_edge=False, padding=0)  # the box's own gap: fits 80 columns
    for h in PASSES_HEADERS:
        t.add_column(h, justify="left" if h == "mode" else "right", no_wrap=True)
    for i, d in enumerate(rows):
        t.add_row(*_passes_cells(d), end_section=i % 2 == 1)
    console.print(t)
    per = rows[0]["barriers_per_pass"] if rows else 0
    console.print(f"barriers: reduction barriers counted by the profiler from the ops each pass executed "
                  f"(passes × {per} per pass); weights read = passes × the weight bytes one pass must read, as the "
                  "engine holds them", soft_wrap=True)


def _passes_md(rows) -> str:
    out = ["| " + " | ".join(PASSES_HEADERS) + " |", "|" + "---:|" * len(PASSES_HEADERS)]
    out += ["| " + " | ".join(_passes_cells(d)) + " |" for d in rows]
    return "\n".join(out) + "\n"
