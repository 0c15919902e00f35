"""`aios sim attention`: the SRAM/HBM memory simulator for attention (profilers.sim.attention),
over one configuration or a sweep of them."""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Annotated, Optional

import typer

from .. import console
from ..errors import fail, guarded
from ..outputs import check_format

FORMATS = ("table", "csv", "json", "md")
_SHAPE = "Shape"
_HW = "Hardware"
_OUT = "Output"
TRACE_LIMIT = 400  # events printed per algorithm with --trace

_SUFFIX = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 1024, "m": 1e6, "mb": 1e6, "mib": 1024 ** 2, "g": 1e9,
           "gb": 1e9, "gib": 1024 ** 3, "t": 1e12, "tb": 1e12, "tib": 1024 ** 4, "p": 1e15}


def parse_amount(text: str, flag: str, per_s: bool = False) -> float:
    """`192KiB`, `228k`, `1.5e12`, `3.35TB/s`, `989T` -> a number."""
    t = text.strip().lower().replace(" ", "")
    if per_s:
        t = re.sub(r"(/s|flops?|flop/s)$", "", t)
        t = re.sub(r"(/s|flops?|flop/s)$", "", t)
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)([a-z]*)", t)
    if not m or m.group(2) not in _SUFFIX:
        fail(f"{flag} takes a number with an optional unit (e.g. 192KiB, 3.35TB/s, 989T), got {text!r}")
    v = float(m.group(1)) * _SUFFIX[m.group(2)]
    if not v > 0 or math.isinf(v):
        fail(f"{flag} must be positive, got {text!r}")
    return v


def parse_ints(text: str, flag: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        vals = []
    if not vals or any(v < 1 for v in vals):
        fail(f"{flag} takes whole numbers >= 1, comma-separated (e.g. 512,1024,2048), got {text!r}")
    return vals


@guarded
def attention(
    n: Annotated[str, typer.Option("--n", "-n", help="Sequence length N (with --decode: keys in the cache); a comma list sweeps.", rich_help_panel=_SHAPE)] = "1024",
    d: Annotated[str, typer.Option("--d", "-d", help="Head dimension; a comma list sweeps.", rich_help_panel=_SHAPE)] = "64",
    heads: Annotated[int, typer.Option("--heads", help="Attention heads.", rich_help_panel=_SHAPE)] = 16,
    batch: Annotated[int, typer.Option("--batch", help="Sequences.", rich_help_panel=_SHAPE)] = 1,
    causal: Annotated[bool, typer.Option("--causal", help="A causal mask: tiles wholly above the diagonal are skipped (the tiled algorithms).", rich_help_panel=_SHAPE)] = False,
    decode: Annotated[bool, typer.Option("--decode", help="One query row against N keys (a decode step over a KV cache).", rich_help_panel=_SHAPE)] = False,
    dtype: Annotated[str, typer.Option("--dtype", help="Element type of Q, K, V, S, P, O: fp16, bf16 or fp32 (statistics are fp32).", rich_help_panel=_SHAPE)] = "fp16",
    algo: Annotated[str, typer.Option("--algo", help="standard, tiled-1d, tiled-2d, flash, flash-decode, or all (a comma list picks several).", rich_help_panel=_SHAPE)] = "all",
    gpu: Annotated[str, typer.Option("--gpu", help="a100, h100, h200, rtx4090, or cpu (this machine: aios compare peak's measured peaks, L2 per core as SRAM).", rich_help_panel=_HW)] = "a100",
    sram: Annotated[Optional[str], typer.Option("--sram", help="SRAM per SM in bytes (e.g. 192KiB); a comma list sweeps.", rich_help_panel=_HW, show_default=False)] = None,
    bandwidth: Annotated[Optional[str], typer.Option("--bandwidth", help="HBM bandwidth (e.g. 2TB/s).", rich_help_panel=_HW, show_default=False)] = None,
    flops: Annotated[Optional[str], typer.Option("--flops", help="Peak FLOP/s (e.g. 312T).", rich_help_panel=_HW, show_default=False)] = None,
    br: Annotated[Optional[int], typer.Option("--br", help="Row-block size (default: the paper's min(Bc, d)).", rich_help_panel=_HW, show_default=False)] = None,
    bc: Annotated[Optional[int], typer.Option("--bc", help="Column-block size (default: the paper's ceil(M / 4d)).", rich_help_panel=_HW, show_default=False)] = None,
    seed_compat: Annotated[bool, typer.Option("--seed-compat", help="The course's simplified model: one global SRAM pool, overflow free, compute and memory time added.", rich_help_panel=_HW)] = False,
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv, json or md: one row per algorithm x configuration.", rich_help_panel=_OUT)] = "table",
    trace: Annotated[bool, typer.Option("--trace", help="Print each tile load, compute, write and eviction of one head, with what is in SRAM (the first configuration; best with a small --n).", rich_help_panel=_OUT)] = False,
) -> None:
    """Simulate attention on a GPU's memory hierarchy: HBM bytes read and written by tensor,
    peak SRAM, FLOPs, arithmetic intensity, the bound and a roofline time, per algorithm
    (standard, 1-D and 2-D tiling, FlashAttention, flash-decoding)."""
    check_format(format, FORMATS)
    from profilers.sim import attention as A
    from profilers import hardware as H

    if gpu not in H.NAMES:
        fail(f"unknown --gpu {gpu!r} — choose from {', '.join(H.NAMES)}")
    elem = {"fp16": 2, "bf16": 2, "fp32": 4}.get(dtype)
    if elem is None:
        fail(f"unknown --dtype {dtype!r} — choose fp16, bf16 or fp32")
    ns, ds = parse_ints(n, "--n"), parse_ints(d, "--d")
    if heads < 1 or batch < 1:
        fail("--heads and --batch must be 1 or more")
    for flag, v in (("--br", br), ("--bc", bc)):
        if v is not None and v < 1:
            fail(f"{flag} must be 1 or more, got {v}")
    srams = [int(parse_amount(x, "--sram")) for x in sram.split(",")] if sram else [None]
    bw = parse_amount(bandwidth, "--bandwidth", per_s=True) if bandwidth else None
    fl = parse_amount(flops, "--flops", per_s=True) if flops else None
    if algo == "all":
        algos = None
    else:
        algos = [a.strip() for a in algo.split(",") if a.strip()]
        bad = [a for a in algos if a not in A.ALGOS]
        if bad or not algos:
            fail(f"unknown --algo {','.join(bad) or algo!r} — choose from {', '.join(A.ALGOS)} or all")
    base = H.spec(gpu)
    rows, results = [], []
    first_trace = None
    for s_bytes in srams:
        sp = base.with_overrides(sram=s_bytes, bandwidth=bw, flops=fl)
        for dd in ds:
            for nn in ns:
                shape = A.Shape(1 if decode else nn, nn, dd, heads, batch, causal, elem)
                for a in algos or A.default_algos(shape):
                    tr = [] if trace and first_trace is None else None
                    r = A.simulate(a, shape, sp, br, bc, seed_compat, tr)
                    results.append(r)
                    rows.append(r.row())
                    if tr is not None:
                        _print_trace(r, tr)
                if trace:
                    first_trace = True
    if format == "json":
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    elif format == "csv":
        from profilers.export import to_csv

        sys.stdout.write(to_csv(rows, tuple(rows[0])))
    elif format == "md":
        sys.stdout.write(_markdown(results, base))
    else:
        _table(results, base, seed_compat)


def _gb(x: float) -> str:
    if x >= 1e12:
        return f"{x / 1e12:.3g} TB"
    return f"{x / 1e9:.3g} GB" if x >= 1e8 else f"{x / 1e6:.3g} MB" if x >= 1e5 else f"{x / 1e3:.3g} KB"


def _t(s: float) -> str:
    from ..fmt import fmt_time

    return fmt_time(s)


def _by_tensor(r) -> str:
    from profilers.sim.attention import TENSORS

    parts = []
    for t in TENSORS:
        rd, wr = r.reads[t], r.writes[t]
        if rd or wr:
            parts.append(f"{t} {_gb(rd + wr).replace(' ', '')}")
    return " ".join(parts)


def _table(results, base, seed_compat: bool) -> None:
    from rich import box
    from rich.table import Table

    t = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for c, j in (("algo", "left"), ("N", "right"), ("d", "right"), ("HBM read", "right"), ("write", "right"),
                 ("by tensor (read+write)", "left"), ("SRAM peak / per SM", "right"), ("GFLOP", "right"),
                 ("FLOP/B", "right"), ("compute", "right"), ("memory", "right"), ("bound", "left"),
                 ("predicted", "right")):
        t.add_column(c, justify=j, no_wrap=c != "by tensor (read+write)")
    for r in results:
        fit = "" if r.fits else " ✗"
        t.add_row(r.algo, f"{r.shape.nk:,}", str(r.shape.d), _gb(r.hbm_read_bytes), _gb(r.hbm_write_bytes),
                  _by_tensor(r), f"{r.peak_sram_bytes / 1024:.0f}/{r.sram_bytes / 1024:.0f} KiB{fit}",
                  f"{r.flops / 1e9:.3g}", f"{r.intensity:.3g}", _t(r.compute_s), _t(r.memory_s), r.bound,
                  _t(r.predicted_s))
    c = console.stdout()
    r0 = results[0]
    s = r0.shape
    what = "decode: 1 query row" if s.decode else f"{'causal ' if s.causal else ''}prefill"
    c.print(f"sim attention · {base.name} ({base.bandwidth / 1e9:,.0f} GB/s, {base.flops / 1e12:,.3g} "
            f"TFLOP/s, {base.sms} SMs x {r0.sram_bytes // 1024 if not seed_compat else base.sram_per_sm // 1024} KiB) · "
            f"{what} · {s.heads} heads x batch {s.batch} · {s.elem * 8}-bit elements · tiles Br={r0.br} Bc={r0.bc}"
            + (" · seed-compatible model" if seed_compat else ""), soft_wrap=True)
    c.print(t)
    c.print("predicted = " + ("compute + memory (the course's model: no overlap)" if seed_compat else
                              "max(compute, memory): a roofline with overlap, each scaled by the SMs the work can fill")
            + "; ✗: the working set exceeds one SM's SRAM (the overflow is paid in HBM traffic)"
            + f"; figures: {base.source}", style="dim", soft_wrap=True)
    _plot(results, c)


def _plot(results, c) -> None:
    """HBM traffic against N per algorithm, log-scaled bars (only for a sweep over N)."""
    ns = sorted({r.shape.nk for r in results})
    if len(ns) < 2:
        return
    by = {}
    for r in results:
        by.setdefault((r.algo, r.shape.d, r.sram_bytes), {})[r.shape.nk] = r.hbm_bytes
    lo = math.log10(max(1, min(r.hbm_bytes for r in results)))
    hi = math.log10(max(r.hbm_bytes for r in results))
    width = 40
    c.print(f"HBM traffic against N (log scale, {_gb(10 ** lo)} to {_gb(10 ** hi)}):", style="bold")
    for (a, dd, sm), vals in by.items():
        for nn in ns:
            if nn not in vals:
                continue
            v = vals[nn]
            k = int(round((math.log10(max(1, v)) - lo) / ((hi - lo) or 1) * width))
            c.print(f"  {a:<13} d={dd:<4} N={nn:<8,} {'█' * max(1, k):<{width}} {_gb(v)}", soft_wrap=True,
                    highlight=False)


def _markdown(results, base) -> str:
    out = [f"sim attention · {base.name}", "",
           "| algo | N | d | HBM read | HBM write | SRAM peak / per SM | GFLOP | FLOP/B | compute | memory | bound | predicted |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in results:
        out.append(f"| {r.algo} | {r.shape.nk} | {r.shape.d} | {_gb(r.hbm_read_bytes)} | {_gb(r.hbm_write_bytes)} | "
                   f"{r.peak_sram_bytes // 1024}/{r.sram_bytes // 1024} KiB | {r.flops / 1e9:.3g} | {r.intensity:.3g} | "
                   f"{_t(r.compute_s)} | {_t(r.memory_s)} | {r.bound} | {_t(r.predicted_s)} |")
    return "\n".join(out) + "\n"


def _print_trace(r, events) -> None:
    c = console.stdout()
    cap = r.sram_bytes
    c.print(f"trace · {r.algo} · one head, N={r.shape.nk}, d={r.shape.d}, SRAM {cap:,} bytes · {len(events):,} events"
            + (f" (first {TRACE_LIMIT})" if len(events) > TRACE_LIMIT else ""), style="bold", soft_wrap=True)
    for what, name, nbytes, used, resident in events[:TRACE_LIMIT]:
        bar_w = 20
        fill = min(bar_w, int(round(used / cap * bar_w))) if cap else 0
        bar = "█" * fill + "·" * (bar_w - fill)
        amount = f"{nbytes:,.0f} FLOP" if what == "flops" else f"{nbytes:,} B"
        c.print(f"  {what:<17} {name:<28} {amount:>14}  SRAM {bar} {used:>8,} B  [{' '.join(resident)}]",
                soft_wrap=True, highlight=False, markup=False)
