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


# --- speculative decoding (--speculate) -----------------------------------------------------------

def make_spec_session(ckpt, speculate, n=16, spec_k=4, draft_max=None, backends=None):
    prompt = "The quick brown fox"
    opts = RunOptions(max_new_tokens=n, sampling=SamplingParams(greedy=True), ignore_eos=True, speculate=speculate,
                      spec_k=spec_k, draft_max=draft_max)
    return TopSession(ckpt, "simd", [(prompt, ckpt.tokenizer.encode(prompt).ids)], opts, backends=backends)


def assert_spec_is(spec, acc):
    """The view's figures against `SpeculativeGeneration.acceptance()` (a record's meta)."""
    assert spec.rounds == acc["verify_steps"] and spec.rounds > 0
    assert (spec.drafted, spec.accepted) == (acc["drafted_tokens"], acc["accepted_tokens"])
    assert spec.acceptance_rate == acc["acceptance_rate"]
    assert spec.tokens_per_verify_step == acc["tokens_per_verify_step"]
    assert spec.hist == acc["accepted_length_histogram"]
    assert spec.dropped == acc["dropped_drafts"] and spec.adaptive == acc["adaptive_k"]


def pause_in_a_round(session):
    """Paused inside a generation that has verified a round: (view, records)."""
    for _ in range(20):
        v, recs = pause_mid_generation(session)
        if v.spec is not None and v.spec.generation == v.generation and v.spec.rounds:
            return v, recs
        session.pause(False)
        time.sleep(0.05)
    raise AssertionError("could not pause after a verify round")


@pytest.mark.parametrize("speculate", ["exit:2", "ngram"])
def test_speculative_view_at_the_end_is_the_runs_acceptance(tiny, speculate):
    s = make_spec_session(tiny, speculate)
    s.run_once()
    v, rec = s.view(), s.records()[-1]
    acc = rec.meta["speculation"]
    assert v.speculate == speculate and v.spec.generation == v.generation == 1
    assert_spec_is(v.spec, acc)
    assert v.spec.k == 4  # fixed k
    gen = rec.generation_steps
    assert v.spec.emitted == sum(st.emitted for st in gen) == len(rec.generated_ids) - 1
    s_ = rec.summary()
    assert v.spec.draft_s / v.spec.emitted == pytest.approx(s_["draft_s_per_token"], rel=1e-12)
    assert v.spec.target_s / v.spec.emitted == pytest.approx(s_["verify_s_per_token"], rel=1e-12)
    # tokens/s: a round's tokens over its draft and verify time
    rates, pending = [], 0.0
    for st in gen:
        pending += st.wall_s
        if st.emitted:
            rates.append(st.emitted / pending)
            pending = 0.0
    assert any(st.phase == "draft" for st in gen)
    np.testing.assert_allclose(v.decode_rates, rates, rtol=1e-12)
    # barriers are the target's passes' (draft steps apart)
    assert v.barriers_per_token == 3 * tiny.config.num_layers + 2
    from aios_cli.tui.panels import speculation_panel

    text = speculation_panel(v, 100, 6).plain
    assert f"kept {100 * acc['acceptance_rate']:.1f}% of drafts ({acc['accepted_tokens']}/{acc['drafted_tokens']})" in text
    assert f"{acc['tokens_per_verify_step']:.2f} tokens a verify pass" in text
    assert "rounds   " + "".join(f"{c:<4}" for c in acc["accepted_length_histogram"]) in text


def test_speculative_view_live_is_the_runs_acceptance_and_layers(tiny):
    """Paused mid-generation: the figures are the running generation's acceptance() (adaptive k
    included), the target's moving average holds only its passes, the draft's only the draft
    engine's rounds, on the drafter's own layers (exit:2: the target's first two)."""
    s = make_spec_session(tiny, "exit:2", n=24, draft_max=8)
    s.start()
    try:
        wait_for(lambda: s.view().generation >= 2, what="two generations")
        v, recs = pause_in_a_round(s)
        assert_spec_is(v.spec, recs[-1].meta["speculation"])
        assert v.spec.k == s._run.generation.k and v.spec.k_max == 8
        L = tiny.config.num_layers
        steps = [st for r in recs for st in r.steps]
        target = [st for st in steps if st.phase in ("decode", "verify")][-AVG_WINDOW:]
        drafts = [st for st in steps if st.phase == "draft"][-AVG_WINDOW:]
        assert target and drafts and all(st.engine == "draft" for st in drafts)
        np.testing.assert_allclose(v.avg, np.mean([_layer_table_oracle(st, L) for st in target], axis=0),
                                   rtol=1e-9, atol=1e-12)
        assert v.avg_n == len(target) and v.draft_n == len(drafts)

        def draft_oracle(st):  # two layers, drawn on the target's four: layers 2 and 3 empty
            t = _layer_table_oracle(st, 2)
            return np.concatenate([t[:3], np.zeros((L - 2, len(KINDS))), t[3:]])

        np.testing.assert_allclose(v.draft_avg, np.mean([draft_oracle(st) for st in drafts], axis=0),
                                   rtol=1e-9, atol=1e-12)
        assert v.draft_avg[3:L + 1].sum() == 0 and v.draft_avg[1:3].sum() > 0
        assert v.draft_avg.sum() == pytest.approx(np.mean([st.wall_s for st in drafts]), rel=1e-9)
    finally:
        assert s.stop(timeout=10)


@pilot_test
async def test_pilot_speculation_panel_shows_the_acceptance(tiny):
    from aios_cli.tui.app import TopApp

    s = make_spec_session(tiny, "exit:2", n=24)
    async with piloted(TopApp, s, (120, 40)) as (app, pilot):
        await _until(pilot, lambda: app.view.generation >= 2, what="two generations")
        for _ in range(50):  # paused inside a generation that has verified a round
            s.pause(True)
            await _until(pilot, lambda: app.view.state == "paused", what="paused")
            await pilot.pause(0.4)
            v, recs = app.view, s.records()
            if v.spec.generation == v.generation and v.spec.rounds and recs[-1].meta.get("partial"):
                break
            s.pause(False)
            await pilot.pause(0.05)
        acc = recs[-1].meta["speculation"]
        assert_spec_is(v.spec, acc)
        panel = app.query_one("#speculation")
        screen = "\n".join(panel.render_line(y).text for y in range(panel.size.height))
        assert f"exit:2 · k 4 · gen {v.generation}: {acc['verify_steps']} verify pass" in screen
        assert f"kept {100 * acc['acceptance_rate']:.1f}% of drafts" in screen
        assert f"{acc['tokens_per_verify_step']:.2f} tokens a verify pass" in screen
        assert "rounds   " + "".join(f"{c:<4}" for c in acc["accepted_length_histogram"]) in screen
        layers = app.query_one("#layers-decode")
        drawn = "\n".join(layers.render_line(y).text for y in range(layers.size.height))
        assert "target: avg of last" in drawn and "draft: avg of last" in drawn
        await pilot.press("question_mark")
        assert any(line.startswith("[b]speculation") for line in app.screen.lines())
        await pilot.press("escape")
        await pilot.press("q")
    assert not s._thread.is_alive()


@pilot_test
async def test_pilot_prompt_lookup_has_no_draft_layers_and_plain_top_no_panel(tiny):
    from aios_cli.tui.app import TopApp

    s = make_spec_session(tiny, "ngram")
    async with piloted(TopApp, s, (120, 40)) as (app, pilot):
        await _until(pilot, lambda: app.view.spec is not None and app.view.spec.rounds > 0 and app.view.avg_n > 1,
                     what="a verified round")
        await pilot.pause(0.3)
        layers = app.query_one("#layers-decode")
        drawn = "\n".join(layers.render_line(y).text for y in range(layers.size.height))
        assert "no draft layers" in drawn and "draft: avg" not in drawn
        assert app.view.draft_avg is None
        await pilot.press("q")
    plain = make_session(tiny)
    async with piloted(TopApp, plain, (120, 40)) as (app, pilot):
        assert not app.query("#speculation")
        await pilot.press("q")


def test_once_with_speculate_prints_the_speculation_panel():
    res = runner.invoke(cli, ["top", "--once", "-m", "tiny", "-b", "simd", "-n", "12", "--speculate", "exit:2"],
                        env={"COLUMNS": "120"})
    assert res.exit_code == 0, res.output
    assert "speculation" in res.output and "tokens a verify pass" in res.output and "draft: avg of last" in res.output


@pytest.mark.parametrize("argv,needle", [
    (["--speculate", "bogus"], "is not a drafter"),
    (["--speculate", "exit:4"], "exit:4 needs 1 to 3"),
    (["--speculate", "exit:2", "--spec-k", "0"], "--spec-k must be between 1 and 64"),
    (["--speculate", "exit:2", "--draft-max", "65"], "--draft-max must be between 1 and 64"),
    (["--speculate", "exit:2", "--draft-p-min", "1.5"], "--draft-p-min must be in [0, 1)"),
    (["--speculate", "ngram", "--draft-p-min", "0.5"], "--draft-p-min needs a model drafter"),
    (["--speculate", "exit:2", "--temperature", "0.8", "--draft-min", "2"], "--draft-min with a sampled"),
    (["--speculate", "exit:2", "-b", "scalar"], "not built for the scalar engine"),
    (["--speculate", "ngram", "--serve"], "--speculate runs one generation at a time, not --serve"),
    (["--speculate", "ngram", "--url", "http://127.0.0.1:9"], "not --url"),
])
def test_bad_speculative_options_are_one_line(argv, needle):
    assert_one_error_line(runner.invoke(cli, ["top", "--once", "-m", "tiny", *argv]), needle)


def test_speculation_panel_fits_any_width():
    from aios_cli.tui.panels import speculation_panel
    from aios_cli.tui.view import SpecStat, TopView

    v = TopView(model="m", backend="simd", speculate="draft:qwen2.5-0.5b")
    assert "waiting for the first round" in speculation_panel(v, 80, 6).plain
    v.spec = SpecStat(3, 16, True, k=7, rounds=40, drafted=300, accepted=231, hist=[1] * 10 + [30] * 7, emitted=271,
                      draft_s=0.5, target_s=1.1)
    for width in range(20, 120, 9):
        for line in speculation_panel(v, width, 6).plain.splitlines():
            assert len(line.rstrip()) <= width, (width, line)
    wide = speculation_panel(v, 120, 6).plain
    assert "k 7 (adaptive, up to 16)" in wide and "kept 77.0% of drafts (231/300)" in wide
    assert "accepted 0..16" in speculation_panel(v, 60, 6).plain  # the columns do not fit: one cell each
