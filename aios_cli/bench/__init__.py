"""`aios bench`: benchmarks with llama-bench's semantics (repetitions, grids, one row per
combination), named after vLLM's `bench latency | throughput | serve` family. The batched
engine adds `throughput` and `serve`."""

from __future__ import annotations

import typer

from . import latency, serve, spec, throughput

app = typer.Typer(help="Benchmarks over a grid of settings, one row per combination (like llama-bench).",
                  no_args_is_help=True)
app.command("latency")(latency.latency)
app.command("throughput")(throughput.throughput)
app.command("serve")(serve.serve)
app.command("spec")(spec.spec)
