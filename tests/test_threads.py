"""--threads, the default thread count, the busy-machine warning, and what every record says
made it. The oracles are the libraries themselves: each pool's own getter after aios set it,
and importlib.metadata for the versions."""

from __future__ import annotations

import csv
import io
import json
import platform
from importlib.metadata import version

import pytest
from typer.testing import CliRunner

from aios_cli.main import app
from profilers import threads
from profilers.record import PROVENANCE_FIELDS

runner = CliRunner()


@pytest.fixture
def busy(monkeypatch):
    """One other process keeps a core (and a half) busy."""
    monkeypatch.setattr(threads, "busy_cpus", lambda sample_s=0.0: 1.5)
    monkeypatch.setattr(threads, "load_avg", lambda: 1.7)


@pytest.fixture
def restore_pools():
    import numba
    import torch
    from threadpoolctl import threadpool_info

    before = (numba.get_num_threads(), torch.get_num_threads(),
              next(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"))
    yield
    threads.apply(max(before))


@pytest.mark.parametrize("usable,other,expect", [(2, 0.0, 2), (2, 1.0, 1), (2, 1.6, 1), (2, 2.0, 1), (16, 3.4, 13),
                                                 (1, 0.9, 1)])
def test_default_leaves_the_busy_cpus_to_their_owners(monkeypatch, usable, other, expect):
    monkeypatch.setattr(threads, "usable_cpus", lambda: usable)
    monkeypatch.setattr(threads, "busy_cpus", lambda sample_s=0.0: other)
    monkeypatch.setattr(threads, "_USER_ENV", {})
    p = threads.plan(None)
    assert (p.threads, p.source) == (expect, "default")
    assert (p.busy_warning() is not None) == (other >= threads.BUSY_CPUS)


def test_explicit_and_exported_counts_win(monkeypatch):
    monkeypatch.setattr(threads, "_USER_ENV", {"NUMBA_NUM_THREADS": "3"})
    assert (threads.plan(None).threads, threads.plan(None).source) == (3, "NUMBA_NUM_THREADS")
    assert (threads.plan(5).threads, threads.plan(5).source) == (5, "--threads")


def test_apply_sizes_every_pool(restore_pools):
    import numba
    import torch
    from threadpoolctl import threadpool_info

    threads.apply(1)
    assert numba.get_num_threads() == 1 and torch.get_num_threads() == 1
    assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")


@pytest.mark.parametrize("backend,layer", [("simd", "numba"), ("torch", "torch"), ("scalar", "python")])
def test_run_records_the_threads_it_ran_with(restore_pools, backend, layer):
    res = runner.invoke(app, ["run", "-b", backend, "-n", "2", "-q", "-f", "json", "--threads", "1"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["threads"] == 1 and d["threading_layer"].startswith(layer)
    assert d["threads_source"] == "--threads" and d["load_avg_1m"] == 0.25 and d["busy_cpus"] == 0.0


def test_a_busy_machine_is_said_in_one_line_even_when_quiet(busy, restore_pools):
    res = runner.invoke(app, ["run", "-b", "simd", "-n", "2", "-q", "-f", "json"])
    assert res.exit_code == 0, res.output
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: the machine is busy"), res.stderr
    assert "1.5 of" in lines[0] and "timings will be noisy" in lines[0] and "1 thread" in lines[0]
    d = json.loads(res.stdout)
    assert (d["threads"], d["busy_cpus"], d["load_avg_1m"]) == (1, 1.5, 1.7)  # 2 CPUs less 1.5 busy, rounded
    # with --quiet the warning comes after the results: a run that fails still ends in one line
    res = runner.invoke(app, ["run", "-b", "simd", "-n", "2", "-q", "--trace", "/dev/full"])
    assert res.exit_code == 2 and res.stderr.splitlines() == [res.stderr.splitlines()[0]]
    assert res.stderr.startswith("aios: error: --trace /dev/full: could not write it")


def test_every_record_says_what_made_it(tmp_path, restore_pools):
    import numba
    import numpy
    import torch

    want = {"aios_version": version("aios"), "python_version": platform.python_version(),
            "numpy_version": numpy.__version__, "numba_version": numba.__version__,
            "torch_version": torch.__version__}
    ops = tmp_path / "ops.csv"
    res = runner.invoke(app, ["run", "-b", "simd", "-n", "2", "-q", "-f", "csv", "--csv", str(ops), "--threads", "2"])
    assert res.exit_code == 0, res.output
    for rows in (list(csv.DictReader(io.StringIO(res.stdout))), list(csv.DictReader(ops.open()))):
        assert rows and set(PROVENANCE_FIELDS) <= set(rows[0])
        for r in rows:
            assert {k: r[k] for k in want} == want
            assert r["threads"] == "2" and r["threads_source"] == "--threads"
    res = runner.invoke(app, ["compare", "dot", "-b", "simd,blas", "-r", "1", "-f", "json", "-q", "--threads", "1"])
    assert res.exit_code == 0, res.output
    for r in json.loads(res.stdout)["results"]:
        assert {k: r[k] for k in want} == want and r["threads"] == 1


def test_threads_out_of_range_is_one_line():
    for argv in (["run", "--threads", "0"], ["top", "--once", "--threads", "-1"], ["compare", "dot", "--threads", "0"],
                 ["compare", "prefill-decode", "--threads", "5000"]):
        res = runner.invoke(app, argv)
        assert res.exit_code == 2 and res.stderr.startswith("aios: error: --threads must be between 1 and"), res.output
        assert len(res.stderr.splitlines()) == 1


def test_version_and_completion(monkeypatch):
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.startswith(f"aios {version('aios')}")
    # Typer otherwise detects the shell from the process's parents and ignores the argument:
    # a run with no shell among them (started by a service, or orphaned) says "Shell  not supported"
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    res = runner.invoke(app, ["--show-completion", "bash"])
    assert res.exit_code == 0 and "_AIOS_COMPLETE" in res.stdout, (res.output, repr(res.exception))


def test_shell_completion_completes_commands():
    import shutil
    import subprocess

    aios = shutil.which("aios")  # the installed entry point: completion is keyed by its name
    assert aios, "the aios script is not installed (pip install -e .)"
    env = {"_AIOS_COMPLETE": "complete_bash", "COMP_WORDS": "aios ben", "COMP_CWORD": "1"}
    out = subprocess.run([aios], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["bench"], out


def test_peaks_measured_on_a_busy_machine_are_measured_again_when_idle(tmp_path, monkeypatch):
    from profilers import peaks

    monkeypatch.setenv("AIOS_CACHE_DIR", str(tmp_path))
    calls = []

    def fake_measure(with_gpu=None, progress=None):
        calls.append(threads.busy_cpus())
        busy = threads.busy_cpus()
        p = peaks.Peak(1e10, 1e10, 1e10, "B/s", "copy")
        return peaks.Peaks(machine=peaks.machine_key(), measured_at="now", cpu_bandwidth=p,
                           cpu_flops=peaks.Peak(1e11, 1e11, 1e11, "FLOP/s", "mm"), busy_cpus=busy)

    monkeypatch.setattr(peaks, "measure", fake_measure)
    monkeypatch.setattr(threads, "busy_cpus", lambda sample_s=0.0: 1.2)
    assert peaks.get().measured_busy and len(calls) == 1
    assert peaks.get().measured_busy and len(calls) == 1  # still busy: the cached figures, flagged
    monkeypatch.setattr(threads, "busy_cpus", lambda sample_s=0.0: 0.0)
    assert not peaks.get().measured_busy and len(calls) == 2  # idle now: measured again
    assert len(calls) == 2 and not peaks.get().measured_busy  # and cached
