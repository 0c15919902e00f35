"""Signals and pipes as a user's shell sends them, to a real `aios` process: SIGTERM, SIGHUP
and a double Ctrl-C mid-run end in one line with 128 + the signal's number, no traceback and
no temporary file; a reader that goes away (`| head -1`) ends it quietly with 141."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

AIOS = [sys.executable, "-c", "from aios_cli.main import main; main()"]
RUN = ["run", "-b", "simd", "-m", "tiny", "-n", "400", "--ignore-eos", "-q", "-f", "json"]


def start(tmp_path, *args):
    # the pools as a user's shell leaves them, not as in-process tests sized them
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                            "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.Popen([*AIOS, *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def error_lines(stderr: str) -> list[str]:
    """stderr's lines but the busy-machine warning, which a loaded test machine adds first."""
    return [ln for ln in stderr.strip().splitlines() if not ln.startswith("warning: the machine is busy")]


def leftovers(d):
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp") or p.name.startswith("."))


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
@pytest.mark.parametrize("after_s", [1.0, 2.5, 4.0])
def test_terminate_mid_run(tmp_path, sig, code, after_s):
    out = tmp_path / "out"
    out.mkdir()
    p = start(tmp_path, *RUN, "--csv", str(out / "ops.csv"), "--trace", str(out / "trace.json"))
    time.sleep(after_s)
    p.send_signal(sig)
    stdout, stderr = p.communicate(timeout=60)
    err = stderr.decode()
    assert "Traceback" not in err, err
    if p.returncode == 0:  # it finished first: both files whole
        assert {f.name for f in out.iterdir()} == {"ops.csv", "trace.json"}
        return
    assert p.returncode == code, err
    assert error_lines(err) == [f"aios: error: terminated by {sig.name}"]
    assert leftovers(out) == []


@pytest.mark.slow
@pytest.mark.parametrize("gap_s", [0.01, 0.03, 0.05])
def test_double_ctrl_c(tmp_path, gap_s):
    p = start(tmp_path, *RUN)
    time.sleep(2.0)
    p.send_signal(signal.SIGINT)
    time.sleep(gap_s)
    p.send_signal(signal.SIGINT)
    _, stderr = p.communicate(timeout=60)
    err = stderr.decode()
    assert "Traceback" not in err and p.returncode in (130, 0), err
    if p.returncode == 130:
        assert error_lines(err) == ["aios: error: interrupted"]


def test_reader_goes_away(tmp_path):
    p = start(tmp_path, "run", "-b", "simd", "-m", "tiny", "-n", "64", "--ignore-eos")
    p.stdout.readline()
    p.stdout.close()  # as `| head -1` does
    _, stderr = p.communicate(timeout=60)
    assert p.returncode == 141, stderr.decode()
    assert "Traceback" not in stderr.decode() and "error" not in stderr.decode()


def test_a_signal_swallowed_by_a_callback_is_sent_again(monkeypatch):
    """A signal that lands inside a C callback into Python (Numba's JIT compiling) cannot
    unwind the command: Python reports it as unraisable and goes on. aios sends it again."""
    import threading
    from types import SimpleNamespace

    from aios_cli import errors

    sent, started = [], []
    monkeypatch.setattr(errors.os, "kill", lambda pid, sig: sent.append((pid, sig)))

    class Now:
        def __init__(self, delay, fn, args):
            self.fn, self.args, self.daemon = fn, args, False

        def start(self):
            started.append(self.daemon)
            self.fn(*self.args)

    monkeypatch.setattr(threading, "Timer", Now)
    errors._redeliver_swallowed(SimpleNamespace(exc_value=errors.Terminated(signal.SIGTERM)))
    errors._redeliver_swallowed(SimpleNamespace(exc_value=KeyboardInterrupt()))
    assert sent == [(os.getpid(), signal.SIGTERM), (os.getpid(), signal.SIGINT)] and started == [True, True]
