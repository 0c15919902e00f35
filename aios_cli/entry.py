"""The `aios` executable. Signals are taken over first, before anything heavy is imported, so a
Ctrl-C or SIGTERM while aios starts (imports, Typer building the commands) ends it in one line
like one during a command, never with a traceback."""

from __future__ import annotations

import sys


def main() -> None:
    from .errors import end_by_signal, install_signal_handlers

    install_signal_handlers()
    try:
        from .main import app

        app()
    except BaseException as e:
        code = end_by_signal(e)
        if code is None:
            raise
        sys.exit(code)
