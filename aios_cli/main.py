"""The `aios` command. Each command lives in its own module and imports its heavy
dependencies (torch, numba, textual, transformers) only when it runs, so `aios --help` is fast."""

from __future__ import annotations

import typer

from . import compare as compare_cmd
from . import info as info_cmd
from . import models as models_cmd
from . import run as run_cmd
from . import top as top_cmd

app = typer.Typer(
    name="aios",
    help="Make LLM inference measurable: one Qwen forward pass on scalar, SIMD and CUDA engines, profiled op by op.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("run")(run_cmd.run)
app.command("top")(top_cmd.top)
app.command("info")(info_cmd.info)
app.command("models")(models_cmd.models)
app.add_typer(compare_cmd.app, name="compare")


def main() -> None:
    from .errors import install_signal_handlers

    install_signal_handlers()
    app()


if __name__ == "__main__":
    main()
