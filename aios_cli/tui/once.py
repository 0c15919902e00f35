"""`aios top --once`: one generation, then the same panels as the live view, printed as text."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

from . import panels
from .engines import engine_gpu
from .. import console


def box(title: str, body) -> Panel:
    """A panel as --once prints it: titled, in a blue frame."""
    return Panel(body, title=title, title_align="left", border_style="blue", padding=(0, 1))


def paired(titled: list[tuple[str, object]], width: int) -> list:
    """Titled panels two a row on a terminal of 140 columns or more, else one under another."""
    if width < 140:
        return [box(*p) for p in titled]
    grid = Table.grid(expand=True)
    grid.add_column(ratio=1)
    grid.add_column(ratio=1)
    for a, b in zip(titled[0::2], titled[1::2]):
        grid.add_row(box(*a), box(*b))
    return [grid]


def report(v, cpus, gpu, width: int) -> Group:
    """The panels of one view, laid out for a `width`-column terminal."""
    inner = width - 4
    L = len(v.layer_rows)
    layer_h = min(L, 32) + 2
    parts = [panels.status_line(v, wrap=True),
             box("layers · decode", panels.layer_panel(v, "decode", "time", inner, layer_h)),
             box("layers · prefill", panels.layer_panel(v, "prefill", "time", inner, layer_h))]
    if v.speculate:
        parts.append(box("speculation", panels.speculation_panel(v, inner, 6)))
    col = (width - 2) // 2 - 4 if width >= 140 else inner
    parts += paired([("tokens/s", panels.tokens_panel(v, col, 4)), ("reduction barriers", panels.barriers_panel(v, col, 3)),
                     ("memory", panels.memory_panel(v, col, 6)),
                     ("system", panels.system_panel(cpus, gpu, col, len(cpus) + 2, v.no_gpu_reason, v.backend))], width)
    parts.append(box("text", panels.text_panel(v, inner, 0)))
    return Group(*parts)


def run_once(session, err: Console, csv_file: Path | None) -> None:
    import psutil

    from profilers.export import events_csv_chunks

    from ..outputs import write

    psutil.cpu_percent(percpu=True)
    with err.status("starting", spinner="dots") as status:
        session.run_once(on_phase=status.update)
    cpus = psutil.cpu_percent(percpu=True)  # averaged over the run
    gpu = engine_gpu(session.engine)
    out = console.stdout(panels=True)
    out.print(report(session.view(), cpus, gpu, out.width))
    if csv_file is not None:
        write("--csv", csv_file, events_csv_chunks(session.records()))
        err.print(f"wrote {csv_file} (one row per op event)", style="dim", soft_wrap=True)
    sys.stdout.flush()
