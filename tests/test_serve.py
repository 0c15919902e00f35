"""`aios serve`: the OpenAI-compatible server over the batched engine, driven by the official
`openai` client, raw HTTP (httpx) and `aios bench serve`, on loopback.

Oracles: `aios run` (the batch-1 engine, itself checked against transformers) for greedy
output ids; transformers' own `apply_chat_template` for prompts rendered from a chat template;
the block manager's pool (full again after every disconnect and abort); Prometheus' own text
parser for /metrics.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import threading
import time

import pytest
from typer.testing import CliRunner

from aios_cli.main import app as cli
from tests.top_fixture import pilot_test, piloted

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()
PROMPT = "The quick brown fox"


class LiveServer:
    """aios serve's app on a loopback port, uvicorn in a thread (the engine in its own)."""

    def __init__(self, ckpt, api_key=None, max_num_seqs=8, max_queue=64, kv_blocks=512, block_size=16,
                 speculate=None, spec_k=4):
        import uvicorn

        from aios_cli.server.api import build_app
        from aios_cli.server.loop import EngineLoop
        from aios_cli.server.metrics import ServeMetrics
        from engines import engine_class
        from engines.batch.engine import BatchEngine
        from profilers.probe import make_probe

        self.ckpt = ckpt
        eng = engine_class("torch")(ckpt)
        self.be = BatchEngine(eng, num_blocks=kv_blocks, block_size=block_size, max_num_seqs=max_num_seqs,
                              max_num_batched_tokens=max(64, max_num_seqs), speculate=speculate, spec_k=spec_k)
        self.metrics = ServeMetrics(ckpt.name, kv_blocks, spec_k=spec_k if speculate else 0)
        self.loop = EngineLoop(self.be, {"model": ckpt.name, "backend": "torch"}, max_queue=max_queue,
                               probe=make_probe("op", "cpu", None), metrics=self.metrics)
        self.app = build_app(self.loop, ckpt, ckpt.name, api_key, self.metrics)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="off"))
        self.loop.start()
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            assert time.monotonic() - t0 < 30, "uvicorn did not start"
            time.sleep(0.02)

    def pool_full(self, timeout=20.0) -> bool:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.loop.unfinished == 0 and self.be.blocks.num_used == 0:
                return True
            time.sleep(0.02)
        return False

    def close(self):
        self.loop.stop_accepting()
        self.server.should_exit = True
        self.thread.join(15)
        self.loop.join(15)


@pytest.fixture(scope="module")
def live(tiny):
    s = LiveServer(tiny)
    yield s
    s.close()


def aios_run_ids(prompt: str, n: int) -> list[int]:
    res = runner.invoke(cli, ["run", "-m", "tiny", "-b", "torch", "-p", prompt, "-n", str(n), "--format", "json",
                              "--profile", "none"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    return (out[0] if isinstance(out, list) else out)["generated_token_ids"]


def client(live, **kw):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=kw.pop("api_key", "unused"), max_retries=0, **kw)


# --- the openai client ----------------------------------------------------------------------------

def test_completion_ids_equal_aios_run(live):
    c = client(live)
    r = c.completions.create(model="tiny", prompt=PROMPT, max_tokens=12, temperature=0,
                             extra_body={"return_token_ids": True})
    ids = r.choices[0].model_extra["token_ids"]
    assert ids == aios_run_ids(PROMPT, 12)
    assert r.usage.completion_tokens == len(ids)
    assert r.usage.prompt_tokens == len(live.ckpt.tokenizer.encode(PROMPT).ids)
    assert r.choices[0].text == live.ckpt.tokenizer.decode(ids)
    assert r.choices[0].finish_reason in ("length", "stop")


def test_streamed_completion_is_the_whole_one(live):
    c = client(live)
    whole = c.completions.create(model="tiny", prompt=PROMPT, max_tokens=10, temperature=0)
    chunks = list(c.completions.create(model="tiny", prompt=PROMPT, max_tokens=10, temperature=0, stream=True,
                                       stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    assert text == whole.choices[0].text
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == whole.choices[0].finish_reason
    assert live.pool_full()


def test_chat_uses_chatml_for_a_model_without_a_template(live):
    c = client(live)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    r = c.chat.completions.create(model="tiny", messages=msgs, max_tokens=8, temperature=0,
                                  extra_body={"return_token_ids": True})
    want_prompt = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    assert r.model_extra["prompt_token_ids"] == live.ckpt.tokenizer.encode(want_prompt).ids
    assert r.choices[0].model_extra["token_ids"] == aios_run_ids(want_prompt, 8)[:len(r.choices[0].model_extra["token_ids"])]
    assert r.choices[0].message.role == "assistant"
    streamed = list(c.chat.completions.create(model="tiny", messages=msgs, max_tokens=8, temperature=0, stream=True))
    assert streamed[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in streamed) == r.choices[0].message.content
    assert streamed[-1].choices[0].finish_reason == r.choices[0].finish_reason


def test_models_and_health(live):
    c = client(live)
    assert [m.id for m in c.models.list().data] == ["tiny"]
    assert httpx.get(f"{live.url}/health").json() == {"status": "ok"}


def test_stop_string_ends_the_text_before_it(live):
    c = client(live)
    full = c.completions.create(model="tiny", prompt=PROMPT, max_tokens=16, temperature=0).choices[0].text
    assert len(full) > 6
    stop = full[3:6]
    got = c.completions.create(model="tiny", prompt=PROMPT, max_tokens=16, temperature=0, stop=[stop])
    assert got.choices[0].text == full[:full.index(stop)]
    assert got.choices[0].finish_reason == "stop"
    streamed = c.completions.create(model="tiny", prompt=PROMPT, max_tokens=16, temperature=0, stop=stop, stream=True)
    assert "".join(ch.choices[0].text for ch in streamed if ch.choices) == full[:full.index(stop)]
    assert live.pool_full()


# --- bad input, faults ---------------------------------------------------------------------------

@pytest.mark.parametrize("body,status,needle", [
    (b"{not json", 400, "not valid JSON"),
    ({"model": "tiny", "prompt": "hi", "max_tokens": "many"}, 400, "max_tokens"),
    ({"model": "tiny", "prompt": 7}, 400, "prompt"),
    ({"model": "tiny"}, 400, "prompt"),
    ({"model": "gpt-9", "prompt": "hi"}, 404, "gpt-9"),
    ({"model": "tiny", "prompt": "hi", "max_tokens": 10_000_000}, 400, "context"),
    ({"model": "tiny", "prompt": [1, 2, 10 ** 9]}, 400, "token ids"),
    ({"model": "tiny", "prompt": "hi", "n": 3}, 400, "n"),
])
def test_bad_requests_get_an_openai_error_and_the_server_goes_on(live, body, status, needle):
    kw = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, bytes) else {"json": body}
    r = httpx.post(f"{live.url}/v1/completions", **kw)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert needle in err["message"] and err["type"]
    assert client(live).completions.create(model="tiny", prompt="ok", max_tokens=2).usage.completion_tokens >= 1


def test_a_long_prompt_is_refused_with_400(live):
    n = live.ckpt.config.max_position_embeddings
    r = httpx.post(f"{live.url}/v1/completions", json={"model": "tiny", "prompt": [1] * (n + 5), "max_tokens": 1})
    assert r.status_code == 400 and "context" in r.json()["error"]["message"]


def test_disconnect_mid_stream_aborts_and_frees_the_blocks(live):
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 400, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", f"{live.url}/v1/completions", json=body, timeout=30) as r:
        got = 0
        for line in r.iter_lines():
            if line.startswith("data:"):
                got += 1
                if got == 3:
                    assert live.be.blocks.num_used > 0
                    break
    assert live.pool_full(), f"{live.be.blocks.num_used} blocks still held"
    ends = live.metrics.requests.labels("tiny", "abort")._value.get()
    assert ends >= 1


def test_api_key_is_checked_on_every_request(tiny):
    s = LiveServer(tiny, api_key="sekret", kv_blocks=64)
    try:
        for path in ("/v1/models", "/health", "/metrics", "/aios/state"):
            r = httpx.get(f"{s.url}{path}")
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", path
        assert httpx.get(f"{s.url}/v1/models", headers={"Authorization": "Bearer sekret"}).status_code == 200
        openai = pytest.importorskip("openai")
        with pytest.raises(openai.AuthenticationError):
            client(s, api_key="wrong").completions.create(model="tiny", prompt="x", max_tokens=1)
        assert client(s, api_key="sekret").completions.create(model="tiny", prompt="x", max_tokens=1).choices
    finally:
        s.close()


def test_overload_gets_503_with_retry_after_and_loses_nothing(tiny):
    s = LiveServer(tiny, max_num_seqs=2, max_queue=2, kv_blocks=256)
    try:
        body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 60, "ignore_eos": True}
        out = []

        def one():
            r = httpx.post(f"{s.url}/v1/completions", json=body, timeout=120)
            out.append((r.status_code, r.headers.get("retry-after"), r.json()))

        ts = [threading.Thread(target=one) for _ in range(12)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        codes = sorted(c for c, _, _ in out)
        assert len(out) == 12 and set(codes) <= {200, 503} and 503 in codes and 200 in codes
        for code, retry, js in out:
            if code == 503:
                assert retry == "1" and js["error"]["code"] == "overloaded"
            else:
                assert js["usage"]["completion_tokens"] == 60
        assert s.pool_full()
    finally:
        s.close()


@pytest.mark.slow
def test_200_concurrent_streams_with_disconnects(tiny):
    """The load test: 200 streaming clients at once on loopback, 20 of them leaving mid-stream.
    Nothing is lost, every other stream ends with [DONE], and the pool is full again."""
    from profilers import serve_client as C
    from profilers import throughput as T

    s = LiveServer(tiny, max_num_seqs=64, max_queue=256, kv_blocks=2048)
    try:
        work = T.synthetic(200, (4, 24), (8, 24), float("inf"), tiny.config.vocab_size, seed=5)
        gone = {i: 3 for i in range(0, 200, 10)}
        t0 = time.monotonic()
        run, failures = C.run(s.url, "tiny", work, [w.prompt_ids for w in work], timeout_s=120, disconnect=gone)
        took = time.monotonic() - t0
        assert took < 120
        assert {f.id for f in failures} == {f"req-{i}" for i in gone}
        assert all(f.reason == "disconnected on purpose" for f in failures)
        done = {r.id: r for r in run.requests}
        assert len(done) == 180
        for i, w in enumerate(work):
            if i not in gone:
                assert done[f"req-{i}"].output_tokens == w.max_new_tokens
        assert s.pool_full(), f"{s.be.blocks.num_used} blocks held, {s.loop.unfinished} unfinished"
    finally:
        s.close()


# --- metrics and state -------------------------------------------------------------------------

def test_metrics_count_what_was_served(tiny):
    from prometheus_client.parser import text_string_to_metric_families

    s = LiveServer(tiny, kv_blocks=128)
    try:
        c = client(s)
        outs = [c.completions.create(model="tiny", prompt=f"{PROMPT} {i}", max_tokens=5 + i, temperature=0,
                                     extra_body={"ignore_eos": True}) for i in range(3)]
        text = httpx.get(f"{s.url}/metrics").text
        fam = {f.name: f for f in text_string_to_metric_families(text)}

        def value(name, suffix="", **labels):
            for smp in fam[name].samples:
                if smp.name == name + suffix and all(smp.labels.get(k) == v for k, v in labels.items()):
                    return smp.value
            raise KeyError(name + suffix)

        assert value("aios_generation_tokens", "_total") == sum(o.usage.completion_tokens for o in outs) == 5 + 6 + 7
        assert value("aios_prompt_tokens", "_total") == sum(o.usage.prompt_tokens for o in outs)
        assert value("aios_time_to_first_token_seconds", "_count") == 3
        assert value("aios_time_per_output_token_seconds", "_count") == (5 - 1) + (6 - 1) + (7 - 1)
        assert value("aios_request_success", "_total", finished_reason="length") == 3
        assert value("aios_num_requests_running") == 0
        assert value("aios_kv_cache_blocks_used") == 0
        assert value("aios_kv_cache_blocks_total") == 128
        state = httpx.get(f"{s.url}/aios/state").json()
        assert state["output_tokens"] == 18 and state["num_blocks"] == 128
    finally:
        s.close()


def test_speculative_serving_keeps_the_ids_and_counts_acceptance(tiny):
    """aios serve --speculate ngram: each completion's ids are aios run's (greedy), streamed or
    not, and /metrics carries vLLM's spec-decode counters, consistent with what was served."""
    from prometheus_client.parser import text_string_to_metric_families

    s = LiveServer(tiny, kv_blocks=128, speculate="ngram", spec_k=3)
    try:
        c = client(s)
        outs = [c.completions.create(model="tiny", prompt=f"{PROMPT} {i}", max_tokens=12, temperature=0,
                                     extra_body={"ignore_eos": True, "return_token_ids": True}) for i in range(6)]
        for i, o in enumerate(outs):
            ids = o.choices[0].model_extra["token_ids"]
            assert o.usage.completion_tokens == len(ids) == 12
            assert ids == aios_run_ids(f"{PROMPT} {i}", 12)
        streamed = "".join(ch.choices[0].text for ch in c.completions.create(
            model="tiny", prompt=f"{PROMPT} 0", max_tokens=12, temperature=0, stream=True,
            extra_body={"ignore_eos": True}))
        assert streamed == outs[0].choices[0].text
        fam = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{s.url}/metrics").text)}

        def total(name, **labels):
            return sum(smp.value for smp in fam[name].samples
                       if smp.name == name + "_total" and all(smp.labels.get(k) == v for k, v in labels.items()))

        drafts, drafted = total("aios_spec_decode_num_drafts"), total("aios_spec_decode_num_draft_tokens")
        accepted = total("aios_spec_decode_num_accepted_tokens")
        assert drafts > 0 and 0 < accepted <= drafted <= 3 * drafts
        assert total("aios_spec_decode_num_accepted_tokens_per_pos") == accepted
        assert total("aios_spec_decode_num_accepted_tokens_per_pos", position="0") >= \
            total("aios_spec_decode_num_accepted_tokens_per_pos", position="2")
        assert accepted == s.be.spec_accepted_tokens
        tpot = next(smp.value for smp in fam["aios_time_per_output_token_seconds"].samples
                    if smp.name.endswith("_count"))
        assert tpot == 7 * (12 - 1)  # one gap per token after the first, several tokens a step or not
    finally:
        s.close()


# --- chat templates -----------------------------------------------------------------------------

def test_chat_template_renders_as_transformers_does(tiny):
    transformers = pytest.importorskip("transformers")
    from aios_cli.server.chat import ChatFormat

    tmpl = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] | trim }} [/INST]"
            "{% elif m['role'] == 'assistant' %} {{ m['content'] }}{{ eos_token }}{% else %}"
            "{{ raise_exception('roles must be user or assistant') }}{% endif %}{% endfor %}"
            "{% if add_generation_prompt %} {% endif %}")
    msgs = [{"role": "user", "content": "  hi  "}, {"role": "assistant", "content": "yo"},
            {"role": "user", "content": "more"}]
    fmt = ChatFormat(tmpl, tiny.tokenizer)
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=tiny.tokenizer, bos_token=fmt.special["bos_token"],
                                              eos_token=fmt.special["eos_token"])
    want = hf.apply_chat_template(msgs, chat_template=tmpl, tokenize=False, add_generation_prompt=True)
    assert fmt.render(msgs) == want
    from engines.errors import UserError

    with pytest.raises(UserError, match="roles must be user or assistant"):
        fmt.render([{"role": "tool", "content": "x"}])


def test_chat_template_is_read_from_the_model_directory(tmp_path, hf_model_dirs):
    import shutil

    from engines.model.sources import open_model

    src = next(iter(hf_model_dirs.values()))[0]
    d = tmp_path / "m"
    shutil.copytree(src, d)
    (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": [{"name": "default", "template": "T1"},
                                                                           {"name": "tool_use", "template": "T2"}]}))
    assert open_model(str(d)).chat_template == "T1"
    (d / "tokenizer_config.json").write_text("{nope")
    from engines.errors import UserError

    with pytest.raises(UserError, match="not JSON"):
        open_model(str(d))


# --- the command: a real process, its signals and its exports --------------------------------------

def _start(tmp_path, *extra):
    from aios_cli.server.launch import start_serve

    return start_serve(["-m", "tiny", "--port", "0", "-t", "1", *extra], timeout_s=120)


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_signal_ends_streams_writes_exports_and_exits(tmp_path, sig, code):
    csv_path, trace = tmp_path / "steps.csv", tmp_path / "trace.json"
    p, url = _start(tmp_path, "--csv", str(csv_path), "--trace", str(trace), "-q")
    try:
        body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 3000, "stream": True, "ignore_eos": True}
        lines = []
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data:"):
                    lines.append(line)
                    if len(lines) == 5:
                        p.send_signal(sig)
        assert lines[-1] == "data: [DONE]"
        assert json.loads(lines[-2][5:])["choices"][0]["finish_reason"] == "abort"
        assert p.wait(60) == code
        said = p.stderr.read()
        assert f"stopped by {signal.Signals(sig).name}" in said and "1 request(s) in flight were aborted" in said, said
        assert "Traceback" not in said
    finally:
        if p.poll() is None:
            p.kill()
    rows = csv_path.read_text().splitlines()
    assert rows[0].startswith("step,start_s,wall_s") and len(rows) > 5
    assert json.loads(trace.read_text())["traceEvents"]
    assert not list(tmp_path.glob(".*tmp*")), "a partial export was left behind"


def test_serve_bad_input_is_one_line(tmp_path):
    from aios_cli.errors import BAD_INPUT

    for args, needle in ((["--backend", "simd"], "torch or cuda"), (["--port", "70000"], "--port"),
                         (["--kv-blocks", "4", "--kv-cache-bytes", "9"], "give one"),
                         (["--api-key", " "], "--api-key")):
        res = runner.invoke(cli, ["serve", "-m", "tiny", *args])
        assert res.exit_code == BAD_INPUT, res.output
        lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and needle in lines[0], res.output


def test_port_in_use_is_one_line():
    from aios_cli.errors import BAD_INPUT

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        res = runner.invoke(cli, ["serve", "-m", "tiny", "--port", str(port), "-q"])
    assert res.exit_code == BAD_INPUT, res.output
    assert "could not listen" in res.output and res.output.count("\n") <= 2


# --- aios bench serve and aios top --url against it ----------------------------------------------------

def test_bench_serve_reports_what_the_server_served(live):
    res = runner.invoke(cli, ["bench", "serve", "--url", live.url, "-N", "6", "--input-len", "4:12",
                              "--output-len", "5:9", "-f", "json", "-q"])
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)[0]
    from profilers import throughput as T

    work = T.synthetic(6, (4, 12), (5, 9), float("inf"), live.ckpt.config.vocab_size, 0)
    assert row["requests"] == 6 and row["output_tokens"] == sum(w.max_new_tokens for w in work)
    assert row["prompt_tokens"] == sum(len(w.prompt_ids) for w in work)
    assert row["ttft_ms_p50"] > 0 and row["tpot_ms_p50"] > 0 and row["failed_requests"] == 0
    assert live.pool_full()


def test_bench_serve_without_a_server_is_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = runner.invoke(cli, ["bench", "serve", "--url", f"http://127.0.0.1:{port}", "-N", "2"])
    assert res.exit_code == 2 and "no server answered" in res.output


def test_top_url_once_draws_the_servers_view(live):
    client(live).completions.create(model="tiny", prompt=PROMPT, max_tokens=4)
    time.sleep(0.4)  # the engine publishes its view every 0.25 s
    res = runner.invoke(cli, ["top", "--url", live.url, "--once"], env={"COLUMNS": "120"})
    assert res.exit_code == 0, res.output
    for title in ("KV blocks", "layers · batched step", "throughput", "latency"):
        assert title in res.output
    assert "tiny · torch" in res.output


def test_top_url_without_a_server_is_one_line():
    res = runner.invoke(cli, ["top", "--url", "http://127.0.0.1:9", "--once"])
    assert res.exit_code == 2 and "does not answer" in res.output


@pytest.mark.slow
@pilot_test
async def test_top_url_live_view_follows_the_server(live):
    from aios_cli.tui.remote_session import RemoteSession
    from aios_cli.tui.serve_app import ServeApp

    s = RemoteSession(live.url, poll_s=0.1)
    async with piloted(ServeApp, s, (140, 45)) as (app, pilot):
        t0 = time.monotonic()
        while s.polls < 2 and time.monotonic() - t0 < 20:  # the server's totals so far, read
            await pilot.pause(0.05)
        await pilot.pause(0.3)  # the app's own tick has taken that view
        before = s.view().output_tokens
        assert app.view.output_tokens == before
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: client(live).completions.create(model="tiny", prompt=PROMPT, max_tokens=6,
                                                          extra_body={"ignore_eos": True}))
        t0 = time.monotonic()
        while app.view.output_tokens < before + 6 and time.monotonic() - t0 < 20:
            await pilot.pause(0.1)
        assert app.view.output_tokens == before + 6
        status = app.query_one("#status").render().plain
        assert "tiny" in status and "done" in status
        await pilot.press("space")  # not ours to pause: refused with a notice
        assert not s.paused
        await pilot.press("e")  # nor its requests ours to export: aios serve --requests-csv writes them
        assert app.last_export is None and not app.exporting
        await pilot.press("q")
    assert s.polls > 0


def test_bench_serve_sends_a_sharegpt_dataset_as_text(live, tmp_path):
    data = tmp_path / "sharegpt.jsonl"
    convs = [{"conversations": [{"from": "human", "value": f"Tell me about the number {i}."},
                                {"from": "gpt", "value": "It is a number. " * (i + 1)}]} for i in range(4)]
    data.write_text("\n".join(json.dumps(c) for c in convs) + "\n")
    res = runner.invoke(cli, ["bench", "serve", "--url", live.url, "--dataset", str(data), "--tokenizer", "tiny",
                              "-N", "4", "-f", "json", "-q"])
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)[0]
    tok = live.ckpt.tokenizer
    assert row["requests"] == 4 and row["failed_requests"] == 0
    assert row["prompt_tokens"] == sum(len(tok.encode(c["conversations"][0]["value"]).ids) for c in convs)
    assert row["output_tokens"] == sum(len(tok.encode(c["conversations"][1]["value"]).ids) for c in convs)
