"""`aios bench throughput`: the workload, the metrics against their definitions, the exports,
and bad input as one line with exit 2."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from aios_cli.main import app
from profilers import throughput as T

runner = CliRunner()


def test_synthetic_workload_lengths_and_arrivals():
    w = T.synthetic(200, (16, 64), (64, 128), 4.0, 1000, seed=3)
    assert all(16 <= len(x.prompt_ids) <= 64 and 64 <= x.max_new_tokens <= 128 for x in w)
    gaps = np.diff([0.0] + [x.arrival_s for x in w])
    assert (gaps >= 0).all()
    assert abs(gaps.mean() - 0.25) < 0.06  # Poisson at 4/s: exponential gaps of mean 1/4 s
    assert all(x.arrival_s == 0 for x in T.synthetic(5, (1, 2), (1, 2), float("inf"), 10))
    assert T.synthetic(5, (1, 9), (1, 9), 1.0, 50, seed=1)[0].prompt_ids == T.synthetic(5, (1, 9), (1, 9), 1.0, 50, seed=1)[0].prompt_ids


def test_sharegpt_jsonl(tmp_path, tiny):
    from engines.model.tokenizer import encode

    f = tmp_path / "d.jsonl"
    rows = [{"conversations": [{"from": "human", "value": "Hello there, how are you?"},
                               {"from": "gpt", "value": "Fine, thanks for asking."}]},
            {"conversations": [{"from": "gpt", "value": "no human turn"}]},
            {"prompt": "Count to three.", "output_len": 7}]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    w = T.from_jsonl(str(f), tiny.tokenizer, 10, None, float("inf"))
    assert [x.prompt_ids for x in w] == [encode(tiny.tokenizer, "Hello there, how are you?"),
                                         encode(tiny.tokenizer, "Count to three.")]
    assert [x.max_new_tokens for x in w] == [len(encode(tiny.tokenizer, "Fine, thanks for asking.")), 7]
    assert [x.max_new_tokens for x in T.from_jsonl(str(f), tiny.tokenizer, 10, (3, 3), float("inf"))] == [3, 3]


def test_metrics_follow_their_definitions():
    r = T.RequestResult("a", 10, 4, arrival_s=1.0, first_token_s=1.5, finished_s=2.1, token_s=[1.5, 1.7, 1.8, 2.1])
    assert r.ttft == pytest.approx(0.5) and r.e2e == pytest.approx(1.1)
    assert r.tpot == pytest.approx(0.6 / 3) and r.itl == pytest.approx([0.2, 0.1, 0.3])
    run = T.ThroughputRun("batched", [r], [], duration_s=1.1)
    s = run.summary()
    assert s["output_tokens_per_s"] == pytest.approx(4 / 1.1) and s["total_tokens_per_s"] == pytest.approx(14 / 1.1)
    assert s["ttft_ms_p50"] == pytest.approx(500) and s["itl_ms_p99"] == pytest.approx(np.percentile([200, 100, 300], 99))


def test_cli_batched_and_baseline_with_exports(tmp_path):
    st, rq, tr = tmp_path / "steps.csv", tmp_path / "reqs.csv", tmp_path / "trace.json"
    res = runner.invoke(app, ["bench", "throughput", "-N", "6", "--input-len", "3:20", "--output-len", "2:5",
                              "--baseline", "-q", "-f", "json", "--kv-blocks", "8", "--block-size", "4",
                              "--steps-csv", str(st), "--requests-csv", str(rq), "--trace", str(tr)])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["mode"] for r in rows] == ["batched", "baseline"]
    b, base = rows
    assert b["requests"] == base["requests"] == 6 and b["output_tokens"] == base["output_tokens"]
    assert b["max_blocks_used"] <= 8 and b["kv_blocks"] == 8
    assert b["preemptions"] > 0  # 6 requests of up to 7 blocks each in a pool of 8
    steps = list(csv.DictReader(io.StringIO(st.read_text())))
    assert len(steps) == b["steps"] and "gate_up_proj_s" in steps[0]
    assert max(int(s["blocks_used"]) for s in steps) == b["max_blocks_used"]
    assert sum(int(s["preempted"]) for s in steps) == b["preemptions"]
    reqs = list(csv.DictReader(io.StringIO(rq.read_text())))
    assert len(reqs) == 12 and {r["mode"] for r in reqs} == {"batched", "baseline"}
    out_b = sorted(int(r["output_tokens"]) for r in reqs if r["mode"] == "batched")
    assert out_b == sorted(int(r["output_tokens"]) for r in reqs if r["mode"] == "baseline")
    ev = json.loads(tr.read_text())["traceEvents"]
    assert sum(1 for e in ev if e.get("pid") == 1 and e["ph"] == "X") == b["steps"]
    assert sum(1 for e in ev if e.get("pid") == 2 and e["ph"] == "X" and e["name"] == "generating") == 6


@pytest.mark.parametrize("args,words", [
    (["--rate", "0"], "--rate must be positive"),
    (["--rate", "fast"], "--rate takes"),
    (["--input-len", "9:3"], "--input-len takes"),
    (["-b", "simd"], "runs on torch or cuda"),
    (["--kv-blocks", "1", "--kv-cache-bytes", "100"], "give one"),
    (["--kv-blocks", "1"], "KV blocks"),
    (["--max-num-seqs", "8", "--max-num-batched-tokens", "4"], "at least --max-num-seqs"),
    (["--dataset", "/nonexistent/d.jsonl"], "no such file"),
    (["--input-len", "4000:4000", "--output-len", "200"], "exceeds the model's context"),
    (["-N", "0"], "--num-requests"),
])
def test_bad_input_is_one_line(args, words):
    res = runner.invoke(app, ["bench", "throughput", "-q", *args])
    assert res.exit_code == 2, res.output
    assert words in res.output and "Traceback" not in res.output
