"""Exit codes (one table, used by every command), the one-line error printer, and the one
guard every command runs in."""

from __future__ import annotations

import functools
import os
import signal
import sys

OK = 0
INTERNAL = 1  # a bug in aios: please report it
BAD_INPUT = 2  # the user can fix it: the message says how
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT); SIGTERM and SIGHUP end with 128 + their number
BROKEN_PIPE = 141  # the reader of stdout went away (`aios run ... | head -1`): 128 + SIGPIPE, silently


class Terminated(BaseException):
    """SIGTERM or SIGHUP, raised in the main thread so that every `finally` runs (a half-written
    export's temporary file is removed), as Ctrl-C's KeyboardInterrupt does."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum, frame):
    raise Terminated(signum)


def _redeliver_swallowed(unraisable) -> None:
    """A signal that lands while C code calls back into Python (Numba's JIT compiling, say)
    raises where nobody can catch it: Python would print it and go on. Send it again a moment
    later instead, when it can end the command."""
    exc = unraisable.exc_value
    if isinstance(exc, (Terminated, KeyboardInterrupt)):
        import threading

        signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
        timer = threading.Timer(0.05, os.kill, (os.getpid(), signum))
        timer.daemon = True
        timer.start()
        return
    sys.__unraisablehook__(unraisable)


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP end a command the way Ctrl-C does (called once by `aios`'s main)."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_terminated)
    sys.unraisablehook = _redeliver_swallowed


def _no_more_signals() -> None:
    """The command is ending: a second Ctrl-C (or SIGTERM) must not interrupt the ending
    itself with a traceback from interpreter shutdown."""
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
    except ValueError:  # not the main thread (tests call commands from threads)
        pass


def printable(text: str, keep: str = "") -> str:
    """`text` with every control character (a newline, an ESC that would drive the terminal, a
    byte that was not UTF-8) written as its escape, so user input echoed in a message stays on
    one line and inert. Characters in `keep` (say newline and tab, for generated text) stay."""
    return "".join(c if c.isprintable() or c in keep else repr(c)[1:-1] for c in text)


def fail(message: str, code: int = BAD_INPUT):
    """Print `error: message` as one line on stderr and exit. Never a traceback."""
    import typer

    print(f"aios: error: {printable(message)}", file=sys.stderr)
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
            _no_more_signals()
            fail("interrupted", INTERRUPTED)
        except Terminated as e:
            _no_more_signals()
            fail(f"terminated by {signal.Signals(e.signum).name}", 128 + e.signum)
        except BrokenPipeError:
            # stdout's reader is gone: stop quietly, as a pipe's writer does, and let nothing
            # flush into the closed pipe on the way out
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(BROKEN_PIPE)
        except MemoryError:
            fail("out of host memory — try a smaller --model or fewer tokens", BAD_INPUT)
        except typer.Exit:
            raise
        except BaseException as e:
            if type(e).__name__ == "PanicException":  # `tokenizers`' Rust side panics with a BaseException
                why = str(e).strip().splitlines()[0] if str(e).strip() else "a panic"
                fail(f"the tokenizer failed ({why}) — fix or remove tokenizer.json, or pass --prompt-ids", BAD_INPUT)
            if not isinstance(e, Exception) or os.environ.get("AIOS_DEBUG"):
                raise  # SystemExit and the like; or the traceback, asked for
            fail(f"internal error: {type(e).__name__}: {e} — please report it (rerun with AIOS_DEBUG=1 for the "
                 "traceback)", INTERNAL)
    wrapper.guarded = True  # tests/test_cli.py checks that every command has it
    return wrapper
