"""`aios bench latency`: llama-bench's semantics, parsed back from every output format. The
oracle for the statistics is Python's own `statistics` over the samples each row carries; the
grid's rows are checked against the product of the options given."""

from __future__ import annotations

import csv
import io
import itertools
import json
import statistics

import pytest
from typer.testing import CliRunner

from aios_cli.bench.latency import CONFIG_COLUMNS, latency_columns
from aios_cli.main import app
from profilers.record import PROVENANCE_FIELDS

runner = CliRunner()
GRID = ["bench", "latency", "-m", "tiny", "-b", "simd,torch", "-p", "4,8", "-n", "3", "-t", "1,2", "-r", "3", "-q"]


@pytest.fixture(scope="module")
def csv_rows():
    res = runner.invoke(app, [*GRID, "-f", "csv"])
    assert res.exit_code == 0, res.output
    return list(csv.DictReader(io.StringIO(res.stdout)))


def test_one_row_per_combination_with_its_configuration(csv_rows):
    assert tuple(csv_rows[0]) == latency_columns()
    got = [(r["backend"], r["threads"], r["n_prompt"], r["n_gen"]) for r in csv_rows]
    assert got == [(b, t, p, "3") for b, t, p in itertools.product(("simd", "torch"), ("1", "2"), ("4", "8"))]
    for r in csv_rows:
        assert set(CONFIG_COLUMNS) | set(PROVENANCE_FIELDS) - {"threads"} <= set(r)
        assert r["model"] == "tiny" and r["repetitions"] == "3" and r["dtype"] == "float32"
        assert r["threading_layer"].startswith("numba" if r["backend"] == "simd" else "torch")
        assert f"({r['threads']})" in r["threading_layer"]  # the pool really ran with the row's threads


@pytest.mark.parametrize("stat", ["ttft_ms", "prefill_tokens_per_s", "decode_tokens_per_s"])
def test_mean_and_sd_are_those_of_the_samples(csv_rows, stat):
    for r in csv_rows:
        samples = [float(x) for x in r[f"samples_{stat}"].split()]
        assert len(samples) == 3 and all(x > 0 for x in samples)
        assert float(r[f"{stat}_mean"]) == pytest.approx(statistics.fmean(samples), rel=1e-12)
        assert float(r[f"{stat}_sd"]) == pytest.approx(statistics.stdev(samples), rel=1e-9)


def test_rates_and_times_agree(csv_rows):
    """prefill tok/s is n_prompt over the TTFT of the same repetition."""
    for r in csv_rows:
        ttft = [float(x) for x in r["samples_ttft_ms"].split()]
        rate = [float(x) for x in r["samples_prefill_tokens_per_s"].split()]
        for t, v in zip(ttft, rate):
            assert v == pytest.approx(int(r["n_prompt"]) / (t / 1e3), rel=1e-9)


def test_json_jsonl_and_md_carry_the_same_rows():
    base = ["bench", "latency", "-b", "simd", "-p", "4", "-n", "2", "-r", "2", "-q"]
    js = json.loads(runner.invoke(app, [*base, "-f", "json"]).stdout)
    assert len(js) == 1 and js[0]["n_prompt"] == 4 and len(js[0]["samples_decode_tokens_per_s"]) == 2
    assert js[0]["jit_s"] is not None and js[0]["git_commit"] == js[0]["git_commit"]
    lines = runner.invoke(app, [*base, "-f", "jsonl", "-p", "4,6"]).stdout.splitlines()
    assert [json.loads(ln)["n_prompt"] for ln in lines] == [4, 6]
    md = runner.invoke(app, [*base, "-f", "md"]).stdout.splitlines()
    assert md[0].startswith("| model | backend | dtype | threads | test |") and md[2].startswith("| tiny | simd |")
    assert "± " in md[2] and "mean ± sample sd over 2 repetitions" in md[4]


def test_torch_has_no_jit_time():
    res = runner.invoke(app, ["bench", "latency", "-b", "torch", "-p", "2", "-n", "1", "-r", "1", "-q", "-f", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)[0]["jit_s"] is None


def test_repetitions_are_interleaved(tiny):
    from profilers.latency import LatencyCase, run_grid
    from profilers.threads import plan

    cases = [LatencyCase("tiny", "simd", None, 1, p, 1) for p in (2, 3)]
    order = []
    run_grid({"tiny": tiny}, cases, 2, plan(1), warmup=False, on_rep=lambda c, rep: order.append((rep, c.n_prompt)))
    assert order == [(0, 2), (0, 3), (1, 2), (1, 3)]


def test_table_shows_what_varies():
    res = runner.invoke(app, ["bench", "latency", "-b", "simd", "-p", "2,4", "-n", "2", "-r", "1", "-q"])
    assert res.exit_code == 0, res.output
    title = res.stdout.splitlines()[0]
    assert title.startswith("bench latency · batch 1 · tiny · simd · float32 · threads ")
    assert "pp2 tg2" in res.stdout and "pp4 tg2" in res.stdout and "…" not in res.stdout
