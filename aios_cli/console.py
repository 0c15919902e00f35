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


def stdout(**kw) -> Console:
    import sys

    if "width" not in kw and not sys.stdout.isatty() and "COLUMNS" not in __import__("os").environ:
        kw["width"] = PIPE_WIDTH
    return _Stdout(highlight=False, **kw)
