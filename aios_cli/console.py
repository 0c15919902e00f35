"""The Rich console every command prints its result on (stdout)."""

from __future__ import annotations

from rich.console import Console


class _Stdout(Console):
    def on_broken_pipe(self) -> None:
        # Rich's own handling exits with code 1; the command's guard ends it as a closed pipe
        # does (exit 141, nothing printed)
        raise BrokenPipeError


# Piped or redirected output has no width to fit: tables are drawn whole (Rich would assume
# 80 columns and cut cells to `…`, losing numbers and units), as wide as their contents.
PIPE_WIDTH = 1000
# ...but panels (`aios top --once`) fill whatever width they are given: piped, they are laid out
# for a 140-column terminal, the narrowest the reports draw in two columns
PANELS_PIPE_WIDTH = 140


class _Stderr(Console):
    """Progress, notes and warnings. Markup is off: a message holds user text (a model name, a
    path) that may contain `[` (`[/]` would be a MarkupError); styles are given as `style=`."""

    def status(self, status, spinner: str = "dots", **kw):
        from rich.status import Status
        from rich.text import Text

        class PlainStatus(Status):  # Rich parses a str status as markup, on every update too
            def update(self, status=None, **ukw):
                return super().update(Text(status) if isinstance(status, str) else status, **ukw)

        return PlainStatus(Text(status) if isinstance(status, str) else status, console=self, spinner=spinner, **kw)


def say_busy(err: Console, warning: str | None, quiet: bool):
    """Say that the machine is busy: now, or with --quiet after the results (a call to the
    function returned), so that a run which fails still ends in its one error line. Never
    silently: the records carry the load either way."""
    def say():
        if warning:
            err.print(warning, style="yellow", soft_wrap=True)

    if quiet:
        return say
    say()
    return lambda: None


def stderr() -> Console:
    return _Stderr(stderr=True, highlight=False, markup=False)


def stdout(panels: bool = False, **kw) -> Console:
    """The result console. Piped (no terminal, no COLUMNS) it is PIPE_WIDTH wide for tables, or
    PANELS_PIPE_WIDTH for `panels`, which stretch to the width."""
    import sys

    if "width" not in kw and not sys.stdout.isatty() and "COLUMNS" not in __import__("os").environ:
        kw["width"] = PANELS_PIPE_WIDTH if panels else PIPE_WIDTH
    # no markup: results hold user text (a model folder named `m[/]`); styles go in as Text
    return _Stdout(highlight=False, markup=False, **kw)
