"""`aios bench throughput`: a workload of requests through the batched engine (paged KV cache,
continuous batching), and optionally the same requests one at a time (`--baseline`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import console
from ..batch_options import (BLOCK_SIZE, MAX_NUM_BATCHED_TOKENS, MAX_NUM_SEQS, WORKLOAD_PANEL, BatchBackendOpt,
                             BatchDtypeOpt, BatchModelOpt, BatchOptions, BlockSizeOpt, DatasetOpt, InputLenOpt,
                             KvBlocksOpt, KvCacheBytesOpt, MaxNumBatchedTokensOpt, MaxNumSeqsOpt, NumRequestsOpt,
                             OutputLenOpt, PrefixCachingOpt, PrefixLenOpt, RateOpt, SeedOpt, TorchThreadsOpt,
                             check_profile, check_workload, variant)
from ..errors import fail, guarded
from ..outputs import check_format, check_outputs, write
from ..parallel import DistTimeoutOpt, MicroBatchesOpt, PpOpt, TpOpt, check_layout
from .report import FORMATS, print_report, summary_rows, workload_fields

_OUT = "Output"


@guarded
def throughput(
    model: BatchModelOpt = "tiny",
    backend: BatchBackendOpt = None,
    dtype: BatchDtypeOpt = None,
    num_requests: NumRequestsOpt = 64,
    rate: RateOpt = "inf",
    input_len: InputLenOpt = "16:64",
    output_len: OutputLenOpt = None,
    prefix_len: PrefixLenOpt = 0,
    dataset: variant(DatasetOpt, more="Tokenized with the model's tokenizer.") = None,
    seed: SeedOpt = 0,
    max_num_seqs: MaxNumSeqsOpt = MAX_NUM_SEQS,
    max_num_batched_tokens: MaxNumBatchedTokensOpt = MAX_NUM_BATCHED_TOKENS,
    kv_blocks: variant(KvBlocksOpt, more="Default: enough for every request at its longest, or --kv-cache-bytes.") = None,
    kv_cache_bytes: KvCacheBytesOpt = None,
    block_size: BlockSizeOpt = BLOCK_SIZE,
    prefix_caching: PrefixCachingOpt = True,
    tp: TpOpt = 1,
    pp: PpOpt = 1,
    micro_batches: MicroBatchesOpt = None,
    dist_timeout: DistTimeoutOpt = 300.0,
    baseline: Annotated[bool, typer.Option("--baseline", help="Also run the same requests one at a time through the batch-1 engine, side by side.", rich_help_panel=WORKLOAD_PANEL)] = False,
    threads: TorchThreadsOpt = None,
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
    check_profile(profile)
    r, in_range, out_range = check_workload(num_requests, rate, input_len, output_len, prefix_len)
    if prefix_len and dataset is not None:
        fail("--prefix-len applies to random prompts, not to --dataset — drop one")
    check_outputs({"--steps-csv": steps_csv, "--requests-csv": requests_csv, "--trace": trace})
    opts = BatchOptions(backend, dtype, max_num_seqs, max_num_batched_tokens, kv_blocks, kv_cache_bytes, block_size,
                        prefix_caching)
    layout = check_layout(tp, pp, dist_timeout)
    if layout is None and micro_batches is not None:
        fail("--micro-batches cuts a step for the stages of --pp — pass --pp 2 (or more) with it")
    if layout is not None and baseline:
        fail("--baseline runs the batch-1 engine in this one process, not over --tp/--pp ranks — drop one")
    backend = opts.check()  # the batched backends (torch, cuda) both shard
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
    meta = {"model": ckpt.name, "backend": backend, "dtype": dtype, "max_num_seqs": max_num_seqs,
            "max_num_batched_tokens": max_num_batched_tokens,
            **workload_fields(rate, input_len, output_len, prefix_len, dataset, seed)}
    if layout is not None:
        from .throughput_dist import run_sharded

        run_sharded(ckpt, model, opts, work, r, layout, micro_batches, dist_timeout, profile, plan, meta, format,
                    {"--steps-csv": steps_csv, "--requests-csv": requests_csv, "--trace": trace}, err, quiet)
        said_busy()
        return
    engine = opts.load(ckpt, err, quiet)
    be = opts.build(engine, default_blocks=T.default_kv_blocks(work, block_size))
    T.warm_up(be, engine)
    from profilers.probe import make_probe

    probe = make_probe(profile, engine.tdev.type, engine.tdev) if profile == "op" else None
    runs = [_run_batched(T, be, work, probe, err, quiet)]
    if baseline:
        runs.append(_run_baseline(T, engine, work, err, quiet))
    meta["dtype"] = engine.dtype
    print_report(summary_rows(runs, meta, plan), format)
    from profilers import export

    if steps_csv is not None:
        write("--steps-csv", steps_csv, export.steps_csv(runs[0]))
    if requests_csv is not None:
        write("--requests-csv", requests_csv, export.requests_csv(runs))
    if trace is not None:
        write("--trace", trace, export.serving_trace(runs[0], meta))
    said_busy()


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


