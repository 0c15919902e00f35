"""`aios compare`: scalar vs SIMD vs BLAS vs GPU on dot and matmul, parallel prefill vs
sequential decode, and this machine's measured peaks."""


import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import fail, guarded

app = typer.Typer(help="Measure scalar vs SIMD vs BLAS vs GPU, and prefill vs decode, on this machine.",
                  no_args_is_help=True)

FORMATS = ("table", "csv", "json", "md")
MAX_SIZE = {"dot": 200_000_000, "matmul": 8192}
DEFAULT_SIZE = {"dot": "10000", "matmul": "512"}

# One source of truth for `compare dot|matmul` rows (CSV and JSON alike).
RESULT_COLUMNS = (
    "run_id", "host", "cpu", "gpu", "op", "size", "backend", "status", "detail", "median_s", "min_s", "max_s",
    "repeats", "scaled", "measured_fraction", "with_transfer_median_s", "with_transfer_min_s",
    "with_transfer_max_s", "transfer_share", "jit_s", "flops", "bytes", "gflops_per_s", "gbytes_per_s",
    "speedup_vs_scalar", "pct_of_peak", "peak_kind", "max_rel_error", "winner", "crossover",
    "repeat", "scalar_budget_s", "seed", "peak_cpu_bandwidth_bytes_per_s", "peak_cpu_flops",
)
PASSES_COLUMNS = (
    "run_id", "host", "cpu", "backend", "model", "dtype", "tokens", "mode", "forward_passes", "median_s", "min_s",
    "max_s", "repeats", "tokens_per_s", "reduction_barriers", "barriers_per_pass", "weight_bytes_read",
    "slowdown_vs_parallel",
)


def parse_sizes(s: str, op: str) -> list[int]:
    out = []
    for part in s.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = float(part)
        except ValueError:
            fail(f"--sizes must be numbers like 1e4,512, got {part!r}")
        if v != int(v) or v < 1 or v > MAX_SIZE[op]:
            fail(f"--sizes: {part} is not a whole number in 1..{MAX_SIZE[op]:,} — pick sizes in that range")
        out.append(int(v))
    if not out:
        fail("--sizes is empty — e.g. --sizes 1e3,1e4,1e5")
    return sorted(set(out))


def _common_checks(format: str, csv_file: Optional[Path]) -> None:
    if format not in FORMATS:
        fail(f"unknown --format {format!r} — choose from: {', '.join(FORMATS)}")
    if csv_file is not None:
        from profilers.files import check_writable

        why = check_writable(csv_file)
        if why:
            fail(f"--csv {csv_file}: {why} — pick a writable path")


def _csv(rows: list[dict], columns) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return buf.getvalue()


# --- dot / matmul ---------------------------------------------------------------------------

def _kernels(op: str, sizes: Optional[str], backends: Optional[str], repeat: int, scalar_budget: float,
             format: str, csv_file: Optional[Path], seed: int, quiet: bool) -> None:
    from rich.console import Console

    from profilers import compare as C
    from profilers import peaks as P
    from profilers.export import machine_fields

    _common_checks(format, csv_file)
    if repeat < 1:
        fail(f"--repeat must be positive, got {repeat}")
    if scalar_budget <= 0:
        fail(f"--scalar-budget must be positive seconds, got {scalar_budget}")
    chosen = C.ALL_BACKENDS
    if backends:
        chosen = tuple(b.strip() for b in backends.split(",") if b.strip())
        bad = [b for b in chosen if b not in C.ALL_BACKENDS]
        if bad or not chosen:
            fail(f"unknown backend {bad[0] if bad else '(none)'!r} — choose from: {', '.join(C.ALL_BACKENDS)}")
    size_list = parse_sizes(sizes or DEFAULT_SIZE[op], op)
    err = Console(stderr=True, highlight=False)
    cfg = C.CompareConfig(repeat=repeat, scalar_budget_s=scalar_budget, backends=chosen, seed=seed)
    status = err.status("", spinner="dots") if not quiet else None
    if status:
        status.start()

    def progress(msg):
        if status:
            status.update(msg)

    try:
        peaks = P.get(progress=lambda m: progress(f"measuring this machine's peaks (cached after): {m}"))
        results = C.run_compare(op, size_list, cfg, peaks, progress)
    finally:
        if status:
            status.stop()
    reason = C.cuda_unavailable_reason() if "cuda" in chosen else "not requested"
    win = C.winners(results)
    cross = C.crossover(results, reason) if "cuda" in chosen and "simd" in chosen else "n/a (compare with both cuda and simd)"
    why = C.why_line(results, None if "cuda" not in chosen else reason)
    run_id = __import__("aios_cli.runner", fromlist=["new_run_id"]).new_run_id(f"compare-{op}")
    m = machine_fields()
    rows = []
    for r in results:
        d = r.to_dict()
        d.update(run_id=run_id, gpu=peaks.machine.get("gpu"), winner=win.get(r.size), crossover=cross,
                 repeat=repeat, scalar_budget_s=scalar_budget, seed=seed,
                 peak_cpu_bandwidth_bytes_per_s=peaks.cpu_bandwidth.median, peak_cpu_flops=peaks.cpu_flops.median, **m)
        rows.append(d)
    if format == "json":
        import json

        print(json.dumps({"run_id": run_id, "op": op, "machine": {**m, "gpu": peaks.machine.get("gpu")},
                          "config": {"sizes": size_list, "backends": list(chosen), "repeat": repeat,
                                     "scalar_budget_s": scalar_budget, "seed": seed},
                          "peaks": peaks.to_dict(), "results": rows, "winners": {str(k): v for k, v in win.items()},
                          "crossover": cross, "why": why}, indent=2))
    elif format == "csv":
        sys.stdout.write(_csv(rows, RESULT_COLUMNS))
    elif format == "md":
        sys.stdout.write(_kernels_md(op, results, win, cross, why, peaks))
    else:
        _kernels_table(Console(highlight=False), op, results, win, cross, why, peaks)
    if csv_file is not None:
        from profilers.files import atomic_write

        atomic_write(csv_file, _csv(rows, RESULT_COLUMNS))
        if not quiet:
            err.print(f"[dim]wrote {csv_file} (one row per size x backend)[/]")


def fmt_n(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000:,}M"
    if n >= 10_000 and n % 1_000 == 0:
        return f"{n // 1_000:,}k"
    return f"{n:,}"


def _unit(seconds: float) -> tuple[float, str]:
    return (1.0, "s") if seconds >= 1 else (1e3, "ms") if seconds >= 1e-3 else (1e6, "µs")


def _cells(r, with_transfer: bool) -> list[str]:
    """median | spread | [with transfer] | GFLOP/s | GB/s | vs scalar | % of peak"""
    n = 7 if with_transfer else 6
    if r.status != "ok":
        return [r.status] + [""] * (n - 1)
    k, u = _unit(r.median_s)
    cells = [f"{r.median_s * k:.3g} {u}" + ("*" if r.scaled else ""), f"{r.min_s * k:.3g}–{r.max_s * k:.3g}"]
    if with_transfer:
        cells.append(f"{r.with_transfer_median_s * k:.3g} {u}" if r.with_transfer_median_s else "—")
    cells += [f"{r.gflops_per_s:.3g}", f"{r.gbytes_per_s:.3g}",
              f"{r.speedup_vs_scalar:,.0f}×" if r.speedup_vs_scalar else "",
              f"{r.pct_of_peak:.0f}%" if r.pct_of_peak is not None else ""]
    return cells


def _headers(with_transfer: bool) -> list[str]:
    h = ["backend", "median", "min–max"]
    if with_transfer:
        h.append("+transfer")
    return h + ["GFLOP/s", "GB/s", "×scalar", "%peak"]


def _notes(results) -> list[str]:
    """What the cells cannot hold: why a backend is unavailable or wrong, how a figure was
    scaled, JIT compile time."""
    seen, out = set(), []
    for r in results:
        if r.status in ("unavailable", "wrong", "skipped") or r.scaled:
            what = f"{r.backend}: {r.status if not r.scaled else 'scaled'} ({r.detail})"
            line = what if r.status == "unavailable" else f"n={r.size:,} {what}"
            if line not in seen:
                seen.add(line)
                out.append(line)
        if r.jit_s and ("jit", r.backend) not in seen:
            seen.add(("jit", r.backend))
            out.append(f"{r.backend}: JIT compile / cache load {r.jit_s:.2f} s, before and apart from the timings")
    return out


def _summary_lines(op, win, cross, why, peaks, results=()) -> list[str]:
    lines = list(_notes(results))
    lines += ["winner (★; cuda counted with its transfers): "
              + (", ".join(f"{fmt_n(k)} → {v}" for k, v in win.items()) or "none (no backend was timed)"),
              f"crossover (smallest n where cuda, transfers included, beats simd): {cross}"]
    if why:
        lines.append(f"why: {why}")
    pk = peaks.cpu_bandwidth if op == "dot" else peaks.cpu_flops
    unit = "GB/s (copy, read+write)" if op == "dot" else "GFLOP/s (BLAS sgemm)"
    lines.append(f"%peak: against this machine's measured {pk.median / 1e9:.1f} {unit}"
                 + (" (the GPU's own measured peak for cuda)" if peaks.gpu_bandwidth else "")
                 + f", measured {peaks.measured_at} (`aios compare peak`)"
                 + ("; over 100% means the data sat in cache, which is faster than DRAM" if op == "dot" else ""))
    by = {(r.size, r.backend): r for r in results if r.status == "ok"}
    simd, blas = by.get((10_000_000, "simd")), by.get((512, "blas"))
    if op == "dot" and simd and simd.pct_of_peak is not None:
        lines.append(f"target: simd dot at n = 10M reaches {simd.pct_of_peak:.0f}% of the measured bandwidth (goal ≥ 50%)")
    if op == "matmul" and blas and by.get((512, "simd")):
        share = 100 * by[(512, "simd")].gflops_per_s / blas.gflops_per_s
        lines.append(f"target: simd matmul at n = 512 reaches {share:.0f}% of BLAS's rate in this run (goal ≥ 25%)")
    if any(r.scaled for r in results):
        lines.append("* scaled: a scalar time past --scalar-budget, measured on a subset and scaled up — an estimate, "
                     "not a measurement")
    return lines


def _kernels_table(console, op, results, win, cross, why, peaks) -> None:
    from rich import box
    from rich.table import Table

    xfer = any(r.with_transfer_median_s for r in results)
    what = "dot product of n floats" if op == "dot" else "n×n×n matmul"
    t = Table(title=f"compare {op}: {what}, float32, checked against float64", title_justify="left",
              box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    t.add_column("n", justify="right", no_wrap=True)
    for h in _headers(xfer):
        t.add_column(h, no_wrap=True, justify="left" if h == "backend" else "right")
    for n in sorted({r.size for r in results}):
        rs = [r for r in results if r.size == n]
        for k, r in enumerate(rs):
            name = r.backend + (" ★" if win.get(n) == r.backend else "")
            t.add_row(fmt_n(n) if k == 0 else "", name, *_cells(r, xfer), end_section=k == len(rs) - 1)
    console.print(t)
    for line in _summary_lines(op, win, cross, why, peaks, results):
        console.print(line)


def _kernels_md(op, results, win, cross, why, peaks) -> str:
    xfer = any(r.with_transfer_median_s for r in results)
    hs = ["n"] + _headers(xfer)
    out = ["| " + " | ".join(hs) + " |", "|---:|---|" + "---:|" * (len(hs) - 2)]
    for r in results:
        name = r.backend + (" ★" if win.get(r.size) == r.backend else "")
        out.append(f"| {r.size:,} | {name} | " + " | ".join(_cells(r, xfer)) + " |")
    out.append("")
    out += [f"- {line}" for line in _summary_lines(op, win, cross, why, peaks, results)]
    return "\n".join(out) + "\n"


_SIZES_HELP = {"dot": "Comma list of vector lengths, e.g. 1e3,1e4,1e5,1e6,1e7 (default 10000).",
               "matmul": "Comma list of n for n×n×n, e.g. 64,128,256,512,1024,2048 (default 512)."}


def _make_kernel_command(op: str):
    @guarded
    def command(
        sizes: Annotated[Optional[str], typer.Option("--sizes", "-s", help=_SIZES_HELP[op])] = None,
        backends: Annotated[Optional[str], typer.Option("--backends", "-b", help="Subset of scalar,simd,blas,torch,cuda.")] = None,
        repeat: Annotated[int, typer.Option("--repeat", "-r", help="Timed repeats (median and min–max).")] = 7,
        scalar_budget: Annotated[float, typer.Option("--scalar-budget", help="Seconds the pure-Python loop may take; past it, a measured subset is scaled and labelled 'scaled'.")] = 2.0,
        format: Annotated[str, typer.Option("--format", "-f", help="table, csv, json or md.")] = "table",
        csv_file: Annotated[Optional[Path], typer.Option("--csv", help="Write one row per size × backend to FILE.")] = None,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the random inputs.")] = 0,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    ) -> None:
        _kernels(op, sizes, backends, repeat, scalar_budget, format, csv_file, seed, quiet)

    command.__doc__ = (f"Time a float32 {'dot product' if op == 'dot' else 'matrix multiply'} on scalar, SIMD, BLAS, "
                       "torch and CUDA; find the winner and the GPU crossover.")
    return command


app.command("dot")(_make_kernel_command("dot"))
app.command("matmul")(_make_kernel_command("matmul"))


# --- peak -----------------------------------------------------------------------------------

@app.command("peak")
@guarded
def peak(
    refresh: Annotated[bool, typer.Option("--refresh", help="Measure again instead of showing the cached figures.")] = False,
    format: Annotated[str, typer.Option("--format", "-f", help="table or json.")] = "table",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """This machine's measured peaks: copy bandwidth and matmul FLOP/s (CPU, and GPU if any)."""
    from rich.console import Console

    from profilers import peaks as P

    if format not in ("table", "json"):
        fail(f"unknown --format {format!r} — choose table or json")
    err = Console(stderr=True)
    with err.status("measuring this machine's peaks", spinner="dots") if not quiet else _Null():
        pk = P.get(refresh=refresh)
    if format == "json":
        import json

        print(json.dumps(pk.to_dict(), indent=2))
        return
    print_peaks(Console(highlight=False), pk)


def peak_rows(pk) -> list[tuple[str, str, str]]:
    rows = []
    for name, p in (("CPU memory bandwidth", pk.cpu_bandwidth), ("CPU matmul", pk.cpu_flops),
                    ("GPU memory bandwidth", pk.gpu_bandwidth), ("GPU matmul fp32", pk.gpu_flops_fp32),
                    ("GPU matmul bf16", pk.gpu_flops_bf16)):
        if p is None:
            continue
        scale, unit = (1e9, "GB/s") if p.unit == "B/s" else (1e9, "GFLOP/s") if p.median < 1e12 else (1e12, "TFLOP/s")
        rows.append((name, f"{p.median / scale:,.1f} {unit} (min {p.min / scale:,.1f}, max {p.max / scale:,.1f})", p.how))
    return rows


def print_peaks(console, pk) -> None:
    from rich.table import Table

    t = Table(title=f"measured peaks · {pk.machine.get('cpu')} · measured {pk.measured_at}", title_justify="left")
    t.add_column("peak", no_wrap=True)
    t.add_column("median (spread)", justify="right")
    t.add_column("how")
    for row in peak_rows(pk):
        t.add_row(*row)
    if pk.gpu_bandwidth is None:
        from engines import cuda_status

        t.add_row("GPU", "unavailable", cuda_status()[1])
    console.print(t)


# --- prefill vs decode ------------------------------------------------------------------------

@app.command("prefill-decode")
@guarded
def prefill_decode(
    backend: Annotated[Optional[str], typer.Option("--backend", "-b", help="scalar, simd, cuda or torch (default: cuda with a GPU, else simd).")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="A preset, an HF-format directory or a cached repo id.")] = "tiny",
    tokens: Annotated[str, typer.Option("--tokens", "-t", help="Comma list of N: tokens pushed through both ways.")] = "32",
    repeat: Annotated[int, typer.Option("--repeat", "-r", help="Timed repeats (median and min–max).")] = 3,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="Engine dtype (as in `aios run`).")] = None,
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv, json or md.")] = "table",
    csv_file: Annotated[Optional[Path], typer.Option("--csv", help="Write one row per N × mode to FILE.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """The same N tokens as one parallel pass (training, prefill) and as N one-token passes
    (generation): time, forward passes, reduction barriers and weight bytes read."""
    from rich.console import Console

    from engines import default_backend, engine_class
    from engines.checkpoint import open_model
    from profilers.compare import prefill_vs_decode
    from profilers.export import machine_fields

    from .runner import check_backend, new_run_id

    _common_checks(format, csv_file)
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
    err = Console(stderr=True, highlight=False)
    note = None
    if backend is None:
        backend, why = default_backend()
        note = f"[dim]backend:[/] {backend} [dim]({why})[/]"
    check_backend(backend, dtype)
    with err.status(f"opening {model}", spinner="dots") if not quiet else _Null():
        ckpt = open_model(model)
    if note and not quiet:  # printed once the input is known to be good
        err.print(note)
    limit = ckpt.config.max_position_embeddings
    if max(ns) > limit:
        fail(f"--tokens {max(ns)} exceeds the model's context of {limit} — use smaller N")
    cls = engine_class(backend)
    cls.preflight(ckpt.config, ckpt.name)
    with err.status(f"loading {model} into the {backend} engine", spinner="dots") if not quiet else _Null():
        engine = cls(ckpt, dtype=dtype)
        engine.warmup()
    run_id = new_run_id(f"passes-{backend}")
    m = machine_fields()
    rows = []
    for n in sorted(set(ns)):
        with err.status(f"N={n}: one parallel pass, then {n} sequential passes", spinner="dots") if not quiet else _Null():
            par, seq = prefill_vs_decode(engine, n, repeat)
        for r in (par, seq):
            d = r.to_dict()
            d.update(run_id=run_id, backend=backend, model=ckpt.name, dtype=engine.dtype,
                     slowdown_vs_parallel=r.median_s / par.median_s, **m)
            rows.append(d)
    if format == "json":
        import json

        print(json.dumps({"run_id": run_id, "backend": backend, "model": ckpt.name, "dtype": engine.dtype,
                          "machine": m, "results": rows}, indent=2))
    elif format == "csv":
        sys.stdout.write(_csv(rows, PASSES_COLUMNS))
    elif format == "md":
        sys.stdout.write(_passes_md(rows))
    else:
        _passes_table(Console(highlight=False), rows, backend, ckpt.name, engine.dtype)
    if csv_file is not None:
        from profilers.files import atomic_write

        atomic_write(csv_file, _csv(rows, PASSES_COLUMNS))


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _passes_cells(d) -> list[str]:
    from .render import fmt_bytes

    k, u = _unit(d["median_s"])
    return [f"{d['tokens']:,}", d["mode"], f"{d['forward_passes']:,}", f"{d['median_s'] * k:.3g} {u}",
            f"{d['min_s'] * k:.3g}–{d['max_s'] * k:.3g}", f"{d['tokens_per_s']:,.1f}",
            f"{d['reduction_barriers']:,} ({d['forward_passes']:,}×{d['barriers_per_pass']})",
            fmt_bytes(d["weight_bytes_read"]), f"{d['slowdown_vs_parallel']:.1f}×"]


PASSES_HEADERS = ("N", "mode", "passes", "wall", "min–max", "tok/s", "barriers", "weights", "×par")


def _passes_table(console, rows, backend, model, dtype) -> None:
    from rich import box
    from rich.table import Table

    t = Table(title=f"prefill vs decode · {backend} · {model} · {dtype} (median of repeats)", title_justify="left",
              box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for h in PASSES_HEADERS:
        t.add_column(h, justify="left" if h == "mode" else "right", no_wrap=True)
    for i, d in enumerate(rows):
        t.add_row(*_passes_cells(d), end_section=i % 2 == 1)
    console.print(t)
    console.print("barriers: reduction barriers counted by the profiler from the ops each pass executed; "
                  "weights read = passes × the weight bytes one pass must read (a property of the shapes)")


def _passes_md(rows) -> str:
    out = ["| " + " | ".join(PASSES_HEADERS) + " |", "|" + "---:|" * len(PASSES_HEADERS)]
    out += ["| " + " | ".join(_passes_cells(d)) + " |" for d in rows]
    return "\n".join(out) + "\n"
