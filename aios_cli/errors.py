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


_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
signalled: list[int] = []  # the signals that have begun to end this command, first first


def _ignored(signum, frame) -> None:
    """A signal after the one that is ending the command. A Python function, not SIG_IGN: a
    signal already pending when its handler becomes SIG_IGN makes CPython raise "Signal N
    ignored due to race condition" instead."""


def _ending(signum: int) -> None:
    """The first signal ends the command; those after it are ignored, so they cannot land in the
    middle of the ending (an `except` block, a `finally` removing a temporary file)."""
    signalled.append(signum)
    for sig in _SIGNALS:
        signal.signal(sig, _ignored)


def _raise_terminated(signum, frame):
    _ending(signum)
    raise Terminated(signum)


def _raise_interrupted(signum, frame):
    _ending(signum)
    raise KeyboardInterrupt


def _redeliver_swallowed(unraisable) -> None:
    """A signal that lands while C code calls back into Python (Numba's JIT compiling, say)
    raises where nobody can catch it: Python would print it and go on. Send it again a moment
    later instead, when it can end the command."""
    exc = unraisable.exc_value
    if isinstance(exc, (Terminated, KeyboardInterrupt)):
        import threading

        signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
        # it stays in `signalled`: what the C code does next (Numba's compiler, cut short) may
        # fail before the signal comes back, and that failure is the signal's doing
        install_signal_handlers()
        timer = threading.Timer(0.05, os.kill, (os.getpid(), signum))
        timer.daemon = True
        timer.start()
        return
    sys.__unraisablehook__(unraisable)


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP end a command the way Ctrl-C does (called first thing by `aios`)."""
    for sig, handler in ((signal.SIGTERM, _raise_terminated), (signal.SIGHUP, _raise_terminated),
                         (signal.SIGINT, _raise_interrupted)):
        if signal.getsignal(sig) is not signal.SIG_IGN:  # `nohup aios ...`, a background job: left ignored
            signal.signal(sig, handler)
    sys.unraisablehook = _redeliver_swallowed


def end_by_signal(exc: BaseException) -> int | None:
    """The exit code for `exc` if a signal is what ended the command (KeyboardInterrupt,
    Terminated, or any error that followed a signal: an interrupted JIT compile can fail in
    its own way), after printing its one line; else None."""
    if isinstance(exc, KeyboardInterrupt):
        signum = signal.SIGINT
    elif isinstance(exc, Terminated):
        signum = exc.signum
    elif signalled and isinstance(exc, Exception):
        signum = signalled[0]
    else:
        return None
    _no_more_signals()
    say_signal(signum)
    return 128 + signum


def say_signal(signum: int) -> None:
    what = "interrupted" if signum == signal.SIGINT else f"terminated by {signal.Signals(signum).name}"
    print(f"aios: error: {what}", file=sys.stderr)
    said.append(signum)


said: list[int] = []  # the signal lines printed (one per command)


def _no_more_signals() -> None:
    """The command is ending: a second Ctrl-C (or SIGTERM) must not interrupt the ending
    itself with a traceback from interpreter shutdown."""
    try:
        for sig in _SIGNALS:
            signal.signal(sig, _ignored)
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

        signalled.clear()  # a new command (tests run many in one process)
        said.clear()
        try:
            return fn(*a, **kw)
        except typer.Exit:
            raise
        except BaseException as e:
            code = end_by_signal(e)
            if code is not None:
                raise typer.Exit(code)
            handle(e)

    wrapper.guarded = True  # tests/test_cli.py checks that every command has it
    return wrapper


def _stdout_gone() -> None:
    """Let nothing more reach stdout (a closed pipe, a full disk): the interpreter's own flush
    on the way out would fail again and print."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def handle(e: BaseException) -> None:
    """One line and an exit code for any failure but a signal's (see `guarded`)."""
    import typer

    from engines.errors import UserError

    if isinstance(e, UserError):
        fail(str(e), BAD_INPUT)
    if isinstance(e, BrokenPipeError):  # stdout's reader is gone: stop quietly, as a pipe's writer does
        _stdout_gone()
        raise typer.Exit(BROKEN_PIPE)
    if isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and "can't allocate memory" in str(e)):
        # torch's CPU allocator raises a RuntimeError, NumPy a MemoryError
        fail("out of host memory — try a smaller --model or fewer tokens", BAD_INPUT)
    if isinstance(e, OSError):
        # the file system said no (a full disk, a name too long, a directory where a file should
        # be): the user's to fix, not a bug in aios
        try:
            sys.stdout.flush()
        except OSError:
            _stdout_gone()
        where = f"{e.filename}: " if e.filename else "writing the output: " if e.errno in (5, 28) else ""
        fail(f"{where}{e.strerror or e} — check the path, the free space and the permissions", BAD_INPUT)
    if type(e).__name__ == "PanicException":  # `tokenizers`' Rust side panics with a BaseException
        why = str(e).strip().splitlines()[0] if str(e).strip() else "a panic"
        fail(f"the tokenizer failed ({why}) — fix or remove tokenizer.json, or pass --prompt-ids", BAD_INPUT)
    if not isinstance(e, Exception) or os.environ.get("AIOS_DEBUG"):
        raise e  # SystemExit and the like; or the traceback, asked for
    fail(f"internal error: {type(e).__name__}: {e} — please report it (rerun with AIOS_DEBUG=1 for the traceback)",
         INTERNAL)


def error_line(e: BaseException) -> str:
    """One line for an engine error caught where no guard ends the command (the TUI's worker, the
    server's engine thread): a UserError as it says, memory errors with what to try."""
    from engines.errors import UserError

    name = type(e).__name__
    if isinstance(e, UserError):
        return str(e)
    if isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and "can't allocate memory" in str(e)):
        return "out of host memory — try a smaller model or fewer --max-new-tokens"  # NumPy's, torch's CPU
    if name == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
        return "out of GPU memory — try a smaller model, --dtype bfloat16 or fewer --max-new-tokens"
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{name}: {msg}" if msg else name
