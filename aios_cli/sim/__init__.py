"""`aios sim`: simulators of what the hardware does, checked against measured kernels."""

from __future__ import annotations

import typer

from . import attention, parallel

app = typer.Typer(help="Simulators: attention on a GPU's memory hierarchy (SRAM and HBM); tensor and pipeline "
                       "parallelism on a cluster (a cost model).", no_args_is_help=True)
app.command("attention")(attention.attention)
app.command("parallel")(parallel.parallel)
