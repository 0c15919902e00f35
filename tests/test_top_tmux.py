"""`aios top` in a real terminal (tmux): the token counter advances between two captures of the
pane, and `q` (or ctrl+c) quits with exit code 0 and the terminal back on its main screen."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import uuid

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt install tmux)")

TOTAL = re.compile(r"tok (\d+) · ([\d,]+) total")


class Tmux:
    def __init__(self, width=100, height=30):
        self.sock = f"aios-test-{uuid.uuid4().hex[:8]}"
        self.size = (width, height)

    def tmux(self, *args) -> str:
        return subprocess.run(["tmux", "-L", self.sock, *args], capture_output=True, text=True, check=True).stdout

    def start(self, command: str, cwd) -> None:
        w, h = self.size
        # COLUMNS and LINES unset: GNU readline, which pytest's process has imported, exports
        # them (80x24) into every child's environment, and they would override the pane's size
        self.tmux("new-session", "-d", "-s", "top", "-x", str(w), "-y", str(h), "-c", str(cwd),
                  f"env -u COLUMNS -u LINES TERM=xterm-256color {command}; echo AIOS-EXITED $?; sleep 600")

    def capture(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "top")

    def wait_for(self, pred, timeout: float, what: str) -> str:
        t0 = time.monotonic()
        screen = ""
        while time.monotonic() - t0 < timeout:
            screen = self.capture()
            if pred(screen):
                return screen
            if "AIOS-EXITED" in screen:
                break
            time.sleep(0.25)
        raise AssertionError(f"no {what} (timed out or exited); the pane shows:\n{screen}")

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.sock, "kill-server"], capture_output=True)


def total_tokens(screen: str) -> int | None:
    m = TOTAL.search(screen)
    return int(m.group(2).replace(",", "")) if m else None


@pytest.mark.slow
@pytest.mark.parametrize("quit_key", ["q", "C-c"])
def test_counters_advance_and_quit_restores_the_terminal(quit_key, tmp_path):
    t = Tmux()
    t.start(f"{sys.executable} -m aios_cli.main top -m tiny -b simd -n 16", cwd=tmp_path)
    try:
        first = t.wait_for(lambda s: "● generating" in s and (total_tokens(s) or 0) > 0, 180, "generating")
        n1 = total_tokens(first)
        time.sleep(1.5)
        second = t.capture()
        n2 = total_tokens(second)
        assert n2 is not None and n2 > n1, f"token counter did not advance: {n1} -> {n2}\n{second}"
        for title in ("tokens/s", "reduction barriers", "memory", "system", "text"):
            assert title in second
        t.tmux("send-keys", "-t", "top", quit_key)
        done = t.wait_for(lambda s: "AIOS-EXITED" in s, 30, "exit")
        assert "AIOS-EXITED 0" in done, done
        assert "Traceback" not in done
        assert t.tmux("display-message", "-p", "-t", "top", "#{alternate_on}").strip() == "0"
    finally:
        t.kill()


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [("TERM", 143), ("HUP", 129), ("INT", 130)])
def test_signals_restore_the_terminal(sig, code, tmp_path):
    """`kill -TERM/-HUP/-INT` to aios top: one line, 128 + the signal's number, and the terminal
    as it was: main screen, mouse tracking off, cursor visible."""
    t = Tmux()
    t.start(f"{sys.executable} -m aios_cli.main top -m tiny -b simd -n 16", cwd=tmp_path)
    try:
        t.wait_for(lambda s: "● generating" in s and (total_tokens(s) or 0) > 0, 180, "generating")
        shell = t.tmux("display-message", "-p", "-t", "top", "#{pane_pid}").strip()
        pid = subprocess.run(["pgrep", "-P", shell], capture_output=True, text=True, check=True).stdout.split()[0]
        subprocess.run(["kill", f"-{sig}", pid], check=True)
        done = t.wait_for(lambda s: "AIOS-EXITED" in s, 30, "exit")
        assert f"AIOS-EXITED {code}" in done, done
        assert "Traceback" not in done
        state = t.tmux("display-message", "-p", "-t", "top", "#{alternate_on} #{mouse_any_flag} #{cursor_flag}")
        assert state.split() == ["0", "0", "1"], state
    finally:
        t.kill()
