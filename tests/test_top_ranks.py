"""`aios top --tp N --pp M`: the ranks of a parallel run side by side, live.

Oracles: the ranks' figures are recomputed here from raw op arrays with plain loops (each op's
kind from the op table, the means over the tokens every rank reported); the printed panel is
checked against arithmetic on its own printed numbers (compute + collectives fit in a rank's
token; imbalance = slowest compute / mean; idle = 1 - Σcompute / Σwall; the run's rate = 1 /
the sampling rank's token) and against the model's shape (layers, ranks = tp x pp). The live
app is checked to have run its ranks as processes, and to leave none behind when it quits.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from aios_cli.main import app as cli
from engines.ops import KINDS, OP_INDEX, OPS
from profilers.dist_live import RanksTally, step_summary
from profilers.probe import Step
from tests.top_fixture import assert_one_error_line, pilot_test, piloted

pytestmark = pytest.mark.xdist_group("dist")
runner = CliRunner()
COMM = ("allreduce", "send", "recv", "broadcast")


# --- the parent's fold of the ranks' posts, against plain loops over the raw ops ------------------

def comm_step(rank: int, stage_layers: range, L: int, tp: int, pp: int, phase: str, index: int, seed: int) -> Step:
    """One pass of one rank as `engines.dist` laps it: recv or embed, per layer the math and
    (TP) two all-reduces, send or the head, the token's broadcast; random durations."""
    rng = np.random.default_rng(seed)
    stage, tp_rank = divmod(rank, tp)
    layers, ops = [-1], [OP_INDEX["embed"] if stage == 0 else OP_INDEX["recv"]]
    for i in stage_layers:
        for op in ("attn_norm", "qkv_proj", "attn_scores", "o_proj", *(["allreduce"] if tp > 1 else []),
                   "mlp_norm", "gate_up_proj", "down_proj", *(["allreduce"] if tp > 1 else [])):
            layers.append(i)
            ops.append(OP_INDEX[op])
    tail = ["send"] if stage < pp - 1 else (["final_norm", "lm_head", "sample"] if tp_rank == 0 else [])
    for op in [*tail, "broadcast"]:
        layers.append(-1)
        ops.append(OP_INDEX[op])
    st = Step(phase, index, 5 if phase == "prefill" else 1, 0, rank=rank)
    st.layers = np.array(layers, np.int32)
    st.ops = np.array(ops, np.int16)
    st.durs_ns = rng.integers(10_000, 3_000_000, len(ops)).astype(np.int64)
    st.starts_ns = np.concatenate([[0], np.cumsum(st.durs_ns)[:-1]])
    st.wall_s = float(st.durs_ns.sum()) * 1e-9 + 1e-4  # 0.1 ms no op claimed
    return st


def oracle_row(steps: list[Step]) -> dict:
    """Mean seconds per token of compute (every op not of kind comm) and of each collective."""
    out = {k: 0.0 for k in ("wall", "compute", *COMM)}
    for st in steps:
        out["wall"] += st.wall_s
        for op, d in zip(st.ops.tolist(), st.durs_ns.tolist()):
            name = OPS[op].name
            out[name if OPS[op].kind == "comm" else "compute"] += d * 1e-9
    return {k: v / len(steps) for k, v in out.items()}


def oracle_table(st: Step, L: int) -> np.ndarray:
    tab = np.zeros((L + 2, len(KINDS)))
    for layer, op, d in zip(st.layers.tolist(), st.ops.tolist(), st.durs_ns.tolist()):
        row = layer + 1 if layer >= 0 else (0 if OPS[op].name in ("embed", "recv") else L + 1)
        tab[row, KINDS.index(OPS[op].kind)] += d * 1e-9
    tab[L + 1, KINDS.index("other")] += st.wall_s - st.durs_ns.sum() * 1e-9
    return tab


@pytest.mark.parametrize("tp,pp", [(2, 1), (1, 2), (2, 2)])
def test_the_fold_is_the_mean_over_the_tokens_every_rank_reported(tp, pp):
    L, world, window = 4, tp * pp, 3
    tally = RanksTally(tp, pp, L, window)
    per_stage = L // pp
    steps = {r: [] for r in range(world)}
    for r in range(world):
        stage, tp_rank = divmod(r, tp)
        held = range(stage * per_stage, (stage + 1) * per_stage)
        tally.places[r] = {"stage": stage, "tp_rank": tp_rank, "layers": (held.start, held.stop),
                           "head": r == (pp - 1) * tp}
        rows = [0, *range(held.start + 1, held.stop + 1), L + 1] if tp_rank == 0 else None
        pre = comm_step(r, held, L, tp, pp, "prefill", 0, 1000 + r)
        tally.add(r, step_summary(pre, 0, L, rows))
        # the last rank lags: it has reported one token fewer than the others
        for i in range(1, 6 if r < world - 1 else 5):
            st = comm_step(r, held, L, tp, pp, "decode", i, 100 * r + i)
            steps[r].append(st)
            tally.add(r, step_summary(st, 0, L, rows))
    fig = tally.figures()
    common = [2, 3, 4]  # the last `window` tokens every rank has: 1..4, less the lagging rank's 5th
    assert fig.tokens == window
    for r, row in enumerate(fig.rows):
        want = oracle_row([s for s in steps[r] if s.token_index in common])
        assert row["decode_s_per_token"] == pytest.approx(want["wall"], rel=1e-12)
        assert row["compute_s_per_token"] == pytest.approx(want["compute"], rel=1e-12)
        for op in COMM:
            assert row[f"{op}_s_per_token"] == pytest.approx(want[op], rel=1e-12, abs=1e-15)
        assert row["compute_s_per_token"] + row["comm_s_per_token"] < row["decode_s_per_token"]
    comp = [oracle_row([s for s in steps[r] if s.token_index in common])["compute"] for r in range(world)]
    walls = [oracle_row([s for s in steps[r] if s.token_index in common])["wall"] for r in range(world)]
    assert fig.balance["imbalance"] == pytest.approx(max(comp) / (sum(comp) / world))
    assert fig.balance["idle_share"] == pytest.approx(1 - sum(comp) / sum(walls))
    head = (pp - 1) * tp
    assert fig.tokens_per_s == pytest.approx(1 / walls[head])
    # the model's layers, each from its stage's tp-rank 0; in from stage 0, out from the head
    latest = {r: next(s for s in steps[r] if s.token_index == 4) for r in range(world)}
    want = np.zeros((L + 2, len(KINDS)))
    for stage in range(pp):
        lead = stage * tp
        tab = oracle_table(latest[lead], L)
        lo = stage * per_stage
        want[lo + 1:lo + per_stage + 1] = tab[lo + 1:lo + per_stage + 1]
        if stage == 0:
            want[0] = tab[0]
    want[L + 1] = oracle_table(latest[head], L)[L + 1]
    np.testing.assert_allclose(fig.latest, want, rtol=1e-12, atol=1e-15)
    assert fig.latest_wall == latest[head].wall_s


def test_before_every_rank_reports_a_token_there_are_no_figures():
    tally = RanksTally(2, 1, 4)
    tally.places[0] = {"stage": 0, "tp_rank": 0, "layers": (0, 4), "head": True}
    tally.add(0, step_summary(comm_step(0, range(4), 4, 2, 1, "decode", 1, 0), 0, 4, [0, 1, 2, 3, 4, 5]))
    fig = tally.figures()
    assert fig.tokens == 0 and fig.latest is None and fig.tokens_per_s is None
    assert fig.balance == {"imbalance": None, "idle_share": None}


# --- the command: --once over two real ranks ------------------------------------------------------

def _seconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(µs|ms|s)", text).groups()
    return float(value) * {"µs": 1e-6, "ms": 1e-3, "s": 1.0}[unit]


def test_once_prints_every_rank_side_by_side_with_consistent_numbers():
    res = runner.invoke(cli, ["top", "--once", "--tp", "2", "-m", "tiny-gqa", "-n", "4", "--threads", "2",
                              "--dist-timeout", "120"], env={"COLUMNS": "120"})
    assert res.exit_code == 0, res.output
    out = res.output
    assert "ranks · TP=2 x PP=1 · decode" in out and "gen 1 · tok 4" in out
    box = out[out.index("ranks · TP=2"):out.index("tokens/s")]
    lines = box.splitlines()
    ranks = [int(x) for line in lines for x in re.findall(r"rank (\d+)", line)]
    assert ranks == [0, 1]  # tp x pp of them, side by side on one line
    assert "per token, mean of the last 3 on every rank" in box  # -n 4: a prefill, then 3 decode tokens
    places = [m for line in lines for m in re.findall(r"stage (\d+) · tp (\d+) · layers (\d+)-(\d+)", line)]
    assert places == [("0", "0", "0", "3"), ("0", "1", "0", "3")]  # tiny-gqa's 4 layers on both
    walls = [_seconds(m) for line in lines for m in re.findall(r"([\d.]+(?:µs|ms|s)) a token", line)]
    parts = {}
    for line in lines:
        for name, value in re.findall(r"(compute|allreduce|send|recv|broadcast)\s+([\d.]+(?:µs|ms|s)|-)", line):
            parts.setdefault(name, []).append(0.0 if value == "-" else _seconds(value))
    assert set(parts) == {"compute", "allreduce", "broadcast"}  # TP alone: no pipeline send or recv
    assert all(len(v) == 2 for v in parts.values()) and len(walls) == 2
    for r in range(2):
        assert parts["allreduce"][r] > 0 and parts["compute"][r] > 0
        assert sum(v[r] for v in parts.values()) <= walls[r] * 1.001  # printed to 4 digits
    comp = parts["compute"]
    imbalance, idle = re.search(r"imbalance ([\d.]+) \(slowest compute / mean\)\s+idle ([\d.]+)%", box).groups()
    assert float(imbalance) == pytest.approx(max(comp) / (sum(comp) / 2), abs=0.011)
    assert float(idle) / 100 == pytest.approx(1 - sum(comp) / sum(walls), abs=0.002)
    rate = float(re.search(r"run ([\d.]+) tok/s", box).group(1))
    assert rate == pytest.approx(1 / walls[0], rel=0.01)  # rank 0 samples at PP=1


@pytest.mark.parametrize("argv,needle", [
    (["--serve"], "--serve runs the batched engine"),
    (["--url", "http://127.0.0.1:1"], "--url watches a server"),
    (["--speculate", "ngram"], "--speculate does not combine"),
    (["--csv", "x.csv"], "keeps no op events"),
    (["-b", "simd"], "the simd engine cannot be split"),
    (["-b", "scalar"], "the scalar engine cannot be split"),
    (["--profile", "token"], "--profile token does not record"),
    (["--tp", "3"], "use --tp 1 or 2"),
    (["--pp", "9"], "use --pp 1 to 4"),
    (["--tp", "0"], "--tp must be 1 or more"),
    (["--dist-timeout", "0"], "--dist-timeout must be a positive"),
])
def test_combinations_that_make_no_sense_are_one_line(argv, needle):
    base = ["top", "--once", "-m", "tiny-gqa", "-n", "2"]
    tp = [] if "--tp" in argv else ["--tp", "2"]
    assert_one_error_line(runner.invoke(cli, [*base, *tp, *argv]), needle)


def test_the_live_ranks_view_needs_a_terminal():
    assert_one_error_line(runner.invoke(cli, ["top", "--tp", "2", "-m", "tiny-gqa"]), "--tp 2 --pp 1 --once")


# --- the live app: the ranks panel, and quitting ends every rank ----------------------------------

def _ranks_of(pid: int) -> list:
    import psutil

    return [c for c in psutil.Process(pid).children(recursive=True)
            if c.is_running() and c.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(c.cmdline())]


@pilot_test
async def test_pilot_shows_the_ranks_and_quitting_leaves_no_rank_behind():
    import os

    from aios_cli.tui.ranks_app import RanksApp, RanksHelp
    from aios_cli.tui.ranks_session import RanksSession
    from engines.model.sources import open_model
    from engines.sampling import SamplingParams
    from profilers.dist_live import LiveJob
    from profilers.harness import RunOptions

    ckpt = open_model("tiny-gqa")
    ids = ckpt.tokenizer.encode("The quick brown fox").ids
    opts = RunOptions(max_new_tokens=4, sampling=SamplingParams(greedy=True), ignore_eos=True)
    job = LiveJob(model="tiny-gqa", backend="torch", prompt_ids=ids, opts=opts, tp=2, pp=1, timeout_s=120, mute=True)
    s = RanksSession(ckpt, job, [("The quick brown fox", ids)], threads=1)
    seen = 0
    try:
        async with piloted(RanksApp, s, (120, 40)) as (app, pilot):
            t0 = time.monotonic()
            # two generations of 4 tokens: the ranks go on after --max-new-tokens, and report every token
            while not (app.view.generation >= 2 and app.view.ranks.tokens >= 2):
                assert time.monotonic() - t0 < 150, f"no figures from both ranks: {app.view.state} {app.view.message}"
                seen = max(seen, len(_ranks_of(os.getpid())))
                await pilot.pause(0.2)
            seen = max(seen, len(_ranks_of(os.getpid())))
            await pilot.pause(0.3)
            panel = app.query_one("#ranks").draw(116, 9).plain
            assert "rank 0 · samples" in panel and "rank 1" in panel
            assert "stage 0 · tp 1 · layers 0-3" in panel and "imbalance" in panel
            rows = app.view.ranks.rows
            assert all(r["compute_s_per_token"] + r["comm_s_per_token"] <= r["decode_s_per_token"] for r in rows)
            await pilot.press("m")  # the layer bars as shares of the token; no GB/s: the ranks post no bytes
            assert app.metric == "share"
            await pilot.press("l")
            assert app.query_one("TabbedContent").active == "prefill"
            await pilot.press("question_mark")
            assert isinstance(app.screen, RanksHelp)
            await pilot.press("escape")
            await pilot.press("q")
    finally:
        stopped = s.stop(timeout=10)  # as `aios top` does after the app (and on a failure here)
    assert stopped
    assert seen == 2  # the ranks ran as processes of their own
    assert _ranks_of(os.getpid()) == []
