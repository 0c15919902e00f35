"""`aios top --serve`: the serving monitor against the engine it watches, the panels against
the view they draw, the session's round and quit paths, the app under Textual's Pilot, and the
command's `--once` and bad-input paths.

Oracles: the block manager's own tables and reference counts (recounted here from the running
requests, not read from the monitor), the requests' own timestamps, and the workload itself.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from aios_cli.errors import BAD_INPUT
from aios_cli.main import app as cli
from aios_cli.tui import serve_panels
from engines.ops import KINDS
from aios_cli.tui.serve_session import ServeOptions, ServeSession
from engines import engine_class
from engines.batch.engine import BatchEngine
from profilers import throughput as T
from profilers.probe import make_probe
from profilers.serving import FREE, FREE_CACHED, ServeView, ServingMonitor
from tests.top_fixture import assert_one_error_line, pilot_test, piloted

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()


@pytest.fixture(scope="module")
def eng(tiny):
    return engine_class("torch")(tiny)


def _shared_work(eng, n=8, seed=0):
    return T.synthetic(n, (3, 30), (4, 12), math.inf, eng.cfg.vocab_size, seed, prefix_len=20)


def _watched_steps(eng, blocks=20):
    """Step a workload with a shared prefix through a small pool; yield (engine, monitor, view)
    after every step, the view captured right then."""
    be = BatchEngine(eng, num_blocks=blocks, block_size=8, max_num_seqs=6, max_num_batched_tokens=64)
    mon = ServingMonitor(be)
    probe = make_probe("op", "cpu", None)
    be.set_lap(probe.lap)
    reqs = [be.add_request(w.prompt_ids, w.max_new_tokens) for w in _shared_work(eng)]
    while be.has_unfinished():
        out = be.step(probe)
        mon.on_step(out)
        yield be, mon, mon.capture(model="tiny", backend="torch"), out
    be.set_lap(None)
    assert all(r.finished for r in reqs)


def test_kv_map_matches_the_block_tables(eng):
    saw_shared = saw_cached = saw_preempt = False
    for be, mon, v, out in _watched_steps(eng):
        running = be.scheduler.running
        holders: dict[int, list[int]] = {}
        for i, r in enumerate(running):
            for bid in r.table.blocks:
                holders.setdefault(bid, []).append(i)
        for bid, o in enumerate(v.owners):
            if bid in holders:
                assert o == holders[bid][0], f"block {bid}: drawn as {o}, first held by {holders[bid][0]}"
            else:
                assert o in (FREE, FREE_CACHED)
                assert (o == FREE_CACHED) == (be.blocks.cached.get(be.blocks.blocks[bid].hash) == bid)
        assert set(v.shared) == {b for b, hs in holders.items() if len(hs) > 1}
        assert v.blocks_used == be.blocks.num_used
        assert [r["id"] for r in v.running] == [r.id for r in running]
        assert v.num_waiting == len(be.scheduler.waiting)
        saw_shared |= bool(v.shared)
        saw_cached |= FREE_CACHED in v.owners
        saw_preempt |= bool(out.scheduled.preempted)
    assert saw_shared and saw_cached and saw_preempt, "the workload should share, cache and preempt"


def test_monitor_totals_and_latencies_are_the_requests_own(eng):
    be = BatchEngine(eng, num_blocks=200, block_size=8, max_num_seqs=4, max_num_batched_tokens=32)
    mon = ServingMonitor(be)
    work = _shared_work(eng, 6, seed=3)
    reqs = [be.add_request(w.prompt_ids, w.max_new_tokens) for w in work]
    walls = 0.0
    while be.has_unfinished():
        out = be.step()
        walls += out.wall_s
        mon.on_step(out)
    v = mon.capture()
    assert v.output_tokens == sum(w.max_new_tokens for w in work) == sum(h[2] for h in v.history)
    assert v.finished == len(work) and v.steps == len(v.history)
    assert v.step_seconds == pytest.approx(walls)
    by_finish = sorted(reqs, key=lambda r: r.finished_s)
    assert v.ttft_s == pytest.approx([r.first_token_s - r.arrival_s for r in by_finish])
    assert v.tpot_s == pytest.approx([(r.finished_s - r.first_token_s) / (len(r.output_ids) - 1) for r in by_finish])
    assert v.latest is None  # no probe: no layer table


def test_layer_table_of_the_batched_step_adds_up_to_its_wall(eng):
    for be, mon, v, out in _watched_steps(eng):
        st = out.probe_step
        assert v.latest.shape == (eng.cfg.num_layers + 2, len(KINDS))
        assert v.latest.sum() == pytest.approx(st.wall_s, rel=1e-9)
        assert v.latest_prefill == out.scheduled.prefill_tokens and v.latest_decode == out.scheduled.decode_seqs
        assert 1 <= v.avg_n <= 16
        assert v.avg.sum() == pytest.approx(v.avg_wall, rel=1e-9)


def test_view_survives_json(eng):
    *_, (be, mon, v, out) = list(_watched_steps(eng))
    back = ServeView.from_json(json.loads(json.dumps(v.to_json())))
    for k, val in v.to_json().items():
        got = back.to_json()[k]
        assert got == val, k
    assert isinstance(back.latest, np.ndarray)


# --- panels ---------------------------------------------------------------------------------

def _view_with(owners, shared=(), running=()):
    return ServeView(num_blocks=len(owners), block_size=16, owners=list(owners), shared=list(shared),
                     running=list(running), max_num_seqs=8)


def test_kv_map_draws_one_cell_per_block_when_it_fits():
    owners = [0, 0, 1, FREE, FREE_CACHED, 2, FREE] * 10
    v = _view_with(owners, shared=[0, 7])
    text = serve_panels.kv_map_panel(v, 20, 10).plain.split("\n")
    grid = "".join(text[2:])
    assert len(grid) == len(owners)
    for bid, ch in enumerate(grid):
        want = (serve_panels.SHARED_CH if bid in (0, 7) else serve_panels.OWNED_CH if owners[bid] >= 0
                else serve_panels.CACHED_CH if owners[bid] == FREE_CACHED else serve_panels.FREE_CH)
        assert ch == want, bid
    assert text[0].startswith(f"{sum(o >= 0 for o in owners)}/{len(owners)} blocks used")


def test_kv_map_groups_blocks_when_the_pool_is_larger_than_the_panel():
    owners = [FREE] * 1000
    owners[999] = 3
    text = serve_panels.kv_map_panel(_view_with(owners), 10, 5).plain.split("\n")
    grid = "".join(text[2:-1])
    per = math.ceil(1000 / (3 * 10))
    assert len(grid) == math.ceil(1000 / per)
    assert grid[-1] == serve_panels.OWNED_CH and set(grid[:-1]) == {serve_panels.FREE_CH}
    assert f"one cell = {per} blocks" in text[-1]


def test_binned_throughput_keeps_every_token():
    rng = np.random.default_rng(0)
    t, hist = 0.0, []
    for _ in range(300):
        wall = float(rng.uniform(0.01, 0.2))
        t += wall
        hist.append([t, wall, int(rng.integers(0, 9)), int(rng.integers(1, 9)), 0, 0, 0])
    cols = 50
    w, per_bin, bsz_bins = serve_panels.time_bins(hist, 1e9, cols)
    assert len(per_bin) <= cols
    assert per_bin.sum() * w == pytest.approx(sum(h[2] for h in hist))  # every token in one bin
    span = hist[-1][0] - (hist[0][0] - hist[0][1])
    assert w * len(per_bin) == pytest.approx(span)
    assert bsz_bins.max() <= 8 and bsz_bins.min() >= 0
    rate, bsz = serve_panels.binned(hist, 1e9, cols)
    assert len(rate) == len(bsz) == cols and set(rate) == set(per_bin.tolist())
    recent = serve_panels.time_bins(hist, 5.0, cols)  # the last 5 s only
    assert recent[1].sum() * recent[0] == pytest.approx(sum(h[2] for h in hist if h[0] > hist[-1][0] - 5.0))


def test_batch_panel_lists_the_running_and_the_queue():
    running = [{"id": f"r1-{i}", "prompt": 10, "out": i, "max": 8, "prefill": i == 0, "computed": 4, "blocks": 2,
                "cached": 16 if i == 2 else 0, "preempted": 0} for i in range(5)]
    v = _view_with([0] * 4, running=running)
    v.waiting = [{"id": f"r1-{i}", "prompt": 7, "max": 8, "wait_s": 1.0, "preempted": i == 9} for i in range(9, 30)]
    v.num_waiting = 40
    v.history = [[1.0, 0.1, 4, 5, 40, 4, 12]]
    lines = serve_panels.batch_panel(v, 90, 20).plain.split("\n")
    assert lines[0].startswith("running 5/8  waiting 40")
    assert "prefill" in lines[1] and "4/10 tok" in lines[1]
    assert "decode" in lines[3] and "2/8 out" in lines[3] and "16 cached" in lines[3]
    assert lines[-1].startswith("queue r1-9(7, pre) r1-10(7)")
    listed = lines[-1].count("(")
    assert lines[-1].endswith(f"+{40 - listed} more")


def test_latency_panel_percentiles():
    v = ServeView(ttft_s=[0.1 * i for i in range(1, 101)], tpot_s=[0.02] * 10)
    text = serve_panels.latency_panel(v, 80, 10).plain
    assert "p50 5.05s" in text and "p99 9.90s" in text
    assert "n=100" in text and "n=10" in text


# --- the session ------------------------------------------------------------------------------

def test_session_round_is_the_bench_throughput_workload(tiny):
    opts = ServeOptions(num_requests=6, input_len=(4, 20), output_len=(3, 9), prefix_len=16, block_size=8)
    s = ServeSession(tiny, "torch", None, opts)
    s.run_once()
    work = T.synthetic(6, (4, 20), (3, 9), math.inf, tiny.config.vocab_size, 0, 16)
    r = s.rounds[0]
    assert r["requests"] == 6 and r["output_tokens"] == sum(w.max_new_tokens for w in work)
    assert r["prompt_tokens"] == sum(len(w.prompt_ids) for w in work)
    v = s.view()
    assert v.state == "done" and v.output_tokens == r["output_tokens"] and v.finished == 6
    assert s.peak is not None and s.peak.blocks_used >= v.blocks_used
    assert s.be.blocks.num_used == 0


def test_quit_mid_round_gives_every_block_back(tiny):
    opts = ServeOptions(num_requests=40, input_len=(4, 20), output_len=(200, 300), block_size=8)
    s = ServeSession(tiny, "torch", None, opts)
    s.start()
    t0 = time.monotonic()
    while not (s.view().state == "serving" and s.view().running) and time.monotonic() - t0 < 90:
        time.sleep(0.05)
    assert s.view().running, "the session did not start serving"
    s.pause(True)
    t0 = time.monotonic()
    while s.view().state != "paused" and time.monotonic() - t0 < 30:
        time.sleep(0.02)
    assert s.view().state == "paused"
    steps = s.view().steps
    time.sleep(0.5)
    assert s.view().steps == steps  # paused: no step ran
    assert s.stop(timeout=30)
    assert s.be.blocks.num_used == 0 and not s.be.requests
    assert s.be.blocks.num_free == s.be.blocks.num_blocks


# --- the app ---------------------------------------------------------------------------------

async def _until_serving(app, pilot, timeout_s=90.0):
    t0 = time.monotonic()
    while not (app.view.state == "serving" and app.view.running) and time.monotonic() - t0 < timeout_s:
        await pilot.pause(0.05)


@pytest.mark.slow
@pilot_test
async def test_pilot_serving_view_draws_live(tiny, tmp_path):
    from aios_cli.tui.serve_app import ServeApp, ServeHelp

    opts = ServeOptions(num_requests=12, input_len=(4, 20), output_len=(40, 80), prefix_len=16, block_size=8)
    s = ServeSession(tiny, "torch", None, opts)
    stats = tmp_path / "stats.json"
    async with piloted(ServeApp, s, (140, 45), stats_path=stats) as (app, pilot):
        await _until_serving(app, pilot)
        await pilot.pause(0.5)
        kv = app.query_one("#kv")
        drawn = "".join(kv.render_line(y).text for y in range(kv.size.height))
        assert "blocks used" in drawn and serve_panels.OWNED_CH in drawn
        batch = app.query_one("#batch")
        head = batch.render_line(0).text
        assert head.startswith("running ")
        await pilot.press("m")
        assert app.metric == "share"
        await pilot.press("space")
        assert s.paused
        await pilot.press("space")
        assert not s.paused
        await pilot.press("question_mark")
        assert isinstance(app.screen, ServeHelp)
        await pilot.press("escape")
        await pilot.press("q")
    got = json.loads(stats.read_text())
    assert got["output_tokens"] > 0 and got["steps"] > 0
    assert s.be.blocks.num_used == 0


@pytest.mark.slow
@pilot_test
async def test_pilot_export_writes_the_finished_rounds_requests(tiny, tmp_path):
    from aios_cli.tui.serve_app import ServeApp

    # Poisson arrivals: round 1 cannot end before its last request arrives, whatever the machine
    opts = ServeOptions(num_requests=4, rate=1.0, input_len=(4, 12), output_len=(20, 40), block_size=8)
    last_arrival = max(w.arrival_s for w in T.synthetic(4, (4, 12), (20, 40), 1.0, tiny.config.vocab_size, 0))
    assert last_arrival > 1.0, last_arrival  # the seed's draw leaves a second to press e in
    s = ServeSession(tiny, "torch", None, opts)
    (tmp_path / "m[").mkdir()
    out = tmp_path / "m[" / "]reqs.csv"  # the path holds `[/]`: the notice must show it, not parse it as markup
    async with piloted(ServeApp, s, (140, 45), notifications=True, export_path=out) as (app, pilot):
        t0 = time.monotonic()
        while app.view.state not in ("serving", "idle") and time.monotonic() - t0 < 90:  # loaded, round 1 begun
            await pilot.pause(0.05)
        assert not s.rounds, "the first round ended before the test could press e during it"
        await pilot.press("e")  # nothing has finished yet: refused, nothing written
        assert not app.exporting and not out.exists()
        t0 = time.monotonic()
        while not s.rounds and time.monotonic() - t0 < 90:
            await pilot.pause(0.05)
        s.pause(True)  # hold the rounds still while the export is read back
        await pilot.pause(0.2)
        await pilot.press("e")
        t0 = time.monotonic()
        while (app.exporting or app.last_export is None) and time.monotonic() - t0 < 30:
            await pilot.pause(0.05)
        assert app.last_export == out, [n.message for n in app._notifications]
        rows = _check_requests_csv(out.read_text(), opts, tiny.config.vocab_size, rounds=len(s.rounds))
        assert rows == app.last_export_rows == sum(r["requests"] for r in s.rounds)
        await pilot.press("q")


# --- the command ------------------------------------------------------------------------------

def test_serve_once_prints_the_serving_panels():
    res = runner.invoke(cli, ["top", "--serve", "--once", "-m", "tiny", "-N", "6", "--prefix-len", "16",
                              "--output-len", "4:8"], env={"COLUMNS": "120"})
    assert res.exit_code == 0, res.output
    for title in ("batch · queue", "KV blocks", "layers · batched step", "throughput", "latency", "system"):
        assert title in res.output
    assert "6 done" in res.output and "shared" in res.output


@pytest.mark.parametrize("argv,needle", [
    (["top", "--serve", "--once", "-m", "tiny", "--quant", "q8_0"], "drop --quant"),
    (["top", "--serve", "--once", "-m", "tiny", "-b", "simd"], "torch or cuda"),
    (["top", "--serve", "--once", "-m", "tiny", "--prompt", "hi"], "random prompts"),
    (["top", "--serve", "--once", "-m", "tiny", "--rate", "0"], "--rate must be positive"),
    (["top", "--serve", "--once", "-m", "tiny", "--input-len", "9:3"], "--input-len"),
    (["top", "--serve", "--once", "-m", "tiny", "--prefix-len", "-1"], "--prefix-len"),
    (["top", "--serve", "--once", "-m", "tiny", "--profile", "token"], "op or none"),
    (["top", "--serve", "--once", "-m", "tiny", "--output-len", "5000"], "context"),
])
def test_serve_bad_input_is_one_line(argv, needle):
    assert_one_error_line(runner.invoke(cli, argv), needle)


@pytest.mark.parametrize("args,needle", [
    (["--url", "http://127.0.0.1:9", "--csv", "x.csv"], "aios serve --requests-csv"),
    (["--serve", "--once", "--csv", "/nonexistent-aios-dir/x.csv"], "--csv /nonexistent-aios-dir/x.csv"),
    (["--serve", "--csv", "-"], "the terminal the live view draws on"),
    (["--csv", "/dev/stdout"], "the terminal the live view draws on"),
])
def test_export_targets_refused_in_one_line(args, needle):
    assert_one_error_line(runner.invoke(cli, ["top", "-m", "tiny", *args]), needle)


def _check_requests_csv(text: str, opts: ServeOptions, vocab: int, rounds: int) -> int:
    """The export against the workloads that were served: round k's rows are T.synthetic's
    requests for seed + k - 1, each its own full output (EOS is ignored), and every latency is
    the difference of the row's own timestamps. Returns the number of rows."""
    import csv
    import io

    from profilers.export import REQUEST_COLUMNS

    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows and tuple(rows[0].keys()) == REQUEST_COLUMNS
    assert len({r["id"] for r in rows}) == len(rows) == rounds * opts.num_requests
    for k in range(1, rounds + 1):
        work = T.synthetic(opts.num_requests, opts.input_len, opts.output_len, opts.rate, vocab, opts.seed + k - 1,
                           opts.prefix_len)
        got = sorted((int(r["prompt_tokens"]), int(r["output_tokens"])) for r in rows if r["id"].startswith(f"r{k}-"))
        assert got == sorted((len(w.prompt_ids), w.max_new_tokens) for w in work)
    for r in rows:
        arrival, first, end = float(r["arrival_s"]), float(r["first_token_s"]), float(r["finished_s"])
        assert arrival <= first <= end and r["finish_reason"] == "length" and r["mode"] == "batched"
        assert float(r["ttft_ms"]) == pytest.approx((first - arrival) * 1e3, rel=1e-9, abs=1e-9)
        assert float(r["e2e_ms"]) == pytest.approx((end - arrival) * 1e3, rel=1e-9, abs=1e-9)
        n = int(r["output_tokens"])
        if n > 1:
            assert float(r["tpot_ms"]) == pytest.approx((end - first) * 1e3 / (n - 1), rel=1e-9, abs=1e-9)
    return len(rows)


def test_serve_once_csv_holds_the_rounds_requests(tiny, tmp_path):
    out = tmp_path / "reqs.csv"
    res = runner.invoke(cli, ["top", "--serve", "--once", "-m", "tiny", "-N", "6", "--prefix-len", "16",
                              "--input-len", "4:20", "--output-len", "4:8", "--block-size", "8", "--csv", str(out)])
    assert res.exit_code == 0, res.output
    opts = ServeOptions(num_requests=6, input_len=(4, 20), output_len=(4, 8), prefix_len=16, block_size=8)
    assert _check_requests_csv(out.read_text(), opts, tiny.config.vocab_size, rounds=1) == 6
    assert f"wrote {out} (6 requests)" in res.output


def test_serve_once_piped_is_laid_out_for_140_columns():
    """Piped, with no COLUMNS, tables are drawn whole (1000 wide); panels would stretch to that."""
    res = runner.invoke(cli, ["top", "--serve", "--once", "-m", "tiny", "-N", "2", "--output-len", "2:4"])
    assert res.exit_code == 0, res.output
    widths = [len(ln) for ln in res.stdout.splitlines()]
    assert max(widths) == 140, max(widths)


def test_serve_live_view_needs_a_terminal():
    res = runner.invoke(cli, ["top", "--serve", "-m", "tiny"])
    assert res.exit_code == BAD_INPUT and "--once" in res.output
