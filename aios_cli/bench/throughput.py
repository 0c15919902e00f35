"""`aios bench throughput`: a workload of requests through the batched engine (paged KV cache,
continuous batching), and optionally the same requests one at a time (`--baseline`)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import console
from ..errors import fail, guarded
from ..outputs import check_format, check_outputs, write

FORMATS = ("table", "csv", "json", "md")
_WORK = "Workload"
_ENGINE = "Engine"
_OUT = "Output"

SUMMARY_COLUMNS = (
    "run_id", "host", "cpu", "mode", "model", "backend", "dtype", "requests", "duration_s", "prompt_tokens",
    "output_tokens", "output_tokens_per_s", "total_tokens_per_s", "request_throughput_per_s",
    "ttft_ms_p50", "ttft_ms_p90", "ttft_ms_p99", "tpot_ms_p50", "tpot_ms_p90", "tpot_ms_p99",
    "itl_ms_p50", "itl_ms_p90", "itl_ms_p99", "e2e_ms_p50", "e2e_ms_p90", "e2e_ms_p99",
    "mean_batch_size", "max_batch_size", "steps", "preemptions", "prefix_cache_hit_rate", "kv_blocks",
    "block_size", "max_blocks_used", "max_num_seqs", "max_num_batched_tokens", "rate", "input_len", "prefix_len",
    "output_len",
    "dataset", "seed",
)



def _rate(text: str) -> float:
    t = text.strip().lower()
    if t in ("inf", "infinity"):
        return math.inf
    try:
        r = float(t)
    except ValueError:
        fail(f"--rate takes requests per second or inf, got {text!r}")
    if not r > 0 or math.isinf(r) or math.isnan(r):
        fail(f"--rate must be positive (or inf: every request at once), got {text!r}")
    return r


@guarded
def throughput(
    model: Annotated[str, typer.Option("--model", "-m", help="A preset, an HF-format directory, a GGUF file or a cached repo id.", rich_help_panel=_ENGINE)] = "tiny",
    backend: Annotated[Optional[str], typer.Option("--backend", "-b", help="torch or cuda (the batched engine is PyTorch's). Default: cuda with a usable GPU, else torch.", rich_help_panel=_ENGINE)] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="torch: float32 (default), bfloat16, float16; cuda: bfloat16 (default), float16, float32.", rich_help_panel=_ENGINE)] = None,
    num_requests: Annotated[int, typer.Option("--num-requests", "-N", help="Requests in the workload.", rich_help_panel=_WORK)] = 64,
    rate: Annotated[str, typer.Option("--rate", help="Arrivals per second (a Poisson process), or inf: every request at once.", rich_help_panel=_WORK)] = "inf",
    input_len: Annotated[str, typer.Option("--input-len", help="Prompt lengths A:B, uniform (random ids from --seed).", rich_help_panel=_WORK)] = "16:64",
    output_len: Annotated[Optional[str], typer.Option("--output-len", help="Output lengths A:B, uniform; every request generates exactly that many (EOS is ignored). Default 64:128; with --dataset, its replies' lengths.", rich_help_panel=_WORK, show_default=False)] = None,
    prefix_len: Annotated[int, typer.Option("--prefix-len", help="Random prompts start with the same this many ids (a shared system prompt: what prefix caching saves).", rich_help_panel=_WORK)] = 0,
    dataset: Annotated[Optional[Path], typer.Option("--dataset", help="A JSONL file of ShareGPT-style conversations (or prompt/output_len objects), tokenized with the model's tokenizer.", rich_help_panel=_WORK)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the lengths, ids and arrivals.", rich_help_panel=_WORK)] = 0,
    max_num_seqs: Annotated[int, typer.Option("--max-num-seqs", help="Requests running at once, at most.", rich_help_panel=_ENGINE)] = 64,
    max_num_batched_tokens: Annotated[int, typer.Option("--max-num-batched-tokens", help="Tokens a step computes, at most (longer prompts are prefilled in chunks).", rich_help_panel=_ENGINE)] = 512,
    kv_blocks: Annotated[Optional[int], typer.Option("--kv-blocks", help="KV blocks in the pool. Default: enough for every request at its longest, or --kv-cache-bytes.", rich_help_panel=_ENGINE, show_default=False)] = None,
    kv_cache_bytes: Annotated[Optional[int], typer.Option("--kv-cache-bytes", help="The pool's size in bytes, instead of --kv-blocks.", rich_help_panel=_ENGINE, show_default=False)] = None,
    block_size: Annotated[int, typer.Option("--block-size", help="Tokens a KV block holds.", rich_help_panel=_ENGINE)] = 16,
    prefix_caching: Annotated[bool, typer.Option("--prefix-caching/--no-prefix-caching", help="Share full KV blocks between requests with the same prefix.", rich_help_panel=_ENGINE)] = True,
    baseline: Annotated[bool, typer.Option("--baseline", help="Also run the same requests one at a time through the batch-1 engine, side by side.", rich_help_panel=_WORK)] = False,
    threads: Annotated[Optional[int], typer.Option("--threads", "-t", help="Threads for torch. Default: the usable CPUs less those other processes keep busy.", rich_help_panel=_ENGINE, show_default=False)] = None,
    profile: Annotated[str, typer.Option("--profile", help="op: time every op of every step (per-op seconds in --steps-csv); none: steps only.", rich_help_panel=_OUT)] = "op",
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv, json or md.", rich_help_panel=_OUT)] = "table",
    steps_csv: Annotated[Optional[Path], typer.Option("--steps-csv", help="One row per engine step (prefill tokens, decode sequences, KV blocks, per-op seconds).", rich_help_panel=_OUT)] = None,
    requests_csv: Annotated[Optional[Path], typer.Option("--requests-csv", help="One row per request (arrival, TTFT, TPOT, end-to-end).", rich_help_panel=_OUT)] = None,
    trace: Annotated[Optional[Path], typer.Option("--trace", help="Chrome/Perfetto trace: a lane per request, one for the engine's steps.", rich_help_panel=_OUT)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.", rich_help_panel=_OUT)] = False,
) -> None:
    """Serving throughput of the batched engine: a workload of requests (all at once or Poisson
    arrivals), output and total tok/s, TTFT, TPOT, inter-token and end-to-end latency at
    p50/p90/p99, batch size, KV-block use, preemptions and prefix-cache hits (vLLM's bench
    throughput)."""
    check_format(format, FORMATS)
    if profile not in ("op", "none"):
        fail(f"unknown --profile {profile!r} — choose op or none")
    if not 1 <= num_requests <= 1_000_000:
        fail(f"--num-requests must be between 1 and 1,000,000, got {num_requests}")
    if prefix_len < 0:
        fail(f"--prefix-len must be 0 or more, got {prefix_len}")
    if prefix_len and dataset is not None:
        fail("--prefix-len applies to random prompts, not to --dataset — drop one")
    if kv_blocks is not None and kv_cache_bytes is not None:
        fail("--kv-blocks and --kv-cache-bytes both size the pool — give one")
    r = _rate(rate)
    from engines.errors import UserError
    from profilers.throughput import parse_range

    try:
        in_range = parse_range(input_len, "--input-len")
        out_range = parse_range(output_len, "--output-len") if output_len is not None else None
    except UserError as e:
        fail(str(e))
    check_outputs({"--steps-csv": steps_csv, "--requests-csv": requests_csv, "--trace": trace})

    backend = batched_backend(backend, dtype)
    from profilers.threads import setup

    plan = setup(threads)
    err = console.stderr()
    said_busy = console.say_busy(err, plan.busy_warning(), quiet)
    from contextlib import nullcontext

    from engines.model.sources import open_model

    with err.status(f"opening {model}", spinner="dots") if not quiet else nullcontext():
        ckpt = open_model(model)
    from profilers import throughput as T

    V = ckpt.config.vocab_size
    if dataset is not None:
        work = T.from_jsonl(str(dataset), ckpt.tokenizer, num_requests, out_range, r, seed,
                            max_prompt=ckpt.config.max_position_embeddings - 1)
    else:
        work = T.synthetic(num_requests, in_range, out_range or (64, 128), r, V, seed, prefix_len)
    limit = ckpt.config.max_position_embeddings
    longest = max(len(w.prompt_ids) + w.max_new_tokens for w in work)
    if longest > limit:
        fail(f"a request of {longest} tokens (prompt + output) exceeds the model's context of {limit} — "
             "pass shorter --input-len / --output-len")
    from profilers.harness import build_engine

    with err.status(f"loading {ckpt.name} on {backend}", spinner="dots") if not quiet else nullcontext():
        engine, load_s = build_engine(ckpt, backend, dtype)
    from engines.batch.engine import BatchEngine

    if kv_blocks is None and kv_cache_bytes is None:
        kv_blocks = T.default_kv_blocks(work, block_size)
    be = BatchEngine(engine, num_blocks=kv_blocks, kv_cache_bytes=kv_cache_bytes, block_size=block_size,
                     max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                     prefix_caching=prefix_caching)
    T.warm_up(be, engine)
    from profilers.probe import make_probe

    probe = make_probe(profile, engine.tdev.type, engine.tdev) if profile == "op" else None
    runs = [_run_batched(T, be, work, probe, err, quiet)]
    if baseline:
        runs.append(_run_baseline(T, engine, work, err, quiet))
    meta = {"model": ckpt.name, "backend": backend, "dtype": engine.dtype, "max_num_seqs": max_num_seqs,
            "max_num_batched_tokens": max_num_batched_tokens, "rate": rate, "input_len": input_len if dataset is None else "", "prefix_len": prefix_len,
            "output_len": output_len or ("" if dataset is not None else "64:128"), "dataset": str(dataset or ""),
            "seed": seed}
    rows = _rows(runs, meta, plan)
    _print(rows, format, runs, be, meta)
    from profilers import export

    if steps_csv is not None:
        write("--steps-csv", steps_csv, export.steps_csv(runs[0]))
    if requests_csv is not None:
        write("--requests-csv", requests_csv, export.requests_csv(runs))
    if trace is not None:
        write("--trace", trace, export.serving_trace(runs[0], meta))
    said_busy()


def batched_backend(backend: str | None, dtype: str | None) -> str:
    """The backend the batched engine runs on (bench throughput, top --serve, serve): one whose
    record says it batches, by default the GPU one where a GPU is usable; checked now, before
    anything loads."""
    from engines import BACKENDS, check_backend, default_backend

    if backend is None:
        backend = default_backend(batched=True)[0]
    batching = [b.name for b in BACKENDS.values() if b.batches]
    if backend not in BACKENDS or not BACKENDS[backend].batches:
        cpu = [b for b in batching if BACKENDS[b].device == "cpu"]
        gpu = [b for b in batching if BACKENDS[b].device != "cpu"]
        fail(f"the batched engine runs on {' or '.join(cpu + gpu)}, not {backend!r} — pass --backend {cpu[0]}"
             + (f" (or {gpu[0]} with a GPU)" if gpu else ""))
    check_backend(backend, dtype)
    return backend


def _progress(err, quiet, total, what):
    if quiet:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    p = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                 TimeElapsedColumn(), console=err, transient=True)
    return p, p.add_task(what, total=total)


def _run_batched(T, be, work, probe, err, quiet):
    bar = _progress(err, quiet, len(work), "batched")
    if bar is None:
        return T.run_batched(be, work, probe)
    p, task = bar
    done = [0]

    def on_step(out, rec):
        done[0] += len(out.finished)
        p.update(task, completed=done[0], description=f"batched: step {rec.step}, {out.running} running, "
                 f"{out.waiting} waiting, {rec.blocks_used} blocks used")

    with p:
        return T.run_batched(be, work, probe, on_step)


def _run_baseline(T, engine, work, err, quiet):
    bar = _progress(err, quiet, len(work), "baseline: one request at a time")
    if bar is None:
        return T.run_baseline(engine, work)
    p, task = bar
    with p:
        return T.run_baseline(engine, work, lambda k, n: p.update(task, completed=k))


def _rows(runs, meta, plan) -> list[dict]:
    from profilers.export import machine_fields
    from profilers.harness import new_run_id, provenance

    run_id = new_run_id("bench-throughput")
    prov = provenance(meta["backend"], plan)
    return [{"run_id": run_id, **machine_fields(), **meta, **run.summary(), **prov} for run in runs]


def _columns():
    from profilers.record import PROVENANCE_FIELDS

    return SUMMARY_COLUMNS + tuple(PROVENANCE_FIELDS)


def _print(rows, format, runs, be, meta, extra_columns: tuple[str, ...] = ()) -> None:
    cols = _columns() + tuple(extra_columns)
    if format == "json":
        sys.stdout.write(json.dumps([{k: r.get(k) for k in cols} for r in rows], indent=2) + "\n")
    elif format == "csv":
        from profilers.export import csv_value, to_csv

        sys.stdout.write(to_csv([{k: csv_value(r.get(k)) for k in cols} for r in rows], cols))
    elif format == "md":
        sys.stdout.write(_markdown(rows))
    else:
        _table(rows, be)


def _ms(v) -> str:
    return "n/a" if v is None else f"{v:.1f}"


_METRICS = (
    ("output tok/s", lambda r: f"{r['output_tokens_per_s']:.1f}"),
    ("total tok/s", lambda r: f"{r['total_tokens_per_s']:.1f}"),
    ("requests/s", lambda r: f"{r['request_throughput_per_s']:.2f}"),
    ("duration s", lambda r: f"{r['duration_s']:.1f}"),
    ("TTFT ms p50/p90/p99", lambda r: f"{_ms(r['ttft_ms_p50'])} / {_ms(r['ttft_ms_p90'])} / {_ms(r['ttft_ms_p99'])}"),
    ("TPOT ms p50/p90/p99", lambda r: f"{_ms(r['tpot_ms_p50'])} / {_ms(r['tpot_ms_p90'])} / {_ms(r['tpot_ms_p99'])}"),
    ("ITL ms p50/p90/p99", lambda r: f"{_ms(r['itl_ms_p50'])} / {_ms(r['itl_ms_p90'])} / {_ms(r['itl_ms_p99'])}"),
    ("E2E ms p50/p90/p99", lambda r: f"{_ms(r['e2e_ms_p50'])} / {_ms(r['e2e_ms_p90'])} / {_ms(r['e2e_ms_p99'])}"),
    ("batch size mean / max", lambda r: f"{r['mean_batch_size']:.1f} / {r['max_batch_size']}"),
    ("steps", lambda r: str(r["steps"]) if r["steps"] else "n/a"),
    ("KV blocks used, max", lambda r: f"{r['max_blocks_used']} of {r['kv_blocks']}" if r["kv_blocks"] else "n/a"),
    ("preemptions", lambda r: str(r["preemptions"]) if r["mode"] == "batched" else "n/a"),
    ("prefix-cache hits", lambda r: "n/a" if r["prefix_cache_hit_rate"] is None else f"{r['prefix_cache_hit_rate']:.1%}"),
)


_ENGINE_SIDE = {"batch size mean / max", "steps", "KV blocks used, max", "preemptions", "prefix-cache hits"}


def _metrics(rows):
    """The table's rows: over HTTP (bench serve) the engine's own figures are not seen."""
    if all(r.get("mode") == "serve" for r in rows):
        return [(n, f) for n, f in _METRICS if n not in _ENGINE_SIDE]
    return _METRICS


def _title(rows) -> str:
    r = rows[0]
    work = f"dataset {r['dataset']}" if r["dataset"] else f"input {r['input_len']}"
    if r.get("prefix_len"):
        work += f" after a shared {r['prefix_len']}-token prefix"
    head = (f"{r['model']} · {r['backend']} {r['dtype']}".rstrip() + f" · {r['requests']} requests, {work}, "
            f"output {r['output_len'] or 'from the dataset'}, rate {r['rate']}")
    if r.get("mode") == "serve":
        failed = r.get("failed_requests") or 0
        return f"bench serve · {r.get('url', '')} · {head} · {failed} failed"
    return f"bench throughput · {head} · max {r['max_num_seqs']} seqs, {r['max_num_batched_tokens']} tokens a step"


def _footer(rows) -> str:
    r = rows[0]
    gain = ""
    if len(rows) > 1:
        gain = (f"batched / baseline output tok/s: {rows[0]['output_tokens_per_s'] / rows[1]['output_tokens_per_s']:.2f}x; ")
    load = f", load average {r['load_avg_1m']:.2f} at the start" if r.get("load_avg_1m") is not None else ""
    where = (f"times taken by this client over HTTP (token = a streamed event){load}" if r.get("mode") == "serve"
             else f"threads {r['threads']} ({r['threading_layer']}){load}")
    return (f"{gain}tokens: {r['prompt_tokens']} prompt + {r['output_tokens']} output; duration = first arrival to last "
            f"token; TPOT = (last token - first token) / (output tokens - 1) per request; {where}; "
            f"aios {r['aios_version']}, torch {r['torch_version']}")


def _table(rows, be) -> None:
    from rich import box
    from rich.table import Table

    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    t.add_column("metric", no_wrap=True)
    for r in rows:
        t.add_column(r["mode"], justify="right", no_wrap=True)
    for name, f in _metrics(rows):
        t.add_row(name, *(f(r) for r in rows))
    c = console.stdout()
    c.print(_title(rows), soft_wrap=True)
    c.print(t)
    c.print(_footer(rows), soft_wrap=True)


def _markdown(rows) -> str:
    out = [_title(rows), "", "| metric | " + " | ".join(r["mode"] for r in rows) + " |",
           "|---|" + "---:|" * len(rows)]
    out += ["| " + name + " | " + " | ".join(f(r) for r in rows) + " |" for name, f in _metrics(rows)]
    return "\n".join(out) + "\n\n" + _footer(rows) + "\n"
