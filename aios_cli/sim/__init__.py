"""`aios sim`: simulators of what the hardware does, checked against measured kernels."""

from __future__ import annotations

import typer

from . import attention

app = typer.Typer(help="Simulators: attention on a GPU's memory hierarchy (SRAM and HBM).", no_args_is_help=True)
app.command("attention")(attention.attention)
