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
from . import serve as serve_cmd
from . import sim as sim_cmd
from . import top as top_cmd
from .request import short_t_was

class OneLineUsageErrors(TyperGroup):
    """A usage error (an unknown option, a value of the wrong type) is one `aios: error:` line
    like every other bad input, not Click's boxed panel."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        from .errors import BAD_INPUT, INTERRUPTED, handle, printable

        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False, **extra)
        except SystemExit as e:
            # Click (and Rich, which draws the help) end a closed stdout (`aios --help | head -1`)
            # with exit 1, after swapping in a wrapper that swallows the flush or pointing stdout
            # at /dev/null: end it as a closed pipe does, with 141
            if e.code == 1 and _stdout_was_closed():
                from .errors import BROKEN_PIPE

                sys.exit(BROKEN_PIPE)
            raise
        except Exception as e:
            if not standalone_mode:
                raise
            if type(e).__name__ == "NoArgsIsHelpError":  # `aios` alone: the help, as Typer shows it
                return super().main(args=args, prog_name=prog_name, complete_var=complete_var, **extra)
            if isinstance(e, typer.Abort):  # Typer's end of input (EOF) outside a command's guard
                print("aios: error: aborted (end of input)", file=sys.stderr)
                sys.exit(INTERRUPTED)
            if not hasattr(e, "format_message"):
                try:  # outside a command's guard (--version, --help): a closed or full stdout, say
                    handle(e)
                except Exception as x:  # the typer.Exit that handle ends with
                    if not hasattr(x, "exit_code"):
                        raise
                    sys.exit(x.exit_code)
            ctx = getattr(e, "ctx", None)
            where = f" — see `{ctx.command_path} --help`" if ctx is not None else ""
            print(f"aios: error: {printable(' '.join(e.format_message().split()))}{where}", file=sys.stderr)
            sys.exit(getattr(e, "exit_code", BAD_INPUT))
        if standalone_mode:
            from .errors import INTERRUPTED, said, say_signal

            if rv == INTERRUPTED and not said:  # Typer turned a Ctrl-C outside a command into a silent 130
                import signal

                say_signal(signal.SIGINT)
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv


def _stdout_was_closed() -> bool:
    import os

    if type(sys.stdout).__name__ == "PacifyFlushWrapper":
        return True
    try:
        return os.path.samestat(os.fstat(sys.stdout.fileno()), os.stat(os.devnull))
    except (OSError, ValueError):
        return False


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

        try:
            print(version_line(), flush=True)
        except BrokenPipeError as e:  # `aios --version | true`: exit 141, quietly (errors.handle)
            from .errors import handle

            handle(e)
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the aios version (and git commit) and exit."),
) -> None:
    """Make LLM inference measurable: one Qwen forward pass on scalar, SIMD and CUDA engines, profiled op by op."""


# -t was --temperature on run and top: ShortThreadsFlag refuses or notes a -t of the old meaning
app.command("run", cls=short_t_was("--temperature", "sampling temperature"))(run_cmd.run)
app.command("top", cls=short_t_was("--temperature", "sampling temperature"))(top_cmd.top)
app.command("serve")(serve_cmd.serve)
app.command("info")(info_cmd.info)
app.command("models")(models_cmd.models)
app.add_typer(compare_cmd.app, name="compare")
app.add_typer(bench_cmd.app, name="bench")
app.add_typer(sim_cmd.app, name="sim")


def main() -> None:
    from .entry import main as entry_main

    entry_main()


if __name__ == "__main__":
    main()
