"""`aios compare dot|matmul`: the command, and its tables and prose."""
# No `from __future__ import annotations` here: the option annotations of `make_command` read
# its closure variable `op`, which a postponed (string) annotation could not see.

import math
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import fail, guarded
from ..fmt import fmt_bytes, fmt_n, fmt_ratio, fmt_sig, fmt_t, time_unit
from ..outputs import write
from .common import common_checks, record_fields
from ..request import ThreadsOpt
from .. import console
from profilers.provenance import PROVENANCE_FIELDS

MAX_SIZE = {"dot": 200_000_000, "matmul": 8192}
DEFAULT_SIZE = {"dot": "10000", "matmul": "512"}

# One source of truth for `compare dot|matmul` rows (CSV and JSON alike).
RESULT_COLUMNS = (
    "run_id", "host", "cpu", "gpu", "op", "size", "backend", "status", "detail", "median_s", "min_s", "max_s",
    "repeats", "scaled", "measured_fraction", "with_transfer_median_s", "with_transfer_min_s",
    "with_transfer_max_s", "transfer_share", "jit_s", "flops", "bytes", "gflops_per_s", "gbytes_per_s",
    "speedup_vs_scalar", "pct_of_peak", "peak_kind", "max_rel_error", "winner", "crossover",
    "repeat", "scalar_budget_s", "seed", "peak_cpu_bandwidth_bytes_per_s", "peak_cpu_flops", *PROVENANCE_FIELDS,
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
        if not math.isfinite(v) or v != int(v) or v < 1 or v > MAX_SIZE[op]:
            fail(f"--sizes: {part} is not a whole number in 1..{MAX_SIZE[op]:,} — pick sizes in that range")
        out.append(int(v))
    if not out:
        fail("--sizes is empty — e.g. --sizes 1e3,1e4,1e5")
    return sorted(set(out))


def _kernels(op: str, sizes: Optional[str], backends: Optional[str], repeat: int, scalar_budget: float,
             format: str, csv_file: Optional[Path], seed: int, quiet: bool, threads: Optional[int]) -> None:
    from profilers import peaks as P
    from profilers.bench import kernels as C
    from profilers.harness import new_run_id

    plan = common_checks(format, csv_file, threads)
    if seed < 0:
        fail(f"--seed must be 0 or more, got {seed} — e.g. --seed 1")
    if repeat < 1:
        fail(f"--repeat must be positive, got {repeat}")
    if not (math.isfinite(scalar_budget) and scalar_budget > 0):
        fail(f"--scalar-budget must be positive seconds, got {scalar_budget}")
    chosen = C.ALL_BACKENDS
    if backends:
        chosen = tuple(b.strip() for b in backends.split(",") if b.strip())
        bad = [b for b in chosen if b not in C.ALL_BACKENDS]
        if bad or not chosen:
            fail(f"unknown backend {bad[0] if bad else '(none)'!r} — choose from: {', '.join(C.ALL_BACKENDS)}")
    size_list = parse_sizes(sizes or DEFAULT_SIZE[op], op)
    err = console.stderr()
    said_busy = console.say_busy(err, plan.busy_warning(), quiet)
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
    why = why_line(results, None if "cuda" not in chosen else reason)
    run_id = new_run_id(f"compare-{op}")
    m = record_fields(plan)
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
        from profilers.export import to_csv

        sys.stdout.write(to_csv(rows, RESULT_COLUMNS))
    elif format == "md":
        sys.stdout.write(_kernels_md(op, results, win, cross, why, peaks))
    else:
        _kernels_table(console.stdout(), op, results, win, cross, why, peaks)
    if csv_file is not None:
        from profilers.export import to_csv

        write("--csv", csv_file, to_csv(rows, RESULT_COLUMNS))
        if not quiet:
            err.print(f"wrote {csv_file} (one row per size x backend)", style="dim", soft_wrap=True)
    said_busy()


def _cells(r, with_transfer: bool) -> list[str]:
    """median | spread | [with transfer] | GFLOP/s | GB/s | vs scalar | % of peak"""
    n = 7 if with_transfer else 6
    if r.status != "ok":
        return [r.status] + [""] * (n - 1)
    k, u = time_unit(r.median_s)
    cells = [f"{fmt_sig(r.median_s * k)} {u}" + ("*" if r.scaled else ""),
             f"{fmt_sig(r.min_s * k)}–{fmt_sig(r.max_s * k)}"]
    if with_transfer:
        cells.append(f"{r.with_transfer_median_s * k:.3g} {u}" if r.with_transfer_median_s else "—")
    cells += [f"{r.gflops_per_s:.3g}", f"{r.gbytes_per_s:.3g}",
              fmt_ratio(r.speedup_vs_scalar) if r.speedup_vs_scalar else "",
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
                 + f", measured {peaks.measured_at} (`aios compare peak`)")
    if peaks.measured_busy:
        lines.append(f"%peak: the peaks were measured while other processes used {peaks.busy_cpus:.1f} CPUs, so "
                     "they may read low — `aios compare peak --refresh` on an idle machine")
    over = [r for r in results if r.pct_of_peak is not None and r.pct_of_peak > 100 and r.backend != "cuda"]
    if over:
        l3 = l3_cache_bytes()
        cached = [r for r in over if l3 and r.bytes <= l3]
        if cached:
            lines.append(f"%peak over 100% at n={fmt_n(max(r.size for r in cached))} and below: the inputs "
                         f"({fmt_bytes(max(r.bytes for r in cached))}) fit in the {fmt_bytes(l3)} L3 cache, which is "
                         "faster than the DRAM the peak measures")
        if len(cached) < len(over):
            lines.append("%peak over 100% on inputs larger than the L3 cache: the peak itself read low (a busy "
                         "machine when it was measured?) — `aios compare peak --refresh`")
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


def make_command(op: str):
    @guarded
    def command(
        sizes: Annotated[Optional[str], typer.Option("--sizes", "-s", help=_SIZES_HELP[op])] = None,
        backends: Annotated[Optional[str], typer.Option("--backend", "--backends", "-b", help="Comma list, a subset of scalar,simd,blas,torch,cuda (default: all).")] = None,
        repeat: Annotated[int, typer.Option("--repeat", "-r", help="Timed repeats (median and min–max).")] = 7,
        scalar_budget: Annotated[float, typer.Option("--scalar-budget", help="Seconds the pure-Python loop may take; past it, a measured subset is scaled and labelled 'scaled'.")] = 2.0,
        format: Annotated[str, typer.Option("--format", "-f", help="table, csv, json or md.")] = "table",
        csv_file: Annotated[Optional[Path], typer.Option("--csv", help="Write one row per size × backend to FILE.")] = None,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the random inputs.")] = 0,
        threads: ThreadsOpt = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    ) -> None:
        _kernels(op, sizes, backends, repeat, scalar_budget, format, csv_file, seed, quiet, threads)

    command.__doc__ = (f"Time a float32 {'dot product' if op == 'dot' else 'matrix multiply'} on scalar, SIMD, BLAS, "
                       "torch and CUDA; find the winner and the GPU crossover.")
    return command


def l3_cache_bytes() -> int | None:
    """The largest CPU cache (L3 where there is one), from sysfs; None when it cannot be read."""
    import glob

    sizes = []
    for path in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        try:
            text = Path(path).read_text().strip().upper()
            sizes.append(int(text[:-1]) * {"K": 1 << 10, "M": 1 << 20}[text[-1]] if text[-1] in "KM" else int(text))
        except (OSError, ValueError, IndexError):
            continue
    return max(sizes) if sizes else None


def why_line(results, cuda_reason: str | None) -> str:
    """One sentence of why, from the numbers at the largest size."""
    from profilers.bench.check import op_cost

    n = max(r.size for r in results)
    by = {r.backend: r for r in results if r.size == n and r.status == "ok"}
    op = results[0].op
    s, g, b = by.get("simd"), by.get("cuda"), by.get("blas")
    if g and s and g.with_transfer_median_s:
        xfer = g.with_transfer_median_s - g.median_s
        return (f"at {n:,}: the GPU computes in {fmt_t(g.median_s)} but moving the data costs {fmt_t(xfer)} "
                f"({100 * g.transfer_share:.0f}% of its {fmt_t(g.with_transfer_median_s)}), against SIMD's "
                f"{fmt_t(s.median_s)} with no transfer")
    if s and b:
        ai = op_cost(op, n)[0] / op_cost(op, n)[1]
        kind = "memory-bound" if ai < 4 else "compute-bound"
        return (f"at {n:,}: {ai:.2f} FLOP per byte makes this {kind}; SIMD reaches "
                f"{s.gbytes_per_s if ai < 4 else s.gflops_per_s:.1f} {'GB/s' if ai < 4 else 'GFLOP/s'} against "
                f"BLAS's {b.gbytes_per_s if ai < 4 else b.gflops_per_s:.1f}")
    return ""
