"""`aios top --tp N --pp M --once`: the ranks' one generation, then the panels of the live
ranks view printed as text."""

from __future__ import annotations

import sys

from rich.console import Console, Group

from .. import console
from . import panels
from .once import box, paired
from .ranks_panel import ranks_panel

STITCHED = "each stage's layers as its tp-rank 0 measured them"


def report(v, cpus, width: int) -> Group:
    """The panels of the view `v` (after the generation), laid out for a `width`-column terminal."""
    inner = width - 4
    layer_h = min(len(v.layer_rows), 32) + 2
    r = v.ranks
    col = (width - 2) // 2 - 4 if width >= 140 else inner
    return Group(panels.status_line(v, wrap=True),
                 box(f"layers · decode · {STITCHED}", panels.layer_panel(v, "decode", "time", inner, layer_h)),
                 box(f"layers · prefill · {STITCHED}", panels.layer_panel(v, "prefill", "time", inner, layer_h)),
                 box(f"ranks · TP={r.tp} x PP={r.pp} · decode", ranks_panel(v, inner, 0)),
                 *paired([("tokens/s", panels.tokens_panel(v, col, 4)),
                          ("system", panels.system_panel(cpus, None, col, len(cpus) + 2, None, v.backend))], width),
                 box("text", panels.text_panel(v, inner, 0)))


def run_once(session, err: Console) -> None:
    import psutil

    psutil.cpu_percent(percpu=True)
    with err.status("starting", spinner="dots") as status:
        session.run_once(on_phase=status.update)
    cpus = psutil.cpu_percent(percpu=True)  # averaged over the run
    out = console.stdout(panels=True)
    out.print(report(session.view(), cpus, out.width))
    sys.stdout.flush()
