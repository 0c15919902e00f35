"""`aios top`: the session (worker thread + live view) against the profiler record it reuses,
the app driven by Textual's Pilot, and the `--once` and bad-input paths of the command.

Oracle: every live number is recomputed here, independently, from the steps of the exported
RunRecords (float64 NumPy), so the view cannot drift from what `aios run` would report.
"""

from __future__ import annotations

import csv
import io
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from aios_cli.errors import BAD_INPUT, error_line
from aios_cli.main import app as cli
from aios_cli.tui.engines import usable_backends
from aios_cli.tui.session import AVG_WINDOW, TopSession
from engines.errors import UserError
from engines.model.sources import open_model
from engines.ops import KINDS, OP_INDEX, OPS
from engines.sampling import SamplingParams
from profilers.export import EVENT_COLUMNS
from profilers.harness import RunOptions
from tests.top_fixture import assert_one_error_line, pilot_test, piloted

pytest.importorskip("textual")


def wait_for(pred, timeout=90.0, what="condition"):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def make_session(ckpt, backend="simd", n=8, prompt="The quick brown fox", profile="op", backends=None):
    ids = ckpt.tokenizer.encode(prompt).ids
    opts = RunOptions(max_new_tokens=n, sampling=SamplingParams(greedy=True), profile=profile, ignore_eos=True)
    return TopSession(ckpt, backend, [(prompt, ids)], opts, backends=backends)


@pytest.fixture
def session(tiny):
    s = make_session(tiny)
    s.start()
    yield s
    assert s.stop(timeout=10), "the worker did not stop"


# --- the session: live view == the record ------------------------------------------------------

def _layer_table_oracle(st, L):
    """Seconds per (in, layers, out) x kind, computed from the raw step arrays."""
    tab = np.zeros((L + 2, len(KINDS)))
    for layer, op, d in zip(st.layers.tolist(), st.ops.tolist(), st.durs_ns.tolist()):
        row = layer + 1 if layer >= 0 else (0 if op == OP_INDEX["embed"] else L + 1)
        tab[row, KINDS.index(OPS[op].kind)] += d * 1e-9
    tab[L + 1, KINDS.index("other")] += st.wall_s - st.durs_ns.sum() * 1e-9
    return tab


def pause_mid_generation(session):
    """Pause so that the worker is held between two decode steps of a generation (not
    between two generations), and return the view and records at that point."""
    for _ in range(50):
        session.pause(True)
        wait_for(lambda: session.view().state == "paused", what="pause")
        time.sleep(0.3)
        recs = session.records()
        v = session.view()
        if recs and recs[-1].meta.get("partial") and v.token_index >= 2:
            return v, recs
        session.pause(False)
        time.sleep(0.05)
    raise AssertionError("could not pause inside a generation")


def test_view_matches_the_records(session, tiny):
    wait_for(lambda: session.view().generation >= 3, what="three generations")
    v, recs = pause_mid_generation(session)
    L = tiny.config.num_layers
    steps = [s for r in recs for s in r.steps]
    decode = [s for s in steps if s.phase == "decode"]
    # tokens: every generated token is counted once, across generations
    assert v.total_tokens == sum(len(r.generated_ids) for r in recs)
    assert v.token_index == len(recs[-1].generated_ids)
    # the latest token's table is that step's, and it adds up to the step's wall time
    latest = _layer_table_oracle(decode[-1], L)
    np.testing.assert_allclose(v.latest, latest, rtol=1e-9, atol=1e-12)
    assert v.latest.sum() == pytest.approx(decode[-1].wall_s, rel=1e-9)
    # the moving average is the mean of the last AVG_WINDOW decode tokens
    window = decode[-AVG_WINDOW:]
    np.testing.assert_allclose(v.avg, np.mean([_layer_table_oracle(s, L) for s in window], axis=0), rtol=1e-9, atol=1e-12)
    assert v.avg_n == len(window)
    # prefill apart: the current generation's prompt pass
    np.testing.assert_allclose(v.prefill, _layer_table_oracle(recs[-1].steps[0], L), rtol=1e-9, atol=1e-12)
    # barriers: 3L+2 per Qwen2 token; the running total is every step's count
    assert v.barriers_per_token == 3 * L + 2
    assert v.barriers_total == sum(s.barriers for s in steps)
    barrier = np.array([op.barrier for op in OPS])
    share = decode[-1].durs_ns[barrier[decode[-1].ops]].sum() * 1e-9 / decode[-1].wall_s
    assert v.barrier_share == pytest.approx(share, rel=1e-9)
    # tokens/s history: 1 / wall of each decode token, in order
    np.testing.assert_allclose(v.decode_rates[-len(decode[-5:]):], [1 / s.wall_s for s in decode[-5:]])
    done = [g for g in v.generations]
    assert done and done[-1].ttft_s == pytest.approx(recs[-2].steps[0].wall_s)
    # memory: host RSS sampled; the KV cache is the engine's
    assert v.memory and v.memory[-1].rss_bytes > 0
    assert v.kv_cache_bytes == session.engine.kv_cache_bytes()


def test_bandwidth_table_is_cost_model_bytes(session, tiny):
    from profilers.costs import pass_costs

    wait_for(lambda: session.view().avg_n >= 2, what="two decode tokens")
    v, recs = pause_mid_generation(session)
    st = [s for r in recs for s in r.steps if s.phase == "decode"][-1]
    e = session.engine
    c = pass_costs(tiny.config, 1, st.past, e.op_weight_bytes, e.act_itemsize)
    assert v.latest_bytes.sum() == pytest.approx(float(c.event_bytes(st.layers, st.ops).sum()), rel=1e-12)


def test_pause_holds_the_engine_and_resume_goes_on(session):
    wait_for(lambda: session.view().total_tokens > 0, what="a first token")
    assert session.pause() is True
    wait_for(lambda: session.view().state == "paused", what="pause")
    time.sleep(0.2)
    n = session.view().total_tokens
    time.sleep(0.5)
    assert session.view().total_tokens == n, "tokens advanced while paused"
    assert session.pause() is False
    wait_for(lambda: session.view().total_tokens > n, what="tokens after resume")


def test_switch_backend_reloads_in_the_worker(session):
    wait_for(lambda: session.view().total_tokens > 0, what="a first token")
    assert session.switch_backend("torch") == "torch"
    wait_for(lambda: session.view().backend == "torch" and session.view().state == "generating"
             and session.view().token_index > 1, what="tokens on torch")
    backends = {r.backend for r in session.records()}
    assert backends == {"simd", "torch"}
    assert session.view().dtype == "float32"


def test_set_prompt_is_checked_and_used(session, tiny):
    with pytest.raises(UserError, match="empty"):
        session.set_prompt("")
    session.set_prompt("Hello there")
    ids = tiny.tokenizer.encode("Hello there").ids
    wait_for(lambda: any(r.prompt_ids == ids and r.generated_ids for r in session.records()),
             what="a generation with the new prompt")
    assert session.view().prompt == "Hello there"


def test_engine_error_is_shown_and_the_worker_survives(tiny, monkeypatch):
    s = make_session(tiny)
    s.start()
    try:
        wait_for(lambda: s.view().total_tokens > 0, what="a first token")
        real = s.engine.decode

        def boom(tok):
            raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore detail")

        monkeypatch.setattr(s.engine, "decode", boom)
        wait_for(lambda: s.view().state == "error", what="the error state")
        msg = s.view().message
        assert msg.startswith("RuntimeError: CUDA error: an illegal memory access") and "\n" not in msg
        assert "space goes on" in msg
        assert s._thread.is_alive()
        monkeypatch.setattr(s.engine, "decode", real)
        n = s.view().total_tokens
        assert s.pause() is False  # space after an error: one press goes on (not "pause")
        wait_for(lambda: s.view().state == "generating" and s.view().total_tokens > n, what="recovery")
    finally:
        assert s.stop(timeout=10)


def test_failed_switch_keeps_the_old_engine(tiny, monkeypatch):
    import aios_cli.tui.session as sess

    s = make_session(tiny, backends=("simd", "torch"))
    s.start()
    try:
        wait_for(lambda: s.view().total_tokens > 0, what="a first token")
        real = sess.build_engine

        def fail_torch(ckpt, backend, dtype, progress=None, quant=None):
            if backend == "torch":
                raise RuntimeError("CUDA out of memory (simulated)")
            return real(ckpt, backend, dtype, progress, quant)

        monkeypatch.setattr(sess, "build_engine", fail_torch)
        s.switch_backend("torch")
        wait_for(lambda: s.view().state == "error", what="the error state")
        assert "still on simd" in s.view().message
        assert s.view().backend == "simd" and s.engine is not None
        s.pause()
        n = s.view().total_tokens
        wait_for(lambda: s.view().total_tokens > n, what="tokens on the old engine")
    finally:
        assert s.stop(timeout=10)


def test_error_line_is_one_line():
    assert error_line(MemoryError()).startswith("out of host memory")
    assert error_line(ValueError("a\nb")) == "ValueError: a"
    assert error_line(UserError("bad model", "fix it")) == "bad model — fix it"
    cls = type("OutOfMemoryError", (RuntimeError,), {})
    assert error_line(cls("CUDA out of memory. Tried to allocate 2 GiB")).startswith("out of GPU memory")


def test_usable_backends(tiny):
    from engines import cuda_status

    got = usable_backends(tiny)
    assert {"scalar", "simd", "torch"} <= set(got)
    assert ("cuda" in got) == cuda_status()[0]
    big = open_model("qwen2.5-7b")
    assert "scalar" not in usable_backends(big)


def test_token_level_profile_has_no_layer_bars(tiny):
    s = make_session(tiny, profile="token")
    s.start()
    try:
        wait_for(lambda: s.view().avg_n == 0 and len(s.view().decode_rates) > 2, what="decode tokens")
        v = s.view()
        assert v.latest is None and v.barriers_per_token == 14
        from aios_cli.tui.panels import layer_panel

        assert "needs --profile op" in layer_panel(v, "decode", "time", 80, 20).plain
    finally:
        assert s.stop(timeout=10)


# --- the app, driven by Pilot ---------------------------------------------------------------------

async def _until(pilot, pred, timeout=90.0, what="condition"):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.mark.slow
@pilot_test
async def test_pilot_keys_change_state_and_export(tiny, tmp_path):
    from aios_cli.tui.app import HelpScreen, PromptScreen, TopApp

    out = tmp_path / "session.csv"
    s = make_session(tiny, backends=("simd", "torch"))
    async with piloted(TopApp, s, (120, 40), export_path=out) as (app, pilot):
        await _until(pilot, lambda: app.view.total_tokens > 0, what="tokens")
        # space: pause; the engine stops between tokens
        await pilot.press("space")
        assert s.paused
        await _until(pilot, lambda: app.view.state == "paused", what="paused view")
        await pilot.press("space")
        assert not s.paused
        # m: seconds -> share -> GB/s -> seconds
        assert app.metric == "time"
        await pilot.press("m")
        assert app.metric == "share"
        await pilot.press("m")
        assert app.metric == "bandwidth"
        await pilot.press("m")
        assert app.metric == "time"
        # b: next backend, reloaded in the worker while the UI keeps drawing
        await pilot.press("b")
        await _until(pilot, lambda: app.view.backend == "torch" and app.view.token_index > 1, what="torch")
        # l: the prefill tab
        await pilot.press("l")
        assert app.query_one("TabbedContent").active == "prefill"
        # e: export; the file has aios run --csv's columns, both backends, and adds up
        await pilot.press("e")
        await _until(pilot, lambda: app.last_export == out and not app.exporting, what="export")
        rows = list(csv.DictReader(io.StringIO(out.read_text())))
        assert tuple(rows[0].keys()) == EVENT_COLUMNS
        assert {r["backend"] for r in rows} == {"simd", "torch"}
        assert len(rows) == app.last_export_rows
        recs = {r.run_id: r for r in s.records()}
        by_token = {}
        for r in rows:
            key = (r["run_id"], r["phase"], int(r["token_index"]))
            by_token[key] = by_token.get(key, 0.0) + float(r["seconds"])
        for (run_id, phase, ti), total in by_token.items():
            if run_id in recs:
                st = next(x for x in recs[run_id].steps if x.phase == phase and x.token_index == ti)
                assert total == pytest.approx(st.wall_s, rel=1e-6, abs=1e-8)
        # ?: help; escape closes it
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        # p: edit the prompt
        await pilot.press("p")
        assert isinstance(app.screen, PromptScreen)
        inp = app.screen.query_one("Input")
        inp.value = "Once upon a time"
        await pilot.press("enter")
        assert not isinstance(app.screen, PromptScreen)
        assert s.view().prompt == "Once upon a time"
        # the UI kept drawing while the engine worked
        assert app.ui_hz is not None and app.ui_hz > 0
        await pilot.press("q")
    assert not s._thread.is_alive()


@pilot_test
async def test_pilot_bad_prompt_stays_in_the_dialog_and_a_good_one_edits(tiny):
    from aios_cli.tui.app import PromptScreen, TopApp

    s = make_session(tiny)
    async with piloted(TopApp, s, (80, 24)) as (app, pilot):
        await pilot.press("p")
        app.screen.query_one("Input").value = ""
        await pilot.press("enter")
        assert isinstance(app.screen, PromptScreen)
        assert "empty" in str(app.screen.query_one("#why").render())
        await pilot.press("escape")
        # typing adds to the pre-filled prompt; it does not replace it
        await pilot.press("p")
        await pilot.press("space", "a", "n", "d", "enter")
        assert s.view().prompt == "The quick brown fox and"
        await pilot.press("q")


@pilot_test
async def test_pilot_export_refused_without_op_profile(tiny, tmp_path):
    from aios_cli.tui.app import TopApp

    s = make_session(tiny, profile="none")
    async with piloted(TopApp, s, (80, 24), export_path=tmp_path / "x.csv") as (app, pilot):
        await pilot.press("e")
        await pilot.pause(0.2)
        assert not (tmp_path / "x.csv").exists()
        assert any("--profile op" in n.message for n in app._notifications)
        await pilot.press("q")


# --- the command -----------------------------------------------------------------------------------

runner = CliRunner()


def test_once_prints_the_panels_and_exports(tmp_path):
    out = tmp_path / "once.csv"
    res = runner.invoke(cli, ["top", "--once", "-m", "tiny", "-b", "simd", "-n", "6", "--csv", str(out)],
                        env={"COLUMNS": "120"})
    assert res.exit_code == 0, res.output
    for title in ("layers · decode", "layers · prefill", "tokens/s", "reduction barriers", "memory", "system", "text"):
        assert title in res.output
    assert "14 per token" in res.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert tuple(rows[0].keys()) == EVENT_COLUMNS
    assert {int(r["token_index"]) for r in rows} == set(range(6))


@pytest.mark.parametrize("argv,needle", [
    (["top", "--once", "--max-new-tokens", "0"], "--max-new-tokens must be positive"),
    (["top", "--once", "--backend", "nope"], "nope"),
    (["top", "--once", "--profile", "fast"], "unknown --profile"),
    (["top", "--once", "--exit-after", "-1"], "--exit-after must be positive"),
    (["top", "--once", "--model", "/no/such/dir"], "/no/such/dir"),
    (["top", "--once", "--temperature", "nan"], "--temperature"),
    (["top", "--once", "--csv", "x.csv", "--profile", "token"], "--profile op"),
])
def test_bad_input_is_one_line(argv, needle):
    assert_one_error_line(runner.invoke(cli, argv), needle)


def test_live_view_needs_a_terminal():
    res = runner.invoke(cli, ["top", "-m", "tiny"])
    assert res.exit_code == BAD_INPUT
    assert "needs a terminal" in res.output and "--once" in res.output


@pilot_test
async def test_mouse_clicks_tabs_and_footer_keys(tiny):
    from textual.widgets._footer import FooterKey

    from aios_cli.tui.app import TopApp

    s = make_session(tiny)
    async with piloted(TopApp, s, (120, 40)) as (app, pilot):
        await pilot.click("#layers Tab#--content-tab-prefill")
        assert app.query_one("TabbedContent").active == "prefill"
        metric = next(k for k in app.query(FooterKey) if k.action == "metric")
        await pilot.click(metric)
        assert app.metric == "share"
        pause = next(k for k in app.query(FooterKey) if k.action == "pause")
        await pilot.click(pause)
        assert s.paused
        await pilot.press("q")


@pilot_test
async def test_engine_error_shows_in_the_app(tiny, monkeypatch):
    from aios_cli.tui.app import TopApp
    from aios_cli.tui.widgets import Banner

    s = make_session(tiny)
    async with piloted(TopApp, s, (80, 24)) as (app, pilot):
        await _until(pilot, lambda: app.view.total_tokens > 0, what="tokens")

        def boom(tok):
            raise MemoryError()

        monkeypatch.setattr(s.engine, "decode", boom)
        await _until(pilot, lambda: app.view.state == "error", what="error state")
        await pilot.pause(0.3)
        banner = app.query_one(Banner)
        assert banner.has_class("error") and banner.display
        assert "out of host memory" in str(banner.render())
        await pilot.press("q")
    assert not s._thread.is_alive()


def test_prompts_cycle(tiny):
    a, b = "The quick brown fox", "Hello there"
    ids = {p: tiny.tokenizer.encode(p).ids for p in (a, b)}
    opts = RunOptions(max_new_tokens=4, sampling=SamplingParams(greedy=True), ignore_eos=True)
    s = TopSession(tiny, "simd", [(p, ids[p]) for p in (a, b)], opts)
    s.start()
    try:
        wait_for(lambda: len(s.records()) >= 4, what="four generations")
    finally:
        assert s.stop(timeout=10)
    got = [r.prompt_ids for r in s.records()][:4]
    assert got == [ids[a], ids[b], ids[a], ids[b]]
    assert s.view().prompt in (a, b)


def test_gpu_rows_render_from_nvml_and_torch_numbers():
    """The GPU lines as a lent GPU fills them (values as NVML and torch report them)."""
    from aios_cli.tui.panels import memory_panel, system_panel
    from aios_cli.tui.view import TopView
    from profilers.memory import MemorySample
    from profilers.nvml import GpuInfo

    gi = 1 << 30
    v = TopView(model="m", backend="cuda", kv_cache_bytes=3 * (1 << 20), kv_positions=(10, 80))
    v.memory = [MemorySample(t_s=0.1 * i, rss_bytes=2 * gi, device_used_bytes=(5 + i) * gi, device_total_bytes=80 * gi,
                             torch_allocated_bytes=(1 + i) * gi, torch_reserved_bytes=(2 + i) * gi,
                             torch_peak_bytes=(3 + i) * gi) for i in range(3)]
    mem = memory_panel(v, 60, 6).plain
    assert "GPU      7.00 GiB / 80.00 GiB" in mem
    assert "torch    3.00 GiB pk 5.00 GiB" in mem
    assert "KV cache 3.00 MiB 10/80 pos" in mem
    assert "no GPU line" not in mem
    g = GpuInfo(0, "H100", 80 * gi, 7 * gi, "570", 93.0, 412.5, 61.0, 5120, 2619)
    sysp = system_panel([50.0, 10.0], g, 60, 4).plain
    assert "util 93%  power 412 W  temp 61°C" in sysp
    na = GpuInfo(0, "H100", None, None, None, None, None, None, None, None)
    assert "util N/A  power N/A  temp N/A" in system_panel([1.0], na, 60, 4).plain
    assert "gpu: none (no driver)" in system_panel([1.0], None, 60, 4, "no driver").plain


def test_b_while_loading_cycles_on(tiny, monkeypatch):
    """A second `b` while an engine loads goes to the backend after the loading one."""
    import threading

    import aios_cli.tui.session as sess

    s = make_session(tiny, backends=("simd", "torch", "scalar"))
    s.start()
    try:
        wait_for(lambda: s.view().total_tokens > 0, what="a first token")
        gate, real = threading.Event(), sess.build_engine

        def slow(ckpt, backend, dtype, progress=None, quant=None):
            gate.wait(30)
            return real(ckpt, backend, dtype, progress, quant)

        monkeypatch.setattr(sess, "build_engine", slow)
        assert s.switch_backend() == "torch"
        wait_for(lambda: s.view().state == "loading", what="loading")
        assert s.switch_backend() == "scalar"
        gate.set()
        wait_for(lambda: s.view().backend == "scalar" and s.view().token_index > 0, what="scalar")
    finally:
        assert s.stop(timeout=10)


def test_dtype_stays_with_the_first_backend(tiny):
    ids = tiny.tokenizer.encode("The quick brown fox").ids
    opts = RunOptions(max_new_tokens=4, sampling=SamplingParams(greedy=True), dtype="bfloat16", ignore_eos=True)
    s = TopSession(tiny, "torch", [("The quick brown fox", ids)], opts, backends=("torch", "simd"))
    s.start()
    try:
        wait_for(lambda: s.view().dtype == "bfloat16" and s.view().total_tokens > 0, what="torch bf16")
        s.switch_backend("simd")
        wait_for(lambda: s.view().backend == "simd" and s.view().token_index > 0, what="simd")
        assert s.view().dtype == "float32"
        s.switch_backend("torch")
        wait_for(lambda: s.view().backend == "torch" and s.view().token_index > 0, what="torch again")
        assert s.view().dtype == "bfloat16"
    finally:
        assert s.stop(timeout=10)


def test_switch_while_paused_waits_before_prefill(tiny):
    s = make_session(tiny, backends=("simd", "torch"))
    s.start()
    try:
        wait_for(lambda: s.view().total_tokens > 0, what="a first token")
        s.pause(True)
        s.switch_backend("torch")
        wait_for(lambda: s.view().backend == "torch" and s.view().state == "paused", what="torch loaded, paused")
        time.sleep(0.5)
        assert not any(r.backend == "torch" for r in s.records()), "a paused session ran a prefill"
        s.pause()
        wait_for(lambda: any(r.backend == "torch" for r in s.records()), what="torch generating")
    finally:
        assert s.stop(timeout=10)


def _frozen_view():
    from aios_cli.tui.view import TopView
    from profilers.memory import MemorySample

    v = TopView(model="qwen2.5-0.5b", backend="simd", dtype="float32", device="cpu: AMD EPYC 7B13 64-Core Processor",
                num_params=494_000_000, profile="op", state="generating", threads=2, generation=3, token_index=17,
                total_tokens=12_345, kv_cache_bytes=1 << 20, kv_positions=(21, 35),
                no_gpu_reason="torch 2.13.0+cpu is a CPU-only build")
    v.memory = [MemorySample(t_s=0.0, rss_bytes=1 << 31)]
    v.decode_rates = [15.85, 14.2, 16.1]
    v.barriers_per_token, v.barrier_share, v.barrier_share_avg, v.barriers_total = 74, 0.038, 0.041, 1406
    return v


@pytest.mark.parametrize("width", range(24, 130, 7))
def test_narrow_panels_drop_whole_values(width):
    """At any width a line loses whole values from its end, never the tail of a number or its
    unit (`15.85m` for 15.85 ms, `UI 5.…`)."""
    from aios_cli.tui.panels import barriers_panel, memory_panel, status_line, system_panel, tokens_panel

    v = _frozen_view()
    full = status_line(v, 5.2).plain
    cut = status_line(v, 5.2, width=width).plain
    assert len(cut) <= width and full.startswith(cut)
    assert cut == full or full[len(cut):].startswith(" · ") or full[len(cut):].startswith("  "), (cut, full)
    for panel in (tokens_panel(v, width, 6), barriers_panel(v, width, 3), memory_panel(v, width, 5),
                  system_panel([10.0, 20.0], None, width, 4, v.no_gpu_reason)):
        for line in panel.plain.splitlines():
            assert len(line.rstrip()) <= width, line
            # a cut value shows as a missing segment or a trailing ellipsis, not a broken unit
            assert not line.rstrip().endswith(("tok/", "m", "µ", "(")), line


def test_prompt_ids_and_generated_ids_do_not_run_together():
    from aios_cli.tui.panels import text_panel
    from aios_cli.tui.view import TopView

    v = TopView(model="m", backend="simd")
    v.prompt, v.text = "1,2,3", "355 698 "
    assert text_panel(v, 0, 0).plain == "1,2,3 355 698 "
    v.prompt, v.text = "The quick brown fox", " jumps"
    assert text_panel(v, 0, 0).plain == "The quick brown fox jumps"
