"""`aios compare`: every format parses back, results are checked against float64, scaled
figures say so, no GPU means 'unavailable' and exit 0, barrier counts are passes x per pass."""

from __future__ import annotations

import csv
import io
import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from aios_cli.compare.kernels import RESULT_COLUMNS
from aios_cli.compare.passes import PASSES_COLUMNS
from aios_cli.main import app
from engines import cuda_status
from engines.model.sources import open_model
from engines.model.config import PRESETS
from profilers.bench import check as CK
from profilers.bench import kernels as C

runner = CliRunner()
HAS_GPU = cuda_status()[0]


@pytest.fixture(scope="module", autouse=True)
def peaks_cache(tmp_path_factory):
    """Peaks are measured once (a few seconds) into a private cache for this module."""
    old = os.environ.get("AIOS_CACHE_DIR")
    os.environ["AIOS_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("AIOS_CACHE_DIR")
    else:
        os.environ["AIOS_CACHE_DIR"] = old


def invoke(*args):
    return runner.invoke(app, list(args))


def ok_json(*args):
    res = invoke(*args, "--format", "json", "--quiet")
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


@pytest.fixture(scope="module")
def dot_run():
    return ok_json("compare", "dot", "--sizes", "1000,4097", "--repeat", "2")


def test_dot_json(dot_run):
    rows = dot_run["results"]
    assert [(r["size"], r["backend"]) for r in rows] == [(n, b) for n in (1000, 4097) for b in C.ALL_BACKENDS]
    for r in rows:
        if r["backend"] == "cuda" and not HAS_GPU:
            assert r["status"] == "unavailable" and r["detail"] and r["median_s"] is None
            continue
        assert r["status"] == "ok", r
        assert r["min_s"] <= r["median_s"] <= r["max_s"] and r["repeats"] >= 1
        assert r["flops"] == 2 * r["size"] and r["bytes"] == 8 * r["size"]
        assert r["gflops_per_s"] == pytest.approx(r["flops"] / r["median_s"] / 1e9)
        assert r["max_rel_error"] < 1e-3
    scalar = {r["size"]: r for r in rows if r["backend"] == "scalar"}
    for r in rows:
        if r["status"] == "ok":
            assert r["speedup_vs_scalar"] == pytest.approx(scalar[r["size"]]["median_s"] / r["median_s"])
    assert set(dot_run["winners"]) == {"1000", "4097"}
    if not HAS_GPU:
        assert dot_run["crossover"].startswith("unavailable (")
    assert dot_run["peaks"]["cpu_bandwidth"]["median"] > 0 and dot_run["peaks"]["cpu_flops"]["median"] > 0


def test_matmul_csv_and_file(tmp_path):
    out = tmp_path / "mm.csv"
    res = invoke("compare", "matmul", "--sizes", "17,64", "--backends", "simd,blas,torch,cuda", "--repeat", "2",
                 "--format", "csv", "--quiet", "--csv", str(out))
    assert res.exit_code == 0, res.output
    for text in (res.output, out.read_text()):
        rows = list(csv.DictReader(io.StringIO(text)))
        assert tuple(rows[0]) == RESULT_COLUMNS
        assert [(r["size"], r["backend"]) for r in rows] == [(n, b) for n in ("17", "64") for b in ("simd", "blas", "torch", "cuda")]
        for r in rows:  # every row carries the machine and the configuration
            assert r["host"] and r["cpu"] and r["repeat"] == "2" and r["op"] == "matmul" and r["run_id"]
            if r["status"] == "ok":
                assert float(r["flops"]) == 2 * int(r["size"]) ** 3 and float(r["median_s"]) > 0


def test_table_and_markdown():
    res = invoke("compare", "dot", "--sizes", "1000", "--backends", "scalar,simd,blas", "--repeat", "2", "--quiet")
    assert res.exit_code == 0, res.output
    for needle in ("compare dot", "winner", "★", "%peak", "JIT"):
        assert needle in res.output
    res = invoke("compare", "matmul", "--sizes", "8", "--repeat", "1", "--format", "md", "--quiet")
    assert res.exit_code == 0 and res.output.startswith("| n | backend |")
    if not HAS_GPU:
        assert "cuda: unavailable (" in res.output


def test_scaled_scalar_is_labelled_everywhere(tmp_path):
    args = ("compare", "dot", "--sizes", "300000", "--backends", "scalar,blas", "--repeat", "2", "--scalar-budget", "0.002", "--quiet")
    d = ok_json(*args)
    s = [r for r in d["results"] if r["backend"] == "scalar"][0]
    assert s["scaled"] is True and 0 < s["measured_fraction"] < 1 and "scaled from a measured" in s["detail"]
    assert d["winners"]["300000"] == "blas"  # a scaled estimate never wins
    res = invoke(*args, "--format", "csv")
    row = [r for r in csv.DictReader(io.StringIO(res.output)) if r["backend"] == "scalar"][0]
    assert row["scaled"] == "True" and "scaled" in row["detail"]
    res = invoke(*args)
    assert "*" in res.output and "scaled: a scalar time past --scalar-budget" in res.output
    res = invoke(*args, "--format", "md")
    assert "scaled" in res.output


def test_wrong_results_are_not_timed():
    case = CK.Case.make("dot", 1000)
    r = C.run_blas(case, C.CompareConfig(repeat=2))
    assert r.status == "ok"
    case.ref = case.ref + 1.0  # pretend the right answer were different
    r = C.run_blas(case, C.CompareConfig(repeat=2))
    assert r.status == "wrong" and r.median_s is None and "exceeds the float32 bound" in r.detail


@pytest.mark.parametrize("op,n", [("dot", 1), ("dot", 1023), ("matmul", 1), ("matmul", 33)])
def test_check_bound(op, n):
    case = CK.Case.make(op, n)
    got = case.ref.astype(np.float32)
    assert CK.check(got, case.ref, case.abs_terms, case.k)[0]
    bad = np.array(got, dtype=np.float64)
    bad.flat[0] += 1e-3 * (abs(bad.flat[0]) + 1)
    assert not CK.check(bad, case.ref, case.abs_terms, case.k)[0]


def test_peak_is_cached():
    a = ok_json("compare", "peak")
    b = ok_json("compare", "peak")
    assert a == b  # the second call read the cache
    assert a["cpu_bandwidth"]["unit"] == "B/s" and a["cpu_flops"]["unit"] == "FLOP/s"
    assert (a["gpu_bandwidth"] is None) == (not HAS_GPU)
    res = invoke("info")
    # info shows the cached figures, not a fresh measurement
    assert f"{a['cpu_bandwidth']['median'] / 1e9:,.1f} GB/s" in res.output
    assert a["measured_at"] in res.output


def test_prefill_decode_barriers():
    d = ok_json("compare", "prefill-decode", "--backend", "simd", "--model", "tiny", "--tokens", "4,9", "--repeat", "1")
    cfg = PRESETS["tiny"]
    per_pass = 3 * cfg.num_layers + 2
    rows = d["results"]
    assert [(r["tokens"], r["mode"]) for r in rows] == [(4, "parallel"), (4, "sequential"), (9, "parallel"), (9, "sequential")]
    for r in rows:
        passes = 1 if r["mode"] == "parallel" else r["tokens"]
        assert r["forward_passes"] == passes and r["barriers_per_pass"] == per_pass
        assert r["reduction_barriers"] == passes * per_pass
        # a pass reads every float32 weight the checkpoint stores once, plus one embedding row
        # (tied: the embedding again, whole, as the lm_head; `stored_bytes` counts it once)
        assert r["weight_bytes_read"] == passes * (open_model("tiny").stored_bytes + cfg.hidden_size * 4)
        assert r["median_s"] > 0 and r["tokens_per_s"] == pytest.approx(r["tokens"] / r["median_s"])
    res = invoke("compare", "prefill-decode", "-b", "simd", "--tokens", "4", "-r", "1", "-f", "csv", "-q")
    assert tuple(next(csv.DictReader(io.StringIO(res.output)))) == PASSES_COLUMNS


def test_prefill_decode_short_t_is_threads_now():
    """-t was --tokens here: a thread count runs as threads with a note naming --tokens; token
    lists and counts above the CPUs are refused (tests/test_cli.py checks those lines)."""
    res = invoke("compare", "prefill-decode", "-b", "simd", "-t", "1", "--tokens", "4", "-r", "1", "-f", "csv", "-q")
    assert res.exit_code == 0, res.output
    row = next(csv.DictReader(io.StringIO(res.stdout)))
    assert (row["threads"], row["tokens"]) == ("1", "4")
    assert ("aios: note: -t is --threads now: running 1 thread (for the token counts, -t's old meaning, pass "
            "--tokens 1)") in res.stderr.splitlines()


@pytest.mark.parametrize("columns", ["80", None], ids=["80-column terminal", "piped"])
def test_prefill_decode_table_is_never_cut(columns):
    """Every cell whole (no `…`) at 80 columns, and when piped (no width to fit: drawn whole)."""
    from typer.testing import CliRunner

    env = {"COLUMNS": columns} if columns else {}
    res = CliRunner().invoke(app, ["compare", "prefill-decode", "-b", "simd", "--tokens", "8,128", "-r", "1", "-q"], env=env)
    assert res.exit_code == 0, res.output
    table = [ln for ln in res.stdout.splitlines() if " mode " in ln or "parallel" in ln or "sequential" in ln]
    assert len(table) == 5 and "…" not in res.stdout and any(" 1,792 " in ln for ln in table)
    if columns:
        assert max(len(ln.rstrip()) for ln in table) <= 80


@pytest.mark.parametrize("args,needle", [
    (("compare", "dot", "--sizes", "abc"), "--sizes must be numbers"),
    (("compare", "matmul", "--sizes", "0"), "not a whole number in 1..8,192"),
    (("compare", "dot", "--backends", "tpu"), "unknown backend 'tpu'"),
    (("compare", "dot", "--backend", "tpu"), "unknown backend 'tpu'"),  # --backend, as everywhere else
    (("compare", "dot", "--format", "xml"), "unknown --format 'xml'"),
    (("compare", "prefill-decode", "--tokens", "0"), "--tokens must be positive"),
    (("compare", "prefill-decode", "--backend", "gpu"), "unknown backend 'gpu'"),
    (("compare", "dot", "--sizes", "inf"), "--sizes: inf is not a whole number"),
    (("compare", "dot", "--sizes", "nan"), "--sizes: nan is not a whole number"),
    (("compare", "dot", "--sizes", "1e400"), "--sizes: 1e400 is not a whole number"),
    (("compare", "dot", "--scalar-budget", "nan"), "--scalar-budget must be positive"),
])
def test_bad_input(args, needle):
    res = invoke(*args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("aios: error:") and needle in lines[0], res.output


def test_over_100_percent_is_explained_by_the_cache_only_when_the_data_fits(monkeypatch):
    """At n = 10M (80 MB of inputs, beyond the L3) the cause of >100% is a peak measured low,
    not the cache; below the L3 size it is the cache."""
    from types import SimpleNamespace

    from aios_cli.compare import kernels
    from profilers.peaks import Peak, Peaks

    monkeypatch.setattr(kernels, "l3_cache_bytes", lambda: 32 << 20)
    pk = Peaks(machine={}, measured_at="t", cpu_bandwidth=Peak(1e10, 1e10, 1e10, "B/s", "copy"),
               cpu_flops=Peak(1e11, 1e11, 1e11, "FLOP/s", "mm"))

    def result(n, pct):
        return SimpleNamespace(size=n, bytes=8 * n, pct_of_peak=pct, backend="simd", status="ok", scaled=False,
                               jit_s=0.0, detail="")

    small = kernels._summary_lines("dot", {}, "n/a", "", pk, [result(10_000, 140.0)])
    assert any("fit in the 32.00 MiB L3 cache" in ln for ln in small) and not any("read low" in ln for ln in small)
    big = kernels._summary_lines("dot", {}, "n/a", "", pk, [result(10_000_000, 120.0)])
    assert any("the peak itself read low" in ln for ln in big) and not any("fit in the" in ln for ln in big)
    none = kernels._summary_lines("dot", {}, "n/a", "", pk, [result(10_000, 60.0)])
    assert not any("100%" in ln for ln in none)
