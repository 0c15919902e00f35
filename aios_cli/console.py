"""The Rich console every command prints its result on (stdout)."""

from __future__ import annotations

from rich.console import Console


class _Stdout(Console):
    def on_broken_pipe(self) -> None:
        # Rich's own handling exits with code 1; the command's guard ends it as a closed pipe
        # does (exit 141, nothing printed)
        raise BrokenPipeError


def stdout(**kw) -> Console:
    return _Stdout(highlight=False, **kw)
