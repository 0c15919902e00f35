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

AIOS = [sys.executable, "-c", "from aios_cli.entry import main; main()"]
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


LINE = {130: "aios: error: interrupted", 143: "aios: error: terminated by SIGTERM"}


@pytest.mark.slow
@pytest.mark.parametrize("first,second", [(signal.SIGINT, signal.SIGINT), (signal.SIGTERM, signal.SIGINT)],
                         ids=["double ctrl-c", "term then int"])
@pytest.mark.parametrize("gap_s", [0.0, 0.01, 0.03, 0.05])
def test_two_signals_close_together_end_in_one_line(tmp_path, first, second, gap_s):
    """The second signal must not land in the ending of the first (an except block, a finally
    removing a temporary file) and print a traceback. Either one's line: two signals pending
    together are handled in number order (SIGINT before SIGTERM) when the main thread comes
    back from a long C call."""
    out = tmp_path / "out"
    out.mkdir()
    p = start(tmp_path, *RUN, "--csv", str(out / "ops.csv"), "--trace", str(out / "trace.json"))
    time.sleep(2.0)
    p.send_signal(first)
    time.sleep(gap_s)
    p.send_signal(second)
    _, stderr = p.communicate(timeout=60)
    err = stderr.decode()
    assert "Traceback" not in err, err
    if p.returncode != 0:  # 0: it finished first
        assert p.returncode in LINE and error_lines(err) == [LINE[p.returncode]], err
        assert leftovers(out) == []


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

    sent, started, reinstalled = [], [], []
    errors.signalled[:] = [signal.SIGTERM, signal.SIGINT]  # as the handlers recorded them
    monkeypatch.setattr(errors.os, "kill", lambda pid, sig: sent.append((pid, sig)))
    # the handlers went to SIG_IGN when the signal began the ending: back, so the resend counts
    monkeypatch.setattr(errors, "install_signal_handlers", lambda: reinstalled.append(True))

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
    assert reinstalled == [True, True]
    # still recorded: Numba's compiler, cut short, may fail before the signal comes back
    assert errors.signalled[-2:] == [signal.SIGTERM, signal.SIGINT]
    errors.signalled.clear()


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)])
@pytest.mark.parametrize("after_s", [0.15, 0.3, 0.45, 0.6])
def test_a_signal_while_aios_starts_is_one_line(tmp_path, sig, code, after_s):
    """While Python imports aios and Typer builds the commands, before any command's guard:
    the same one line and exit code (the entry point takes the signals over first)."""
    p = start(tmp_path, "info")
    time.sleep(after_s)
    p.send_signal(sig)
    _, stderr = p.communicate(timeout=60)
    err = stderr.decode()
    if p.returncode == -sig or "Fatal Python error: init_import_site" in err:
        # on a loaded machine, still inside Python's own start-up (the signal's default action,
        # or site.py's .pth imports cut short): aios never ran, so no line of it may show
        assert "aios_cli" not in err, err
        return
    assert "Traceback" not in err, err
    if p.returncode != 0:  # 0: it finished first
        assert p.returncode == code, err
        assert error_lines(err) == ["aios: error: " + ("interrupted" if sig == signal.SIGINT else
                                                        f"terminated by {sig.name}")]


def test_an_error_after_a_signal_is_the_signals_doing(capsys):
    """A SIGTERM that interrupts Numba's compiler can surface as Numba's own RuntimeError later:
    the command still ends as terminated (143, one line), not as an internal error."""
    import typer

    from aios_cli import errors

    @errors.guarded
    def compiling():
        errors.signalled.append(signal.SIGTERM)  # as the handler records it
        raise RuntimeError("no compiled object yet for <Library '_mv_block'>")

    with pytest.raises(typer.Exit) as e:
        compiling()
    assert e.value.exit_code == 143
    assert capsys.readouterr().err.splitlines() == ["aios: error: terminated by SIGTERM"]
