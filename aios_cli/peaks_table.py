"""The table of this machine's measured peaks, as `aios compare peak` and `aios info` print it."""

from __future__ import annotations


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
    for note in pk.notes:
        console.print(f"note: {note}")
