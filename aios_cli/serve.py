"""`aios serve`: an OpenAI-compatible HTTP server over the batched engine (FastAPI on uvicorn).

One engine thread steps the batched engine (`server.loop.EngineLoop`); the HTTP handlers only
submit, abort and stream (`server.api`). On SIGINT or SIGTERM the server stops taking requests,
aborts the ones in flight (each stream ends with finish_reason "abort" and `[DONE]`), writes
--csv / --requests-csv / --trace whole (or not at all), and exits 130 (SIGINT) or 0 (SIGTERM).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import console
from .batch_options import (BLOCK_SIZE, ENGINE_PANEL, MAX_NUM_BATCHED_TOKENS, MAX_NUM_SEQS, BatchBackendOpt,
                            BatchDtypeOpt, BatchModelOpt, BatchOptions, BlockSizeOpt, KvBlocksOpt, KvCacheBytesOpt,
                            MaxNumBatchedTokensOpt, MaxNumSeqsOpt, PrefixCachingOpt, TorchThreadsOpt, check_profile,
                            variant)
from .errors import fail, guarded

_NET = "Network"
_OUT = "Output"
DEFAULT_KV_BYTES = 1 << 30  # the CPU pool when neither --kv-blocks nor --kv-cache-bytes is given


@guarded
def serve(
    model: BatchModelOpt = "tiny",
    backend: BatchBackendOpt = None,
    dtype: BatchDtypeOpt = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind. The default is loopback only; pass 0.0.0.0 to listen on every interface.", rich_help_panel=_NET)] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port (0: any free one, printed at start).", rich_help_panel=_NET)] = 8000,
    api_key: Annotated[Optional[str], typer.Option("--api-key", help="Require 'Authorization: Bearer KEY' on every request (or set AIOS_API_KEY).", envvar="AIOS_API_KEY", rich_help_panel=_NET, show_default=False)] = None,
    served_model_name: Annotated[Optional[str], typer.Option("--served-model-name", help="The model name clients send. Default: the model's own name.", rich_help_panel=_NET, show_default=False)] = None,
    max_num_seqs: MaxNumSeqsOpt = MAX_NUM_SEQS,
    max_num_batched_tokens: MaxNumBatchedTokensOpt = MAX_NUM_BATCHED_TOKENS,
    max_queue: Annotated[int, typer.Option("--max-queue", help="Requests waiting beyond the running ones; past it, 503 with Retry-After.", rich_help_panel=ENGINE_PANEL)] = 256,
    kv_blocks: KvBlocksOpt = None,
    kv_cache_bytes: variant(KvCacheBytesOpt, more="Default: 1 GiB.") = None,
    block_size: BlockSizeOpt = BLOCK_SIZE,
    prefix_caching: PrefixCachingOpt = True,
    threads: TorchThreadsOpt = None,
    speculate: Annotated[Optional[str], typer.Option("--speculate", help="Speculative decoding inside the batch: ngram (prompt lookup, per request, its drafts verified in the same step; the output unchanged).", rich_help_panel=ENGINE_PANEL, show_default=False)] = None,
    spec_k: Annotated[int, typer.Option("--spec-k", help="Tokens a request drafts a step, at most (with --speculate).", rich_help_panel=ENGINE_PANEL)] = 4,
    profile: Annotated[str, typer.Option("--profile", help="op: time every op of every step (per-op seconds in --csv, layers in aios top --url); none: steps only.", rich_help_panel=_OUT)] = "op",
    csv_file: Annotated[Optional[Path], typer.Option("--csv", help="On exit: one row per engine step (aios bench throughput --steps-csv's columns).", rich_help_panel=_OUT)] = None,
    requests_csv: Annotated[Optional[Path], typer.Option("--requests-csv", help="On exit: one row per finished request.", rich_help_panel=_OUT)] = None,
    trace: Annotated[Optional[Path], typer.Option("--trace", help="On exit: a Chrome/Perfetto trace, a lane per request and one for the steps.", rich_help_panel=_OUT)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the listening line and errors.", rich_help_panel=_OUT)] = False,
) -> None:
    """Serve the model over HTTP with OpenAI's API (/v1/completions, /v1/chat/completions,
    streaming or not), plus /v1/models, /health, /metrics (Prometheus) and /aios/state (for
    aios top --url)."""
    check_profile(profile)
    if not 0 <= port <= 65535:
        fail(f"--port must be 0..65535, got {port}")
    if max_queue < 0:
        fail(f"--max-queue must be 0 or more, got {max_queue}")
    if api_key is not None and not api_key.strip():
        fail("--api-key is empty — give a key, or leave the option out")
    from .outputs import check_outputs

    check_outputs({"--csv": csv_file, "--requests-csv": requests_csv, "--trace": trace})
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        fail(f"aios serve needs {e.name}, which is not installed — pip install -e . (it is a dependency)")
    opts = BatchOptions(backend, dtype, max_num_seqs, max_num_batched_tokens, kv_blocks, kv_cache_bytes, block_size,
                        prefix_caching, speculate, spec_k)
    backend = opts.check()
    from profilers.threads import setup

    plan = setup(threads)
    err = console.stderr()
    if not quiet:
        console.say_busy(err, plan.busy_warning(), quiet)
    from contextlib import nullcontext

    from engines.model.sources import open_model

    with err.status(f"opening {model}", spinner="dots") if not quiet else nullcontext():
        ckpt = open_model(model)
    engine = opts.load(ckpt, err, quiet)
    be = opts.build(engine, default_bytes=DEFAULT_KV_BYTES)
    from profilers import throughput as T
    from profilers.harness import device_label

    T.warm_up(be)
    name = served_model_name or ckpt.name
    from profilers.probe import make_probe
    from profilers.threads import pool_threads

    from .server.api import build_app
    from .server.loop import EngineLoop
    from .server.metrics import ServeMetrics

    probe = make_probe("op", engine.tdev.type, engine.tdev) if profile == "op" else None
    metrics = ServeMetrics(name, be.blocks.num_blocks, spec_k=spec_k if speculate else 0)
    info = {"model": name, "backend": backend, "dtype": engine.dtype, "device": device_label(engine),
            "threads": pool_threads(backend)["threads"], "profile": profile,
            "workload": f"aios serve on {host}:{port}"}
    loop = EngineLoop(be, info, max_queue=max_queue, probe=probe, metrics=metrics)
    app = build_app(loop, ckpt, name, api_key, metrics)
    if not quiet:
        err.print(f"{name} on {backend} {engine.dtype}: KV pool {be.blocks.num_blocks} blocks of {block_size} tokens "
                  f"({be.kv_cache_bytes / 2**20:.0f} MiB), up to {max_num_seqs} running + {max_queue} queued; "
                  f"chat prompts: {app.state.chat.kind}", style="dim", soft_wrap=True)
    code = _run_server(app, loop, host, port, err)
    _write_exports(loop, csv_file, requests_csv, trace, {"model": name, "backend": backend}, err, quiet)
    if code:
        raise typer.Exit(code)


def _bind(host: str, port: int):
    """The listening socket, bound here so a bad --host or a port in use is one line."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        fail(f"--host {host}: not an address here ({e.strerror}) — pass 127.0.0.1, or an address of this machine")
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        fail(f"could not listen on {host}:{port} ({e.strerror or e}) — pick another --port, or stop what holds it")
    sock.set_inheritable(True)
    return sock


def _run_server(app, loop, host: str, port: int, err) -> int:
    import uvicorn

    sock = _bind(host, port)
    h, p = sock.getsockname()[:2]
    signals: list[int] = []

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):  # stop taking requests and end the streams, then uvicorn's own
            signals.append(sig)
            loop.stop_accepting()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=10,
                            lifespan="off")
    server = Server(config)
    loop.start()
    shown = f"[{h}]" if ":" in h else h
    from .server.launch import LISTENING

    print(f"aios serve: {LISTENING} http://{shown}:{p} (Ctrl-C stops)", file=sys.stderr, flush=True)
    # uvicorn takes SIGINT/SIGTERM over while it runs and raises them again once it has shut
    # down; these handlers receive them then, so the exports are still written
    before = {sig: signal.signal(sig, lambda s, f: signals.append(s) if s not in signals else None)
              for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        loop.stop_accepting()
        loop.join(timeout=30)
        sock.close()
        for sig, handler in before.items():
            signal.signal(sig, handler)
    aborted = loop.aborted_at_stop
    if signals:
        name = signal.Signals(signals[0]).name
        print(f"aios serve: stopped by {name}" + (f"; {aborted} request(s) in flight were aborted" if aborted else ""),
              file=sys.stderr, flush=True)
        from . import errors

        errors.said.append(signals[0])  # this line says it: no second "interrupted" line
    return 130 if signals and signals[0] == signal.SIGINT else 0


def _write_exports(loop, csv_file, requests_csv, trace, meta, err, quiet) -> None:
    if csv_file is None and requests_csv is None and trace is None:
        return
    from profilers import export

    from .outputs import write

    run = loop.run_record()
    if csv_file is not None:
        write("--csv", csv_file, export.steps_csv(run))
    if requests_csv is not None:
        write("--requests-csv", requests_csv, export.requests_csv([run]))
    if trace is not None:
        write("--trace", trace, export.serving_trace(run, meta))
    if not quiet:
        err.print(f"wrote the exports: {len(run.steps)} steps, {len(run.requests)} requests", style="dim")
