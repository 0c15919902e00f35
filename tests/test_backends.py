"""The backend record is the one place an engine declares itself: a new engine is its own module
plus one `Backend` in `engines.BACKENDS`, and every command finds it there.

The toy engine below is the simd engine's code under another name, registered for the length of
a test: `aios info` lists it as usable, `aios run` and `aios bench latency` run it and name it in
their output, and their errors list it among the choices. What it can do is asked of its record
(dtypes, --quant, batching), never of its name.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from typer.testing import CliRunner

import engines
from aios_cli.main import app
from engines.backends import BACKENDS, Backend
from engines.simd.engine import SimdEngine

runner = CliRunner()


class ToyEngine(SimdEngine):
    name = "toy"


@pytest.fixture()
def toy(monkeypatch):
    record = replace(BACKENDS["simd"], name="toy", module=__name__, cls="ToyEngine", what="a toy engine",
                     quants=(), no_quant="the toy engine takes no --quant", cpu_default=False)
    monkeypatch.setitem(BACKENDS, "toy", record)
    return record


def test_info_lists_a_registered_engine(toy):
    res = runner.invoke(app, ["info", "-f", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["engines"]["toy"]["usable"] is True


def test_run_and_bench_run_a_registered_engine(toy):
    res = runner.invoke(app, ["run", "-m", "tiny", "-b", "toy", "-n", "3", "--prompt-ids", "1,2,3", "-f", "json", "-q"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["backend"] == "toy" and out["new_tokens"] == 3 and out["dtype"] == "float32"
    res = runner.invoke(app, ["bench", "latency", "-m", "tiny", "-b", "toy", "-p", "4", "-n", "2", "-r", "1",
                              "-f", "json", "-q"])
    assert res.exit_code == 0, res.output
    assert {r["backend"] for r in json.loads(res.stdout)} == {"toy"}


def test_errors_name_a_registered_engine_and_ask_its_record(toy):
    res = runner.invoke(app, ["run", "-m", "tiny", "-b", "nope"])
    assert res.exit_code == 2 and "toy" in res.output.splitlines()[-1]
    res = runner.invoke(app, ["run", "-m", "tiny", "-b", "toy", "--quant", "q8_0"])
    assert res.exit_code == 2 and "the toy engine takes no --quant" in res.output
    res = runner.invoke(app, ["run", "-m", "tiny", "-b", "toy", "--dtype", "bfloat16"])
    assert res.exit_code == 2 and "the toy engine does not run bfloat16" in res.output
    res = runner.invoke(app, ["bench", "throughput", "-m", "tiny", "-b", "toy"])
    assert res.exit_code == 2 and "the batched engine runs on" in res.output  # its record says it does not batch


def test_the_record_answers_for_every_engine():
    """Each built-in engine's class is the one its record names, and the record's claims hold
    for it: its default dtype, what a parameter costs in host RAM, its pools."""
    for name, b in BACKENDS.items():
        assert isinstance(b, Backend) and b.name == name and b.dtypes
        assert engines.resolve_dtype(name, None) == b.dtypes[0]
        assert (b.host_bytes is None) == (b.device != "cpu")
    assert engines.engine_class("simd") is SimdEngine
    assert BACKENDS["simd"].host_bytes_per_param(None) == 4
    assert BACKENDS["torch"].host_bytes_per_param("bfloat16") == 2
    assert BACKENDS["torch"].host_bytes_per_param(None, "q8_0") == pytest.approx(34 / 32)
    assert BACKENDS["simd"].host_bytes_per_param(None, "Q4_1") == pytest.approx(20 / 32)  # a file's blocks, kept
    assert BACKENDS["simd"].host_bytes_per_param(None, "Q4_K") == 4  # no kernel: widened to float32 as it loads
    assert BACKENDS["torch"].host_bytes_per_param("bfloat16", "Q6_K") == 2
    assert BACKENDS["scalar"].host_bytes_per_param(None, "Q4_0") == 32  # Python floats, whatever the file
    assert BACKENDS["cuda"].host_bytes_per_param("bfloat16") is None
    assert [b for b in BACKENDS.values() if b.cpu_default] == [BACKENDS["simd"]]
    assert {b.name for b in BACKENDS.values() if b.batches} == {"torch", "cuda"}
