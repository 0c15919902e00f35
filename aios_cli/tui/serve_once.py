"""`aios top --serve --once`: one round of the workload, then the serving panels printed as text."""

from __future__ import annotations

import sys

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

from .. import console
from . import panels, serve_panels


def report(v, cpus, gpu, width: int, peak=None) -> Group:
    """The panels of the view `v` (the end of the round); the batch and the KV map as they were
    at `peak`, the busiest step, where given."""
    def box(title, body):
        return Panel(body, title=title, title_align="left", border_style="blue", padding=(0, 1))

    inner = width - 4
    L = len(v.layer_rows)
    kv_rows = max(1, -(-v.num_blocks // max(1, inner)))
    busy = peak or v
    at = f" at step {busy.steps - 1}, the busiest" if peak is not None else ""
    parts = [serve_panels.status_line(v, wrap=True), Panel(v.workload, border_style="dim", padding=(0, 1)),
             box(f"batch · queue{at}", serve_panels.batch_panel(busy, inner, min(len(busy.running), 16) + 2)),
             box(f"KV blocks{at}", serve_panels.kv_map_panel(busy, inner, min(kv_rows, 12) + 2)),
             box("layers · batched step", serve_panels.step_layers_panel(v, "time", inner, min(L, 32) + 3))]
    side = [("throughput", serve_panels.throughput_panel(v, inner if width < 140 else (width - 2) // 2 - 4, 7)),
            ("latency", serve_panels.latency_panel(v, inner if width < 140 else (width - 2) // 2 - 4, 10))]
    if width >= 140:
        grid = Table.grid(expand=True)
        grid.add_column(ratio=1)
        grid.add_column(ratio=1)
        grid.add_row(box(*side[0]), box(*side[1]))
        parts.append(grid)
    else:
        parts += [box(*s) for s in side]
    parts.append(box("system", panels.system_panel(cpus, gpu, inner, len(cpus) + 2, None, v.backend)))
    return Group(*parts)


def run_once(session, err: Console, csv_file=None) -> None:
    import psutil

    from .engines import engine_gpu

    psutil.cpu_percent(percpu=True)
    with err.status("starting", spinner="dots") as status:
        session.run_once(on_phase=status.update)
    cpus = psutil.cpu_percent(percpu=True)
    out = console.stdout(panels=True)
    out.print(report(session.view(), cpus, engine_gpu(session.engine), out.width, session.peak))
    r = session.rounds[-1] if session.rounds else None
    if r is not None:
        err.print(f"round 1: {r['requests']} requests, {r['output_tokens']} output tokens in {r['duration_s']:.1f} s = "
                  f"{r['output_tokens_per_s']:.1f} output tok/s (aios bench throughput reports this workload in full)",
                  style="dim", soft_wrap=True)
    if csv_file is not None:
        from ..outputs import write

        text, rows = session.requests_csv()
        write("--csv", csv_file, text)
        err.print(f"wrote {csv_file} ({rows} requests)", style="dim", soft_wrap=True)
    sys.stdout.flush()
