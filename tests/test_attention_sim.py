"""`aios sim attention`: the simulator against the FlashAttention paper's IO analysis (Dao et
al. 2022: standard attention moves Θ(Nd + N²) HBM bytes, FlashAttention Θ(N²d²/M)), its own
invariants (property-tested), and the command's output and bad input.

The closed forms below are written from the paper's algorithms, independently of the
simulator's loop nests; the simulator must land on them exactly where the paper's assumptions
hold (S and P too large for SRAM; tiles that fit), and scale as the paper says elsewhere.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from aios_cli.errors import BAD_INPUT
from aios_cli.main import app as cli
from profilers.sim import attention as A
from profilers.hardware import GPUS, KiB, Spec

runner = CliRunner()
A100 = GPUS["a100"]
E = 2  # fp16


def shape(n, d=64, **kw):
    return A.Shape(n, n, d, **kw)


def standard_bytes(n, d):
    """Algorithm 0: read Q, K; write S; read S; write P; read P, V; write O (elements x 2 B)."""
    return (4 * n * d + 4 * n * n) * E


def flash_bytes(n, d, br, bc):
    """Algorithm 1, with the first column block's O, l, m starting in SRAM: K and V once; per
    column block Q (and O, l, m after the first) read, O, l, m written."""
    tc = math.ceil(n / bc)
    stats = 2 * n * 4
    reads = 2 * n * d * E + tc * n * d * E + (tc - 1) * (n * d * E + stats)
    writes = tc * (n * d * E + stats)
    return reads + writes


@pytest.mark.parametrize("n,d", [(1024, 64), (2048, 64), (4096, 128), (3000, 80)])
def test_standard_is_algorithm_0_once_s_and_p_spill(n, d):
    r = A.simulate("standard", shape(n, d), A100)
    assert r.hbm_bytes == standard_bytes(n, d)
    assert r.reads["S"] == r.writes["S"] == r.reads["P"] == r.writes["P"] == n * n * E


def test_standard_that_fits_moves_only_q_k_v_o():
    r = A.simulate("standard", shape(128, 32), A100)  # S = 32 KiB: everything fits one SM
    assert r.hbm_bytes == 4 * 128 * 32 * E and r.writes["S"] == r.writes["P"] == 0


@pytest.mark.parametrize("n,d", [(1024, 64), (4096, 64), (2048, 128), (5000, 96)])
def test_flash_is_algorithm_1(n, d):
    r = A.simulate("flash", shape(n, d), A100)
    br, bc = A.tiles(shape(n, d), A100.sram_per_sm)
    assert (r.br, r.bc) == (br, bc) == (min(math.ceil(A100.sram_per_sm // E / (4 * d)), d),
                                        math.ceil(A100.sram_per_sm // E / (4 * d)))
    assert r.hbm_bytes == flash_bytes(n, d, br, bc)
    assert r.writes["S"] == r.writes["P"] == r.reads["S"] == r.reads["P"] == 0  # never S or P in HBM


def test_doubling_n_quadruples_both_at_large_n():
    for algo in ("standard", "flash"):
        a, b = (A.simulate(algo, shape(n), A100).hbm_bytes for n in (8192, 16384))
        assert b / a == pytest.approx(4.0, rel=0.05), algo


def test_doubling_sram_halves_flash_traffic_and_not_standard():
    small, big = (Spec("x", A100.bandwidth, A100.flops, 108, m, "test") for m in (96 * KiB, 192 * KiB))
    f = [A.simulate("flash", shape(16384), s).hbm_bytes for s in (small, big)]
    s_ = [A.simulate("standard", shape(16384), s).hbm_bytes for s in (small, big)]
    assert f[0] / f[1] == pytest.approx(2.0, rel=0.05)  # Θ(N²d²/M)
    assert s_[0] == s_[1]


def test_flash_traffic_grows_as_d_squared():
    a, b = (A.simulate("flash", shape(16384, d), A100).hbm_bytes for d in (32, 64))
    assert b / a == pytest.approx(4.0, rel=0.1)


def test_causal_flash_skips_about_half_the_tiles():
    full = A.simulate("flash", shape(16384), A100)
    causal = A.simulate("flash", shape(16384, causal=True), A100)
    assert causal.hbm_bytes / full.hbm_bytes == pytest.approx(0.5, abs=0.05)
    assert causal.flops / full.flops == pytest.approx(0.5, abs=0.05)


def test_gpt2_medium_example():
    """The paper's Fig. 2 case (GPT-2 medium: N 1024, d 64, 16 heads, batch 64, A100) reports
    40.3 GB (standard) against 4.4 GB (flash) for the forward *and backward* pass with dropout
    and masking; the simulator is forward-only and counts S and P once each."""
    s = shape(1024, heads=16, batch=64)
    std, fl = (A.simulate(a, s, A100) for a in ("standard", "flash"))
    assert std.hbm_bytes == standard_bytes(1024, 64) * 16 * 64  # 9.13 GB
    assert 5 < std.hbm_bytes / fl.hbm_bytes < 8
    assert std.bound == "memory"


def test_flash_decode_fills_the_sms_that_flash_leaves_idle():
    s = A.Shape(1, 32768, 128, heads=8, batch=1)
    fl, fd = A.simulate("flash", s, A100), A.simulate("flash-decode", s, A100)
    assert fd.splits == math.ceil(108 / 8)
    assert fl.work_units == 8 and fd.work_units == 8 * fd.splits
    assert fd.hbm_bytes == pytest.approx(fl.hbm_bytes, rel=0.01)  # the same bytes, more SMs pulling them
    assert fd.predicted_s < fl.predicted_s / 10


def test_seed_compatible_model():
    s = shape(1024, heads=16, batch=64)
    r = A.simulate("flash", s, A100, seed_compat=True)
    assert r.sram_bytes == A100.sram_per_sm * 108  # one global pool
    assert r.predicted_s == pytest.approx(r.compute_s + r.memory_s)  # no overlap
    std = A.simulate("standard", shape(2048), A100, seed_compat=True)
    assert std.writes["S"] == 0  # overflow is free: S never leaves SRAM


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 3000), d=st.sampled_from([16, 32, 64, 80, 128]), causal=st.booleans(),
       kib=st.sampled_from([48, 100, 164, 192, 228]), decode=st.booleans())
def test_invariants(n, d, causal, kib, decode):
    sp = Spec("x", 1e12, 1e14, 108, kib * KiB, "test")
    s = A.Shape(1 if decode else n, n, d, causal=causal and not decode)
    for algo in A.default_algos(s):
        r = A.simulate(algo, s, sp)
        assert all(v >= 0 for v in (*r.reads.values(), *r.writes.values()))
        assert r.flops > 0 and r.predicted_s > 0
        assert r.writes["O"] >= s.n * s.d * s.elem  # O always reaches HBM
        assert r.reads["K"] >= s.nk * s.d * s.elem and r.reads["V"] >= s.nk * s.d * s.elem
        assert r.peak_sram_bytes <= r.sram_bytes  # LRU never holds more than there is
        if algo in ("flash", "flash-decode"):
            assert r.writes["S"] == r.writes["P"] == 0
        legal = (2 * r.bc * d + 2 * r.br * d + r.br * r.bc) * s.elem + 2 * r.br * 4 <= r.sram_bytes
        if algo == "flash" and legal:  # a legal tiling: nothing evicted, traffic as Algorithm 1
            assert r.hbm_bytes <= flash_bytes(s.nk, d, r.br, r.bc) if not s.causal and not decode else True


# --- the command --------------------------------------------------------------------------------

def test_json_rows_per_algorithm_and_configuration():
    res = runner.invoke(cli, ["sim", "attention", "--n", "256,1024", "--d", "64,128", "--sram", "96KiB,192KiB",
                              "-f", "json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert len(rows) == 4 * 2 * 2 * 2
    for k in ("algo", "n", "d", "sram_bytes", "hbm_read_bytes", "hbm_write_bytes", "flops", "peak_sram_bytes",
              "predicted_s", "bound"):
        assert all(k in r for r in rows), k
    r = next(r for r in rows if r["algo"] == "standard" and r["n"] == 1024 and r["d"] == 64
             and r["sram_bytes"] == 192 * 1024)
    assert r["hbm_read_bytes"] + r["hbm_write_bytes"] == standard_bytes(1024, 64) * 16


def test_table_plot_and_trace():
    res = runner.invoke(cli, ["sim", "attention", "--n", "512,1024,2048", "--algo", "standard,flash"],
                        env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "HBM traffic against N" in res.output and "flash" in res.output
    res = runner.invoke(cli, ["sim", "attention", "--n", "16", "--d", "8", "--heads", "1", "--algo", "flash",
                              "--sram", "2KiB", "--trace"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "trace · flash" in res.output and "load" in res.output and "K[0]" in res.output


def test_decode_and_cpu_spec_run():
    res = runner.invoke(cli, ["sim", "attention", "--decode", "--n", "8192", "--d", "128", "--heads", "8", "-f", "json"])
    rows = json.loads(res.stdout)
    assert {r["algo"] for r in rows} == set(A.ALGOS) and all(r["decode"] for r in rows)


@pytest.mark.parametrize("args,needle", [
    (["--n", "0"], "--n"), (["--gpu", "tpu"], "--gpu"), (["--algo", "magic"], "--algo"),
    (["--sram", "lots"], "--sram"), (["--dtype", "int3"], "--dtype"), (["--bandwidth", "-1"], "--bandwidth"),
    (["-f", "xml"], "--format"),
])
def test_bad_input_is_one_line(args, needle):
    res = runner.invoke(cli, ["sim", "attention", *args])
    assert res.exit_code == BAD_INPUT, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], res.output
