"""`aios compare peak`: this machine's measured peaks, and the table `aios info` shows too."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Annotated

import typer

from ..errors import guarded
from ..outputs import TableOrJson, check_format
from .. import console


@guarded
def peak(
    refresh: Annotated[bool, typer.Option("--refresh", help="Measure again instead of showing the cached figures.")] = False,
    format: TableOrJson = "table",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """This machine's measured peaks: copy bandwidth and matmul FLOP/s (CPU, and GPU if any)."""
    from profilers import peaks as P

    check_format(format, ("table", "json"))
    err = console.stderr()
    with err.status("measuring this machine's peaks", spinner="dots") if not quiet else nullcontext():
        pk = P.get(refresh=refresh)
    if format == "json":
        import json

        print(json.dumps(pk.to_dict(), indent=2))
        return
    print_peaks(console.stdout(), pk)


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
        from engines import backend_status

        t.add_row("GPU", "unavailable", backend_status("cuda")[1])
    console.print(t)
    for note in pk.notes:
        console.print(f"note: {note}")
