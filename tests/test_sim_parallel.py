"""`aios sim parallel`: the cluster cost model against oracles that do not share its formulas.

A ring all-reduce is run step by step on real numbers (reduce-scatter, then all-gather), counting
the steps and the bytes each rank sends; the GPipe bubble is counted on a schedule played out
tick by tick; a layer's bytes and FLOPs are summed from the checkpoint's tensor shapes
(engines.model.weights.expected_shapes) and an explicit count of (query, key) pairs; a
pipeline's time is replayed as a flow shop from its stages. Then the command: its rows, its
formats, and one line with exit 2 for bad input. The gloo micro-benchmark runs once, tiny.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from aios_cli.errors import BAD_INPUT
from engines.ops import OP_INDEX
from aios_cli.main import app
from engines.model.config import PRESETS
from engines.model.weights import expected_shapes, layer_prefix
from profilers.sim import parallel as P
from profilers.sim.allreduce_bench import fit_link, measure_links
from profilers.sim.links import ACCELERATORS, LINKS, Accelerator, Link

runner = CliRunner()
H100 = ACCELERATORS["h100"]
NVLINK, IB = LINKS["nvlink"], LINKS["infiniband"]
E = 2  # bf16


# --- oracles --------------------------------------------------------------------------------

def simulated_ring(nbytes: float, n: int, link: Link, seed: int = 0) -> tuple[float, int, list[float]]:
    """All-reduce n ranks' vectors of n chunks around a ring, one step at a time: reduce-scatter
    (rank r sends its running sum of chunk r-k to r+1, which adds it), then all-gather (the
    finished chunks go round). Checks every rank ends with the true sum. Returns (seconds,
    steps, bytes each rank sent); a step costs the latency plus its largest message / bandwidth."""
    import random

    rng = random.Random(seed)
    data = [[rng.randint(-99, 99) for _ in range(n)] for _ in range(n)]
    want = [sum(data[r][c] for r in range(n)) for c in range(n)]
    chunk = nbytes / n
    seconds, steps, sent = 0.0, 0, [0.0] * n

    def step(messages):
        nonlocal seconds, steps
        for src, _, _, _ in messages:
            sent[src] += chunk
        seconds += link.latency + chunk / link.bandwidth
        steps += 1

    for k in range(n - 1):  # reduce-scatter
        msgs = [(r, (r + 1) % n, (r - k) % n, data[r][(r - k) % n]) for r in range(n)]
        step(msgs)
        for _, dst, c, v in msgs:
            data[dst][c] += v
    for k in range(n - 1):  # all-gather: rank r owns chunk r+1 after the reduce-scatter
        msgs = [(r, (r + 1) % n, (r + 1 - k) % n, data[r][(r + 1 - k) % n]) for r in range(n)]
        step(msgs)
        for _, dst, c, v in msgs:
            data[dst][c] = v
    assert all(row == want for row in data), "the simulated ring did not all-reduce"
    return seconds, steps, sent


def gpipe_idle_fraction(p: int, m: int) -> float:
    """Play a GPipe forward tick by tick: a stage takes its next microbatch once the stage
    before has finished it; count the stage-ticks nobody works."""
    done = [0] * p  # microbatches each stage has finished
    ticks = idle = 0
    while done[-1] < m:
        start = [s for s in range(p) if done[s] < m and (s == 0 or done[s - 1] > done[s])]
        idle += p - len(start)
        for s in start:
            done[s] += 1  # one tick per microbatch per stage; starts are decided before any finish
        ticks += 1
    return idle / (p * ticks)


def flow_shop(stage_s: list[float], hop_s: list[float], m: int) -> float:
    """When the last of m identical microbatches leaves the last stage: microbatch j enters stage
    s once it has left s-1 (plus the hop) and stage s has finished j-1."""
    p = len(stage_s)
    finish = [[0.0] * m for _ in range(p)]
    for s in range(p):
        for j in range(m):
            ready = finish[s - 1][j] + hop_s[s - 1] if s else 0.0
            free = finish[s][j - 1] if j else 0.0
            finish[s][j] = max(ready, free) + stage_s[s]
    return finish[-1][-1]


def layer_shapes(cfg):
    """Layer 0's tensors from the checkpoint layout: (name, shape)."""
    pre = layer_prefix(0)
    return [(k[len(pre):], s) for k, s in expected_shapes(cfg).items() if k.startswith(pre)]


def is_norm(name: str) -> bool:
    return name.endswith("norm.weight")


# --- the closed forms -----------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 8, 16])
@pytest.mark.parametrize("nbytes", [2, 1792, 7168, 33_554_432])
@pytest.mark.parametrize("link", [NVLINK, IB, LINKS["ethernet"]], ids=lambda ln: ln.name)
def test_ring_allreduce_is_a_ring_played_step_by_step(n, nbytes, link):
    seconds, steps, sent = simulated_ring(nbytes, n, link)
    assert steps == (2 * (n - 1) if n > 1 else 0)
    assert all(b == pytest.approx(2 * (n - 1) / n * nbytes) for b in sent)  # each rank sends the same
    assert P.ring_allreduce_s(nbytes, n, link) == pytest.approx(seconds, rel=1e-12, abs=0)


def test_a_hop_is_latency_plus_bytes_over_bandwidth():
    assert P.p2p_s(0, IB) == IB.latency
    assert P.p2p_s(50e9, IB) == pytest.approx(1 + 2.7e-6)  # 50 GB/s moves 50 GB in a second


@pytest.mark.parametrize("p", range(1, 7))
@pytest.mark.parametrize("m", [1, 2, 3, 4, 8, 13])
def test_bubble_is_the_idle_share_of_a_gpipe_schedule(p, m):
    assert P.pp_bubble(p, m) == pytest.approx(gpipe_idle_fraction(p, m))


@pytest.mark.parametrize("name", [*P.SHAPES, "qwen3-0.6b", "tiny"])
@pytest.mark.parametrize("tp", [1, 2, 4])
def test_layer_weight_bytes_are_the_checkpoint_tensors(name, tp):
    """Split tensors (matrices, q/k/v biases) / tp, norms whole: from the real tensor shapes."""
    cfg = P.shape(name)
    shapes = layer_shapes(cfg)
    split = sum(math.prod(s) for k, s in shapes if not is_norm(k))
    norms = sum(math.prod(s) for k, s in shapes if is_norm(k))
    cost = P.layer_cost(cfg, 1, 0, tp)
    assert cost.weight_bytes == pytest.approx((split / tp + norms) * E)
    assert P.layer_params(cfg) == (split, norms)


@pytest.mark.parametrize("name", P.SHAPES)
@pytest.mark.parametrize("tokens,context", [(1, 0), (1, 2048), (7, 0), (5, 11)])
def test_layer_flops_are_matmul_macs_and_attended_pairs(name, tokens, context):
    cfg = P.shape(name)
    macs = sum(math.prod(s) for k, s in layer_shapes(cfg) if len(s) == 2)  # every 2-D weight: one MAC a token
    pairs = sum(context + i + 1 for i in range(tokens))  # causal: token i sees the cache and itself
    attn = 2 * 2 * cfg.num_heads * cfg.head_dim * pairs  # QKᵀ and PV, 2 FLOPs a multiply-add
    for tp in (1, 2):
        assert P.layer_cost(cfg, tokens, context, tp).flops == pytest.approx((2 * tokens * macs + attn) / tp)


def test_qwen25_72b_is_the_published_size():
    """Qwen2.5-72B's model card: 72.7B parameters."""
    cfg = P.QWEN25_72B
    total = sum(math.prod(s) for s in expected_shapes(cfg).values())
    assert round(total / 1e9, 1) == 72.7
    assert P.memory_per_gpu(cfg, 1, 1, 0) == total * E


def test_the_bf16_72b_does_not_fit_one_h100_and_fits_two():
    one, two = (P.predict(P.QWEN25_72B, tp, 1, H100, NVLINK, IB, 8) for tp in (1, 2))
    assert not one.fits and two.fits


@pytest.mark.parametrize("name,valid", [("qwen2.5-0.5b", [1, 2]), ("qwen2.5-7b", [1, 2, 4]),
                                        ("qwen2.5-72b", [1, 2, 4, 8])])
def test_valid_tp_divides_the_kv_heads(name, valid):
    """0.5B has 2 KV heads, 7B 4, 72B 8 (their config.json)."""
    assert [t for t in range(1, 65) if P.valid_tp(P.shape(name), t)] == valid
    assert P.crossover(P.shape(name), H100, NVLINK).valid == valid


# --- a layout -------------------------------------------------------------------------------

def test_decode_under_pp_is_the_stages_in_turn_plus_the_hops():
    """Batch 1: the stages run one after another, so p stages cost one GPU's whole model plus
    p-1 hops of one token's activations (7B: 28 layers split evenly over 2 and 4)."""
    cfg = P.shape("qwen2.5-7b")
    one = P.predict(cfg, 1, 1, H100, NVLINK, IB, 8).decode.total_s
    for p in (2, 4):
        d = P.predict(cfg, 1, p, H100, NVLINK, IB, 8).decode
        assert d.total_s == pytest.approx(one + (p - 1) * P.p2p_s(cfg.hidden_size * E, NVLINK))
        assert d.bubble_fraction == pytest.approx((p - 1) / p)
        assert d.bubble_s == pytest.approx((p - 1) / p * (d.total_s - d.hops_s - d.other_s))


@pytest.mark.parametrize("name,tp,pp,m", [("qwen2.5-7b", 2, 2, 8), ("qwen2.5-7b", 4, 4, 8),
                                          ("qwen2.5-0.5b", 1, 5, 3), ("qwen2.5-72b", 8, 3, 16)])
def test_prefill_is_a_flow_shop_of_its_stages(name, tp, pp, m):
    """The total (less the replicated lm_head) is when a replayed pipeline finishes, uneven
    stages (24 layers over 5, 80 over 3) and a hop that crosses nodes included."""
    pr = P.predict(P.shape(name), tp, pp, H100, NVLINK, IB, 8, prompt_tokens=2048, microbatches=m).prefill
    assert len(pr.stage_s) == pp and len(pr.hop_s) == pp - 1 and pr.microbatches == m
    assert pr.total_s - pr.other_s == pytest.approx(flow_shop(pr.stage_s, pr.hop_s, m))
    parts = pr.compute_s + pr.allreduce_s + pr.hops_s + pr.bubble_s + pr.other_s
    assert parts == pytest.approx(pr.total_s)


def test_without_pp_microbatches_are_not_used():
    cfg = P.shape("qwen2.5-7b")
    a, b = (P.predict(cfg, 2, 1, H100, NVLINK, IB, 8, microbatches=m).prefill for m in (1, 16))
    assert a.total_s == b.total_s and b.microbatches == 1 and b.bubble_s == 0


@pytest.mark.parametrize("tp,pp,tp_link,pp_link", [(8, 1, NVLINK, None), (16, 1, IB, None), (4, 2, NVLINK, NVLINK),
                                                   (8, 2, NVLINK, IB), (1, 8, None, NVLINK), (1, 9, None, IB)])
def test_links_follow_the_node_boundaries(tp, pp, tp_link, pp_link):
    """8 GPUs a node, ranks stage-major: TP inside a node while it fits one; a hop crosses the
    boundary when its stages are on different nodes."""
    pr = P.predict(P.shape("qwen2.5-72b"), tp, pp, H100, NVLINK, IB, 8)
    assert pr.tp_link == (tp_link.name if tp_link else "")
    assert pr.pp_link == (pp_link.name if pp_link else "")
    one = P.ring_allreduce_s(P.QWEN25_72B.hidden_size * E, tp, tp_link) if tp_link else 0.0
    assert pr.decode.allreduce_s == pytest.approx(2 * one * P.stage_layers(80, pp)[0])  # the first stage is the largest


def test_tp_speeds_decode_until_the_all_reduces_dominate():
    """On NVLink the 72B's per-token decode falls with TP; on a slow link TP 8 is slower than 1."""
    cfg = P.shape("qwen2.5-72b")
    fast = [P.predict(cfg, t, 1, H100, NVLINK, IB, 8).decode.total_s for t in (1, 2, 4, 8)]
    assert fast == sorted(fast, reverse=True)
    slow = Link("slow", 1e9, 1e-3, "test")
    assert P.predict(cfg, 8, 1, H100, slow, slow, 8).decode.total_s > fast[0]


def test_crossover_from_the_shapes_and_a_simulated_ring():
    """A memory-bound accelerator (FLOPs never bind): one layer at tp n reads its split weights
    / n plus its norms and its K and V shard; find by hand the first n whose two simulated ring
    all-reduces take as long, and the model must agree."""
    cfg = P.shape("qwen2.5-7b")
    accel = Accelerator("membound", 1e30, 2e12, 80e9, "test")
    link = Link("l", 100e9, 2e-6, "test")
    context = 1000
    shapes = layer_shapes(cfg)
    split = sum(math.prod(s) for k, s in shapes if not is_norm(k)) * E
    norms = sum(math.prod(s) for k, s in shapes if is_norm(k)) * E

    def compute(n):
        kv_heads = max(cfg.num_kv_heads / n, 1)
        kv = 2 * kv_heads * cfg.head_dim * E * (context + 1 + 1)  # read context + the new token, write the new one
        return (split / n + norms + kv) / accel.hbm_bandwidth

    want = next(n for n in range(2, 65) if 2 * simulated_ring(cfg.hidden_size * E, n, link)[0] >= compute(n))
    got = P.crossover(cfg, accel, link, context=context)
    assert got.tp == want
    assert got.compute_s == pytest.approx(compute(want))
    assert got.largest_paying == max(t for t in (1, 2, 4) if t < want)


def test_no_crossover_on_a_free_link():
    free = Link("free", 1e30, 0.0, "test")
    c = P.crossover(P.shape("qwen2.5-0.5b"), H100, free)
    assert c.tp is None and c.largest_paying == c.largest_valid == 2


def test_bad_layouts_are_one_line_errors():
    from engines.errors import UserError

    cfg = P.shape("qwen2.5-0.5b")
    with pytest.raises(UserError, match="exceeds .* 24 layers"):
        P.predict(cfg, 1, 25, H100, NVLINK, IB, 8)
    with pytest.raises(UserError, match="tp must be"):
        P.predict(cfg, 0, 1, H100, NVLINK, IB, 8)
    with pytest.raises(UserError, match="microbatches"):
        P.predict(cfg, 1, 2, H100, NVLINK, IB, 8, prompt_tokens=4, microbatches=5)


# --- the fit and the measurement ------------------------------------------------------------

@pytest.mark.parametrize("world", [None, 2, 3, 4])
def test_the_fit_recovers_a_known_link(world):
    known = Link("known", 3.1e9, 42e-6, "test")
    sizes = [4096 * 4 ** i for i in range(6)]
    pts = [(n, P.p2p_s(n, known) if world is None else P.ring_allreduce_s(n, world, known)) for n in sizes]
    got = fit_link("fit", pts, world)
    assert got.bandwidth == pytest.approx(known.bandwidth, rel=1e-9)
    assert got.latency == pytest.approx(known.latency, rel=1e-9)


def test_a_flat_measurement_leaves_the_bandwidth_unresolved():
    """Noise larger than the bandwidth term (times that fall with size): no negative bandwidth,
    no failure; an infinite one, said so, and the latency is the (weighted) mean time."""
    link = fit_link("flat", [(4096, 2e-3), (65536, 1.9e-3), (1 << 20, 1.8e-3)])
    assert link.bandwidth == math.inf and "unresolved" in link.what
    assert 1.8e-3 < link.latency < 2e-3


def test_gloo_micro_benchmark_at_world_2():
    """Two real ranks on gloo over loopback (a few seconds, most of it starting them)."""
    m = measure_links(sizes_bytes=(4096, 65536, 1 << 20), world=2, repeats=3, warmup=1)
    assert m["correct"] and m["world"] == 2 and m["threads"] == 1 and m["backend"] == "gloo"
    assert len(m["load_before"]) == len(m["load_after"]) == 3
    assert sorted((r["op"], r["bytes"]) for r in m["rows"]) == sorted(
        (op, n) for op in ("allreduce", "p2p") for n in (4096, 65536, 1 << 20))
    for r in m["rows"]:
        assert 0 < r["min_s"] <= r["q1_s"] <= r["median_s"] <= r["q3_s"] <= r["max_s"] < 10, r
        assert r["repeats"] == 3
    ar, p2p = m["allreduce"], m["p2p"]
    assert ar.bandwidth > 0 and ar.latency >= 0 and p2p.bandwidth > 0 and p2p.latency >= 0  # inf if noise hid it
    r0 = next(r for r in m["rows"] if r["op"] == "allreduce" and r["bytes"] == 4096)
    assert r0["fit_s"] == pytest.approx(P.ring_allreduce_s(4096, 2, ar))
    assert r0["error_pct"] == pytest.approx(100 * (r0["fit_s"] / r0["median_s"] - 1))


# --- the command ----------------------------------------------------------------------------

def invoke(*args):
    return runner.invoke(app, ["sim", "parallel", *args])


def test_default_table_prices_three_models_and_their_crossovers():
    res = invoke()
    assert res.exit_code == 0, res.output
    out = res.output
    assert "model (estimate)" in out
    for name in P.DEFAULT_MODELS:
        assert sum(ln.split()[0] == name for ln in out.splitlines() if ln.strip()) == 4, name  # TP 1, 2, 4, 8
        assert re.search(rf"^{re.escape(name)}: TP stops paying at \d+ ", out, re.MULTILINE), name
    assert "hops" not in out.split("qwen2.5-0.5b")[0]  # no PP: no pipeline columns


def test_json_rows_add_up():
    res = invoke("-m", "qwen2.5-7b,qwen2.5-72b", "--tp", "1,2,8", "--pp", "1,2", "-f", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["estimate"] == "model" and data["measured"] is None
    rows = data["rows"]
    assert len(rows) == 2 * 3 * 2 and len(data["crossover"]) == 2
    for r in rows:
        for ph in ("decode", "prefill"):
            parts = sum(r[f"{ph}_{k}_s"] for k in ("compute", "allreduce", "hops", "bubble", "other"))
            assert parts == pytest.approx(r[f"{ph}_s"])
        assert r["gpus"] == r["tp"] * r["pp"]
    bad = [(r["model"], r["tp"]) for r in rows if not r["tp_valid"]]
    assert bad == [("qwen2.5-7b", 8), ("qwen2.5-7b", 8)]  # 4 KV heads; the 72B's 8 divide


def test_csv_and_md():
    from aios_cli.sim.parallel import ROW_COLUMNS

    res = invoke("-m", "qwen2.5-0.5b", "-f", "csv")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.output)))
    assert tuple(rows[0]) == ROW_COLUMNS and [r["tp"] for r in rows] == ["1", "2", "4", "8"]
    res = invoke("-m", "qwen2.5-0.5b", "--pp", "1,2", "-f", "md")
    assert res.exit_code == 0, res.output
    table = [ln for ln in res.output.splitlines() if ln.startswith("| qwen")]
    assert len(table) == 8 and all(ln.count("|") == 19 for ln in table)  # 18 columns with PP


def test_tp_that_does_not_divide_the_kv_heads_is_priced_and_flagged():
    res = invoke("-m", "qwen2.5-0.5b", "--tp", "4")
    assert res.exit_code == 0, res.output
    assert re.search(r"qwen2\.5-0\.5b\s+4 ✗", res.output) and "does not divide the KV heads" in res.output


@pytest.mark.parametrize("args,needle", [
    (("-m", "qwen9-huge"), "unknown --model 'qwen9-huge'"),
    (("--tp", "0"), "--tp values must be 1 or more"),
    (("--tp", "2,-4"), "--tp values must be 1 or more"),
    (("--pp", "x"), "--pp takes whole numbers"),
    (("--pp", "25", "-m", "qwen2.5-0.5b"), "exceeds qwen2.5-0.5b's 24 layers"),
    (("--context", "-1"), "--context must be 0 or more"),
    (("--prompt-tokens", "0"), "--prompt-tokens must be 1 or more"),
    (("--microbatches", "-3"), "--microbatches must be 1 or more"),
    (("--microbatches", "9", "--prompt-tokens", "8"), "exceeds --prompt-tokens"),
    (("--gpus-per-node", "0"), "--gpus-per-node must be 1 or more"),
    (("--link", "carrier-pigeon"), "unknown --link 'carrier-pigeon'"),
    (("--inter-link", "x"), "unknown --inter-link 'x'"),
    (("-a", "b200"), "unknown --accelerator 'b200'"),
    (("-f", "xml"), "unknown --format 'xml'"),
    (("--measure-links", "-f", "csv"), "CSV cannot hold"),
    (("--tp", "4096"), "use at most 1024"),
    (("--validate", "--validate-model", "tiny"), "does not split tiny's 1 KV heads evenly"),
    (("--validate", "--validate-model", "nope"), "--validate-model runs a preset"),
    (("--validate", "--rounds", "0"), "--validate needs --rounds >= 1"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle):
    res = invoke(*args)
    assert res.exit_code == BAD_INPUT, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("aios: error: ") and needle in lines[0], res.output
    assert "Traceback" not in res.output


def test_readme_documents_every_option():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = text.index("### `aios sim parallel`")
    end = text.find("\n### ", start + 1)
    section = text[start:end if end > 0 else None]
    rows = [ln for ln in section.splitlines() if ln.startswith("| `--")]
    documented = {o for ln in rows for o in re.findall(r"--[a-z0-9][a-z0-9-]*", ln.split("|")[1])}

    import typer.main

    cmd = typer.main.get_command(app).commands["sim"].commands["parallel"]
    options = {o for p in cmd.params if p.param_type_name == "option" for o in (*p.opts, *p.secondary_opts)
               if o.startswith("--") and o != "--help"}
    assert documented == options
    assert "Validation against measured runs (gloo)" in section


def test_shapes_are_the_presets_and_the_72b():
    """The 72B is the model's own shape, not a preset the engines would offer to run."""
    assert P.shape("qwen2.5-72b") is P.QWEN25_72B and P.shape("qwen2.5-7b") is PRESETS["qwen2.5-7b"]


def test_measure_links_flag_prints_measured_against_fitted_and_prices_gloo_with_the_fit(monkeypatch):
    """The command's side of --measure-links, on a made-up measurement (the real one is tested
    above): the rows and errors are printed, and --link gloo prices TP with the fitted link."""
    from profilers.sim import allreduce_bench

    fitted = Link("gloo-loopback (measured)", 1.5e9, 200e-6, "test fit")
    hop = Link("gloo-loopback p2p (measured)", 2e9, 50e-6, "test fit")
    rows = [{"op": "allreduce", "bytes": 4096, "median_s": 1e-3, "min_s": 9e-4, "max_s": 2e-3, "q1_s": 9.5e-4,
             "q3_s": 1.2e-3, "repeats": 3, "fit_s": 8e-4, "error_pct": -20.0}]
    fake = {"backend": "gloo", "world": 2, "threads": 1, "cpus": 2, "repeats": 3, "warmup": 1,
            "load_before": [0.5, 0.4, 0.3], "load_after": [0.6, 0.4, 0.3], "wall_s": 1.0, "correct": True,
            "rows": rows, "allreduce": fitted, "p2p": hop}
    monkeypatch.setattr(allreduce_bench, "measure_links", lambda *a, **k: fake)
    res = invoke("--measure-links", "-m", "qwen2.5-0.5b", "--tp", "2", "--link", "gloo")
    assert res.exit_code == 0, res.output
    assert "MEASURED" in res.output and "-20%" in res.output and "4.00 KiB" in res.output
    res = invoke("--measure-links", "-m", "qwen2.5-0.5b", "--tp", "2", "--link", "gloo", "-f", "json")
    data = json.loads(res.output)
    assert data["measured"]["allreduce"]["bandwidth"] == 1.5e9 and data["intra_link"]["name"] == fitted.name
    ar = data["rows"][0]["decode_allreduce_s"]
    assert ar == pytest.approx(2 * 24 * P.ring_allreduce_s(896 * E, 2, fitted))  # 24 layers, hidden 896


# --- --validate's prediction from a measured one-rank profile (profilers.sim.validate) ---------

def test_a_one_rank_profile_splits_each_decode_token_without_loss():
    """split + whole + outside of every layer is the decode token's whole wall time (the oracle:
    the record's own step walls), and the split ops are the ones a TP rank divides."""
    from engines.model.sources import open_model
    from engines.sampling import SamplingParams
    from profilers.harness import RunOptions, profile_run
    from profilers.sim.validate import decode_profile

    ckpt = open_model("tiny-gqa")
    rec = profile_run(ckpt, "torch", [1, 2, 3, 4], RunOptions(max_new_tokens=5, sampling=SamplingParams(), warmup=False))
    prof = decode_profile(rec)
    dec = rec.decode_steps
    wall = sum(s.wall_s for s in dec) / len(dec)
    assert prof["split"].shape == (ckpt.config.num_layers,)
    assert abs(prof["split"].sum() + prof["whole"].sum() + prof["outside"] - wall) < 1e-9
    norms = sum(float(s.durs_ns[(s.ops == OP_INDEX["attn_norm"]) | (s.ops == OP_INDEX["mlp_norm"])].sum()) * 1e-9
                for s in dec) / len(dec)
    assert abs(prof["whole"].sum() - norms) < 1e-9  # a layer's whole part is its two norms


def test_tp_and_pp_predictions_by_hand():
    from profilers.sim.links import Link
    from profilers.sim.validate import predict_pp, predict_tp

    prof = {"split": np.array([8e-3, 8e-3]), "whole": np.array([1e-3, 1e-3]), "outside": 5e-3}
    wide = {"split": np.array([6e-3, 3e-3]), "whole": np.array([1e-3, 1e-3]), "outside": 5e-3}
    ring = Link("r", bandwidth=1e9, latency=1e-4, what="")
    hop = Link("h", bandwidth=1e9, latency=2e-4, what="")
    tp = predict_tp(prof, wide, 2, 1000, ring, bcast_s=3e-4)
    # layer 0 is held to one rank on 2 threads (6 ms > 8/2), layer 1 halves (4 ms > 3); norms whole
    assert tp["compute_s"] == pytest.approx(6e-3 + 4e-3 + 2e-3)
    # 2 layers x 2 all-reduces x (2 x 1/2 x 1000 B / 1 GB/s + 2 steps x 0.1 ms), and the broadcast
    assert tp["comm_s"] == pytest.approx(4 * (1e-6 + 2e-4) + 3e-4)
    assert tp["total_s"] == pytest.approx(tp["compute_s"] + tp["comm_s"] + 5e-3)
    pp = predict_pp(prof, 2, 1000, hop, bcast_s=3e-4)
    assert pp["compute_s"] == pytest.approx(18e-3)  # batch 1: the stages take turns
    assert pp["comm_s"] == pytest.approx(2e-4 + 1e-6 + 3e-4)
