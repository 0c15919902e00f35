"""Exit codes (one table, used by every command) and the one-line error printer."""

from __future__ import annotations

import sys

OK = 0
INTERNAL = 1  # a bug in aios: please report it
BAD_INPUT = 2  # the user can fix it: the message says how
INTERRUPTED = 130  # Ctrl-C

EXIT_CODES = {OK: "success", INTERNAL: "internal error", BAD_INPUT: "bad input (message says the fix)", INTERRUPTED: "interrupted"}


def fail(message: str, code: int = BAD_INPUT):
    """Print `error: message` as one line on stderr and exit. Never a traceback."""
    import typer

    print(f"aios: error: {message}", file=sys.stderr)
    raise typer.Exit(code)
