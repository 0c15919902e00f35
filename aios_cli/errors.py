"""Exit codes (one table, used by every command) and the one-line error printer."""

from __future__ import annotations

import functools
import os
import sys

OK = 0
INTERNAL = 1  # a bug in aios: please report it
BAD_INPUT = 2  # the user can fix it: the message says how
INTERRUPTED = 130  # Ctrl-C


def fail(message: str, code: int = BAD_INPUT):
    """Print `error: message` as one line on stderr and exit. Never a traceback."""
    import typer

    print(f"aios: error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def guarded(fn):
    """Run a command body so that every failure ends in one line and an exit code: bad input
    (UserError, host out of memory) 2, Ctrl-C 130, a bug in aios 1 (AIOS_DEBUG=1 re-raises it
    with its traceback). Shared by every command."""

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        import typer

        from engines.errors import UserError

        try:
            return fn(*a, **kw)
        except UserError as e:
            fail(str(e), BAD_INPUT)
        except KeyboardInterrupt:
            fail("interrupted", INTERRUPTED)
        except MemoryError:
            fail("out of host memory — try a smaller --model or fewer tokens", BAD_INPUT)
        except typer.Exit:
            raise
        except Exception as e:
            if os.environ.get("AIOS_DEBUG"):
                raise
            fail(f"internal error: {type(e).__name__}: {e} — please report it (rerun with AIOS_DEBUG=1 for the "
                 "traceback)", INTERNAL)
    wrapper.guarded = True  # tests/test_cli.py checks that every command has it
    return wrapper
