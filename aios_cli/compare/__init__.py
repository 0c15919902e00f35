"""`aios compare`: scalar vs SIMD vs BLAS vs GPU on dot and matmul, parallel prefill vs
sequential decode, and this machine's measured peaks. One module per subcommand."""

from __future__ import annotations

import typer

from ..request import short_t_was
from . import kernels, passes, peak

app = typer.Typer(help="Measure scalar vs SIMD vs BLAS vs GPU, and prefill vs decode, on this machine.",
                  no_args_is_help=True)
app.command("dot")(kernels.make_command("dot"))
app.command("matmul")(kernels.make_command("matmul"))
app.command("peak")(peak.peak)
app.command("prefill-decode", cls=short_t_was("--tokens", "the token counts"))(passes.prefill_decode)  # -t was --tokens
