"""The `aios` executable. Signals are taken over first, before anything heavy is imported, so a
Ctrl-C or SIGTERM while aios starts (imports, Typer building the commands) ends it in one line
like one during a command, never with a traceback."""

from __future__ import annotations

import os
import sys


def main() -> None:
    from . import errors

    errors.install_signal_handlers()
    try:
        from .main import app

        app()
    except SystemExit as e:
        if errors.said and e.code == 128 + errors.said[0]:
            # a signal ended the command and its line is printed: leave now. Interpreter
            # shutdown puts the default handlers back, and a second signal landing then would
            # kill the process with its own code instead of the first one's
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            os._exit(e.code)
        raise
    except BaseException as e:
        code = errors.end_by_signal(e)
        if code is None:
            raise
        sys.stderr.flush()
        os._exit(code)
