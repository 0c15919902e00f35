"""Tensor and pipeline parallelism on torch.distributed (gloo): `engines.dist`, `aios run --tp/--pp`.

The oracles: the same model on one rank (the torch engine, itself checked against HF
transformers in test_parity), and HF transformers directly for a Qwen3 checkpoint; the gguf
package's dequantizer for a quantized shard. Every multi-rank check runs in one 4-rank process
group started once for the module (OMP_NUM_THREADS=1, tiny models), its jobs over meshes of
disjoint ranks so a TP=2 pair and a PP=2 pair run at once; the tests read its results. The
module is one xdist group, so one worker starts it.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from engines.errors import UserError

pytestmark = pytest.mark.xdist_group("dist")

IDS = [9707, 11, 1879, 0, 13, 264, 3974, 3607]  # 8 prompt ids, any will do on random weights
N = 6
GGUF_IDS = [i % 256 for i in IDS]  # the GGUF fixture's vocabulary
AIOS = [sys.executable, "-c", "from aios_cli.entry import main; main()"]
# the batched engine's workload: prompts of 3 to 19 tokens, a 16-token step budget (chunked
# prefill beside decodes), at most 4 running
REQUESTS = [(list(range(3, 3 + n)), m) for n, m in [(5, 6), (19, 4), (3, 7), (11, 5), (8, 6)]]
SAMPLED = {"greedy": False, "temperature": 0.9, "top_k": 50, "seed": 7}


@functools.lru_cache(maxsize=None)
def _reference(model: str, sampling: tuple = (), quant: str | None = None, ids: tuple = tuple(IDS)):
    """(greedy or sampled ids, prompt logits) on one rank: the torch engine alone."""
    from engines.generate import Generation
    from engines.model.sources import open_model
    from engines.sampling import SamplingParams
    from engines.torch.engine import TorchCpuEngine

    e = TorchCpuEngine(open_model(model), quant=quant)
    ids = list(ids)
    e.reset(len(ids) + 1)
    logits = e.prefill(ids, all_logits=True)
    return list(Generation(e, ids, N, e.make_sampler(SamplingParams(**dict(sampling))))), logits


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Every job's results, per rank: {job: result} from tests/dist_fixture.run_jobs."""
    from engines.dist.launch import run_ranks
    from tests.conftest import build_hf_model
    from tests.gguf_fixture import write_gguf
    from tests.dist_fixture import run_jobs

    d = tmp_path_factory.mktemp("dist")
    hf_dir = d / "qwen3"
    hf = build_hf_model(hf_dir, "qwen3-qknorm-gqa2-hd128")
    gguf_path, _ = write_gguf(d, "qwen2", "Q8_0")
    small_ids = [i % 384 for i in IDS]
    jobs = [
        {"name": "tp2|pp2", "model": "tiny-gqa", "meshes": [((0, 1), 2, 1), ((2, 3), 1, 2)], "ids": IDS, "n": N},
        {"name": "tp2xpp2", "model": "tiny-gqa", "meshes": [((0, 1, 2, 3), 2, 2)], "ids": IDS, "n": N},
        {"name": "sampled", "model": "tiny-gqa", "meshes": [((0, 1, 2, 3), 2, 2)], "ids": IDS, "n": N,
         "sampling": SAMPLED},
        {"name": "hf", "model": str(hf_dir), "meshes": [((0, 1, 2, 3), 2, 2)], "ids": small_ids, "n": N},
        {"name": "gguf", "model": str(gguf_path), "meshes": [((0, 1), 2, 1), ((2, 3), 1, 2)],
         "ids": GGUF_IDS, "n": N},
        {"name": "batch tp2|pp2", "model": "tiny-gqa", "meshes": [((0, 1), 2, 1), ((2, 3), 1, 2)],
         "requests": REQUESTS, "micro_batches": 2},
        {"name": "batch tp2xpp2", "model": "tiny-gqa", "meshes": [((0, 1, 2, 3), 2, 2)], "requests": REQUESTS,
         "micro_batches": 3},
    ]
    results = run_ranks(run_jobs, 4, (jobs,), timeout_s=120, threads=1)
    return {"results": results, "hf": hf, "hf_ids": small_ids, "gguf": str(gguf_path)}


def _by_mesh(results, job):
    """{(tp, pp): [each member rank's result]} for a job."""
    out = {}
    for r in results:
        if job in r:
            res = r[job]
            out.setdefault(res["mesh"][1:3], []).append(res)
    return out


def _head(members):
    [h] = [m for m in members if m["mesh"][5]]
    return h


@pytest.mark.parametrize("job,layout", [("tp2|pp2", (2, 1)), ("tp2|pp2", (1, 2)), ("tp2xpp2", (2, 2))])
def test_greedy_ids_and_logits_equal_one_rank(ranks, job, layout):
    ref_ids, ref_logits = _reference("tiny-gqa")
    members = _by_mesh(ranks["results"], job)[layout]
    assert len(members) == layout[0] * layout[1]
    for m in members:  # every rank appended the head rank's broadcast ids
        assert m["tokens"] == ref_ids
    head = _head(members)
    np.testing.assert_allclose(head["logits"], ref_logits, rtol=1e-4, atol=1e-4)
    assert all(m["logits"] is None for m in members if m is not head)


@functools.lru_cache(maxsize=None)
def _batched_reference():
    """The batched engine on one rank, the same options and requests."""
    from engines.batch.engine import BatchEngine
    from engines.model.sources import open_model
    from engines.torch.engine import TorchCpuEngine
    from tests.dist_fixture import BATCH_OPTS, serve

    return serve(BatchEngine(TorchCpuEngine(open_model("tiny-gqa")), **BATCH_OPTS), REQUESTS)


@pytest.mark.parametrize("job,layout", [("batch tp2|pp2", (2, 1)), ("batch tp2|pp2", (1, 2)),
                                        ("batch tp2xpp2", (2, 2))])
def test_the_batched_engine_split_over_ranks_equals_one_rank(ranks, job, layout):
    """Continuous batching with chunked prefill over TP and PP ranks (PP in 2 and 3
    micro-batches): every step's logits on the head rank equal one rank's, and every rank
    ends with the same ids."""
    ref = _batched_reference()
    members = _by_mesh(ranks["results"], job)[layout]
    assert len(members) == layout[0] * layout[1]
    for m in members:
        assert m["tokens"] == ref["tokens"]
    head = _head(members)
    assert len(head["step_logits"]) == len(ref["step_logits"])
    for got, want in zip(head["step_logits"], ref["step_logits"]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert all(not m["step_logits"] for m in members if m is not head)


def test_a_pipeline_step_runs_its_micro_batches_through_every_stage(ranks):
    """Per step and rank: as many micro-batches as the step has requests, up to the number
    asked for; one recv each on a later stage, one send each (and one wait for them all) on an
    earlier one, two all-reduces a layer and micro-batch under TP, and one broadcast of the
    step's tokens when it samples any."""
    for job in ("batch tp2|pp2", "batch tp2xpp2"):
        for layout, members in _by_mesh(ranks["results"], job).items():
            for m in members:
                _, tp, pp, stage, _, _ = m["mesh"]
                lo, hi = m["layers"]
                assert m["micro_batches"] == (1 if pp == 1 else {"batch tp2|pp2": 2, "batch tp2xpp2": 3}[job])
                for c in m["counts"]:
                    mb = min(m["micro_batches"], c["items"])
                    assert c["recv"] == (mb if stage > 0 else 0), (job, layout, c)
                    assert c["send"] == (mb + 1 if stage < pp - 1 else 0), (job, layout, c)
                    assert c["allreduce"] == (2 * (hi - lo) * mb if tp > 1 else 0), (job, layout, c)
                    assert c["broadcast"] == (1 if c["samples"] else 0), (job, layout, c)
                if pp > 1:  # the workload fills the micro-batches
                    assert max(c["recv"] + c["send"] for c in m["counts"]) >= m["micro_batches"]


def test_a_sampled_run_draws_the_same_ids_as_one_rank(ranks):
    """Only the head rank draws from the sampler's stream: the same stream as one rank's."""
    ref_ids, _ = _reference("tiny-gqa", tuple(SAMPLED.items()))
    assert len(set(ref_ids)) > 1  # a sampled run that moves, or this checks little
    for m in _by_mesh(ranks["results"], "sampled")[(2, 2)]:
        assert m["tokens"] == ref_ids


def test_a_qwen3_checkpoint_split_four_ways_matches_transformers(ranks):
    import torch

    hf, ids = ranks["hf"], ranks["hf_ids"]
    with torch.no_grad():
        want = hf(torch.tensor([ids])).logits[0].numpy()
    members = _by_mesh(ranks["results"], "hf")[(2, 2)]
    np.testing.assert_allclose(_head(members)["logits"], want, rtol=1e-4, atol=1e-4)
    greedy = []
    seq = list(ids)
    with torch.no_grad():
        for _ in range(N):
            nxt = int(hf(torch.tensor([seq])).logits[0, -1].argmax())
            greedy.append(nxt)
            seq.append(nxt)
    assert members[0]["tokens"] == greedy


def test_a_quantized_file_shards_along_whole_blocks(ranks):
    """A Q8_0 GGUF file: each rank cuts its columns of o_proj and down at block boundaries; the
    split run equals the file on one rank (the same blocks, summed in another order)."""
    ref_ids, ref_logits = _reference(ranks["gguf"], ids=tuple(GGUF_IDS))
    for layout, members in _by_mesh(ranks["results"], "gguf").items():
        np.testing.assert_allclose(_head(members)["logits"], ref_logits, rtol=1e-4, atol=1e-4)
        assert all(m["tokens"] == ref_ids for m in members), layout


def test_collectives_are_lapped_per_layer_and_rank(ranks):
    """Two all-reduces a layer on a TP rank, one send on a stage that is not the last, one recv
    on a stage that is not the first, one broadcast a token everywhere; every step carries its
    rank, and each stage laps the model's layer numbers it holds."""
    for layout, members in _by_mesh(ranks["results"], "tp2xpp2").items():
        for m in members:
            ranks_, tp, pp, stage, tp_rank, head = m["mesh"]
            lo, hi = m["layers"]
            c = m["counts"]
            assert set(c["allreduce"]) == {2 * (hi - lo)}
            assert set(c["send"]) == {1 if stage < pp - 1 else 0}
            assert set(c["recv"]) == {1 if stage > 0 else 0}
            assert set(c["broadcast"]) == {1}
            assert m["layers_lapped"] == list(range(lo, hi))
            assert m["step_ranks"] == [ranks_[stage * tp + tp_rank]]
            assert m["record_heads"] == 4 // tp  # the record's costs: the rank's share of the heads


def test_each_rank_holds_its_share_of_the_weights(ranks):
    """Measured from the tensors each rank holds: a TP rank's layer weights are half of one
    rank's, the embedding sits on stage 0, the lm_head on the head rank only."""
    from engines.model.sources import open_model
    from engines.torch.engine import TorchCpuEngine

    one = TorchCpuEngine(open_model("tiny-gqa"))
    layer_bytes = sum(one.nbytes(t) for lw in one.layers for t in lw.tensors())
    split = sum(one.nbytes(getattr(lw, f)) for lw in one.layers for f in ("qkv", "qkv_bias", "o_proj", "gate_up", "down"))
    embed = one.nbytes(one.embed)
    members = _by_mesh(ranks["results"], "tp2|pp2")
    for m in members[(2, 1)]:
        assert m["sharded_bytes"] == split // 2
        head_bytes = one.nbytes(one.lm_head) + one.nbytes(one.final_norm) if m["mesh"][5] else 0
        assert m["weight_bytes"] == layer_bytes - split // 2 + embed + head_bytes
        one.reset(len(IDS) + N)  # the capacity the run's generation reset it to
        assert m["kv_bytes"] * 2 == one.kv_cache_bytes()  # half the KV heads
    stage0, stage1 = sorted(members[(1, 2)], key=lambda m: m["mesh"][3])
    assert stage0["sharded_bytes"] == 0 and stage0["weight_bytes"] < one.resident_weight_bytes
    # one rank holds the embedding and the head's packed copy of it (oneDNN); stage 0 holds the
    # first, the last stage the second: between them, the same bytes
    assert stage0["weight_bytes"] + stage1["weight_bytes"] == one.resident_weight_bytes
    assert stage1["weight_bytes"] - one.nbytes(one.lm_head) - one.nbytes(one.final_norm) == layer_bytes // 2


# --- one rank, no process group ---------------------------------------------------------------

def test_a_quantized_column_cut_equals_the_dequantized_columns():
    """Oracle: the gguf package's own quantizer and dequantizer."""
    from engines.model.safetensors_mmap import TensorRef
    from engines.model.shards import cut_ref
    from engines.quant.formats import QTensor, quantize

    a = np.random.default_rng(0).standard_normal((6, 128)).astype(np.float32)
    for fmt in ("Q8_0", "Q4_0", "Q4_1"):
        q = quantize(a, fmt)
        whole = QTensor(fmt, q.blocks, q.cols).dequantize()
        part = cut_ref(TensorRef(q.blocks, fmt, q.cols), 1, 32, 96)
        np.testing.assert_array_equal(QTensor(fmt, part.array, part.cols).dequantize(), whole[:, 32:96])
        with pytest.raises(UserError, match="split a .* block"):
            cut_ref(TensorRef(q.blocks, fmt, q.cols), 1, 16, 64)


def test_micro_batches_are_contiguous_whole_requests_of_about_equal_tokens():
    from types import SimpleNamespace

    from hypothesis import given, settings, strategies as st

    from engines.dist.batch import split_micro_batches

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.integers(1, 64), min_size=1, max_size=40), st.integers(1, 8))
    def check(ns, m):
        items = [SimpleNamespace(n=n) for n in ns]
        parts = split_micro_batches(items, m)
        assert [it for p in parts for it in p] == items  # contiguous, in order, each once
        assert len(parts) == min(m, len(items)) and all(parts)
        if len(parts) > 1 and max(ns) == min(ns):  # equal items: sizes within one item
            sizes = [len(p) for p in parts]
            assert max(sizes) - min(sizes) <= 1, sizes

    check()


def test_stages_take_contiguous_layers_and_every_layer_once():
    from engines.model.shards import stage_layers

    for L in (1, 4, 7, 24):
        for pp in range(1, L + 1):
            got = [list(stage_layers(L, pp, s)) for s in range(pp)]
            assert sum(got, []) == list(range(L))
            assert max(map(len, got)) - min(map(len, got)) <= 1


def test_joining_a_group_nobody_else_joins_ends_within_the_timeout():
    from engines.dist.group import init
    from engines.dist.launch import free_port

    t0 = time.monotonic()
    with pytest.raises(UserError, match="not every one of the 2 ranks joined"):
        init(0, 2, "gloo", "127.0.0.1", free_port(), timeout_s=2)
    assert time.monotonic() - t0 < 30


def test_a_port_in_use_is_one_line():
    from engines.dist.group import init

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(UserError, match="already in use"):
            init(0, 2, "gloo", "127.0.0.1", s.getsockname()[1], timeout_s=5)


@pytest.mark.parametrize("args,env,expect", [
    (["--tp", "3"], {}, "use --tp 1 or 2"),
    (["--pp", "5"], {}, "use --pp 1 to 4"),
    (["--tp", "0"], {}, "--tp must be 1 or more"),
    (["--tp", "2", "--dist-timeout", "0"], {}, "--dist-timeout must be a positive"),
    (["--tp", "2", "--backend", "simd"], {}, "the simd engine cannot be split"),
    (["--tp", "2", "--speculate", "ngram"], {}, "--speculate does not combine"),
    (["--tp", "2"], {"RANK": "0", "WORLD_SIZE": "2"}, "MASTER_ADDR is not set"),
    (["--tp", "2"], {"RANK": "0", "WORLD_SIZE": "4", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"},
     "torchrun started 4 ranks"),
])
def test_bad_layouts_are_one_line_before_any_rank_starts(monkeypatch, args, env, expect):
    from typer.testing import CliRunner

    from aios_cli.main import app

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    res = CliRunner().invoke(app, ["run", "--model", "tiny-gqa", "-n", "2", "--quiet", *args])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("aios: error: ") and expect in lines[0], res.output


def test_a_rank_killed_mid_run_ends_every_rank_with_one_line(tmp_path):
    """SIGKILL one spawned rank while it generates: the run ends within a bounded time, naming
    the dead rank, and no rank is left behind."""
    import psutil

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([*AIOS, "run", "--model", "tiny-gqa", "--tp", "2", "-n", "4000",
                          "--ignore-eos", "--dist-timeout", "20", "--no-warmup", "-f", "json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        parent = psutil.Process(p.pid)
        deadline = time.monotonic() + 90
        kids = []
        while time.monotonic() < deadline:  # wait until both ranks are generating (busy)
            kids = sorted((c for c in parent.children() if "spawn_main" in " ".join(c.cmdline())),
                          key=lambda c: c.create_time())
            if len(kids) == 2 and all(c.cpu_times().user > 3 for c in kids):
                break
            time.sleep(0.5)
        assert len(kids) == 2
        t0 = time.monotonic()
        os.kill(kids[1].pid, signal.SIGKILL)
        _, err = p.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert p.returncode == 2 and lines[-1].startswith("aios: error: rank 1 of 2 died (killed by SIGKILL)"), err
    assert "Traceback" not in err
    assert took < 30
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in kids)


def test_more_gpu_ranks_on_a_host_than_gpus_is_one_line(monkeypatch, capsys):
    """NCCL gives each rank its own GPU: two ranks of --backend cuda on a one-GPU host are
    refused before any starts (the cuda record's device; the GPU count is this test's)."""
    import typer

    import engines
    from aios_cli.parallel import check_gpus

    monkeypatch.setattr(engines, "gpu_count", lambda: 1)
    check_gpus("cuda", 1)
    check_gpus("torch", 4)  # CPU ranks need no GPU
    with pytest.raises(typer.Exit) as e:
        check_gpus("cuda", 2)
    assert e.value.exit_code == 2
    assert "2 ranks of --backend cuda on this host need a GPU each; it has 1" in capsys.readouterr().err


def test_under_torchrun_the_process_is_a_rank_and_rank_0_prints_every_rank(tmp_path):
    """torchrun's own ranks (RANK, WORLD_SIZE, MASTER_ADDR set): nothing is spawned again (each
    process is one rank), the records travel to rank 0 over the group, and only rank 0 prints:
    one JSON document holding both ranks, with one rank's greedy ids."""
    import json

    from engines.dist.launch import free_port

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                        "--master-port", str(free_port()), "-m", "aios_cli", "run", "--model", "tiny-gqa", "--tp", "2",
                        "-n", str(N), "--ignore-eos", "--prompt-ids", ",".join(map(str, IDS)), "-f", "json"],
                       capture_output=True, text=True, env=env, timeout=180, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    ranks = json.loads(p.stdout)  # one document: rank 1 printed nothing
    assert [r["rank"] for r in ranks] == [0, 1] and {r["tp"] for r in ranks} == {2}
    assert all(r["generated_token_ids"] == _reference("tiny-gqa")[0] for r in ranks)
    assert "spawning" not in p.stderr


# --- aios bench throughput over ranks -----------------------------------------------------------

@pytest.mark.parametrize("args,expect", [
    (["--micro-batches", "2"], "--micro-batches cuts a step for the stages of --pp"),
    (["--tp", "2", "--baseline"], "--baseline runs the batch-1 engine in this one process"),
    (["--tp", "3"], "use --tp 1 or 2"),
    (["--pp", "2", "--micro-batches", "0"], "--micro-batches must be 1 or more"),
])
def test_bad_batched_layouts_are_one_line(args, expect):
    from typer.testing import CliRunner

    from aios_cli.main import app

    res = CliRunner().invoke(app, ["bench", "throughput", "--model", "tiny-gqa", "-N", "2", "--quiet", *args])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("aios: error: ") and expect in lines[0], res.output


def test_bench_throughput_over_a_pipeline_reports_every_rank(tmp_path):
    """`aios bench throughput --pp 2 --micro-batches 2`: every request served in full; the
    steps CSV has each rank's steps (the same number), a later stage's recv and an earlier
    one's send; the summary's idle share is what the CSV's own op seconds give."""
    import csv
    import json

    steps = tmp_path / "steps.csv"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([*AIOS, "bench", "throughput", "--model", "tiny-gqa", "--pp", "2", "--micro-batches", "2",
                        "-N", "6", "--input-len", "4:12", "--output-len", "4:6", "--threads", "2", "-q", "-f", "json",
                        "--steps-csv", str(steps)], capture_output=True, text=True, env=env, timeout=180)
    assert p.returncode == 0, p.stderr
    [row] = json.loads(p.stdout)
    assert (row["tp"], row["pp"], row["micro_batches"], row["collectives"]) == (1, 2, 2, "gloo")
    assert row["requests"] == 6 and 6 * 4 <= row["output_tokens"] <= 6 * 6
    rows = list(csv.DictReader(steps.open()))
    by_rank = {r: [x for x in rows if x["rank"] == r] for r in ("0", "1")}
    assert len(by_rank["0"]) == len(by_rank["1"]) == row["steps"]
    assert all(float(x["recv_s"]) == 0 for x in by_rank["0"]) and any(float(x["recv_s"]) > 0 for x in by_rank["1"])
    assert any(float(x["send_s"]) > 0 for x in by_rank["0"]) and all(float(x["send_s"]) == 0 for x in by_rank["1"])
    comm = ("allreduce_s", "send_s", "recv_s", "broadcast_s")
    op_cols = [c for c in rows[0] if c.endswith("_s") and c not in ("wall_s", "schedule_s", "start_s")]
    compute = sum(float(x[c]) for x in rows for c in op_cols if c not in comm)
    wall = sum(float(x["wall_s"]) for x in rows)
    assert row["idle_share"] == pytest.approx(1 - compute / wall, rel=1e-3)
    assert 1 / 3 - 1e-9 <= row["bubble_model"] <= 1 / 2 + 1e-9  # (p-1)/(m+p-1) for m in 1..2


def test_bench_throughput_over_tp_ranks_agrees_on_poisson_arrivals():
    """A finite --rate: rank 0's clock decides each step which requests have come, so both TP
    ranks add the same ones (ranks that disagreed would deadlock or mismatch in a collective)."""
    import json

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([*AIOS, "bench", "throughput", "--model", "tiny-gqa", "--tp", "2", "--rate", "40", "-N", "5",
                        "--input-len", "4:8", "--output-len", "3:3", "--threads", "2", "-q", "-f", "json",
                        "--dist-timeout", "60"], capture_output=True, text=True, env=env, timeout=180)
    assert p.returncode == 0, p.stderr
    [row] = json.loads(p.stdout)
    assert (row["tp"], row["pp"], row["requests"], row["output_tokens"]) == (2, 1, 5, 15)
    assert row["mean_batch_size"] < 5  # arrivals spread over steps (at 40/s, not all in the first)
