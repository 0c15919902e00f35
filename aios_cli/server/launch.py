"""`aios serve` as a child process, for the scripts and tests that drive a real server: start
it, wait for the line on its stderr that says where it listens, and hand back its URL."""

from __future__ import annotations

import os
import subprocess
import sys
import time

LISTENING = "listening on"  # aios serve's stderr: "aios serve: listening on http://HOST:PORT (...)"


class ServerDidNotStart(RuntimeError):
    pass


def start_serve(args: list[str], timeout_s: float, cwd=None, stdout=subprocess.PIPE) -> tuple[subprocess.Popen, str]:
    """`aios serve *args` started (with `--port 0`, the OS picks a free port); (the process, its
    URL) once it listens. Its stderr stays a pipe, for the caller to read what it says later."""
    p = subprocess.Popen([sys.executable, "-m", "aios_cli.main", "serve", *args], cwd=cwd, stderr=subprocess.PIPE,
                         stdout=stdout, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    t0 = time.monotonic()
    line = ""
    while time.monotonic() - t0 < timeout_s:
        line = p.stderr.readline()
        if LISTENING in line:
            return p, line.split(f"{LISTENING} ")[1].split()[0]
        if not line and p.poll() is not None:
            break
    p.kill()
    raise ServerDidNotStart(f"aios serve did not start: {line}")
