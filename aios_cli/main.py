"""The `aios` command. Each command lives in its own module and imports its heavy
dependencies (torch, numba, textual, transformers) only when it runs, so `aios --help` is fast."""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

from . import bench as bench_cmd
from . import compare as compare_cmd
from . import info as info_cmd
from . import models as models_cmd
from . import run as run_cmd
from . import top as top_cmd

class OneLineUsageErrors(TyperGroup):
    """A usage error (an unknown option, a value of the wrong type) is one `aios: error:` line
    like every other bad input, not Click's boxed panel."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        from .errors import BAD_INPUT, printable

        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False, **extra)
        except Exception as e:
            if not standalone_mode:
                raise
            if type(e).__name__ == "NoArgsIsHelpError":  # `aios` alone: the help, as Typer shows it
                return super().main(args=args, prog_name=prog_name, complete_var=complete_var, **extra)
            if not hasattr(e, "format_message"):
                raise
            ctx = getattr(e, "ctx", None)
            where = f" — see `{ctx.command_path} --help`" if ctx is not None else ""
            print(f"aios: error: {printable(' '.join(e.format_message().split()))}{where}", file=sys.stderr)
            sys.exit(getattr(e, "exit_code", BAD_INPUT))
        if standalone_mode:
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv


app = typer.Typer(
    name="aios",
    cls=OneLineUsageErrors,
    help="Make LLM inference measurable: one Qwen forward pass on scalar, SIMD and CUDA engines, profiled op by op.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion and --show-completion, as Typer users expect
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from profilers.provenance import version_line

        print(version_line())
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the aios version (and git commit) and exit."),
) -> None:
    """Make LLM inference measurable: one Qwen forward pass on scalar, SIMD and CUDA engines, profiled op by op."""


app.command("run")(run_cmd.run)
app.command("top")(top_cmd.top)
app.command("info")(info_cmd.info)
app.command("models")(models_cmd.models)
app.add_typer(compare_cmd.app, name="compare")
app.add_typer(bench_cmd.app, name="bench")


def main() -> None:
    from .errors import install_signal_handlers

    install_signal_handlers()
    app()


if __name__ == "__main__":
    main()
