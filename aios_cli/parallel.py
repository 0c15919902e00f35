"""`aios run --tp N --pp M`: the same generation split over TP x PP ranks (`engines.dist`), and
the ranks' tables.

Started from a shell, aios spawns the ranks itself on this host, one process each, and this
process (not a rank) shows the progress, streams rank 0's text and prints every rank's
figures. Started by torchrun (RANK and WORLD_SIZE set, on one host or several), this process
is one rank: it never spawns, rank 0 prints, and the other ranks send it their records over the
process group and print nothing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from typing import Annotated, Optional

import typer

from . import console
from .errors import fail, printable

PARALLEL_PANEL = "Parallel (torch.distributed)"
TpOpt = Annotated[int, typer.Option("--tp", help="Tensor-parallel ranks: each holds its share of every layer's heads and MLP; two all-reduces a layer. Must divide the KV heads. torch and cuda.", rich_help_panel=PARALLEL_PANEL)]
PpOpt = Annotated[int, typer.Option("--pp", help="Pipeline-parallel stages: each runs a contiguous block of layers. --tp x --pp ranks are spawned on this host, unless torchrun started them.", rich_help_panel=PARALLEL_PANEL)]
DistTimeoutOpt = Annotated[float, typer.Option("--dist-timeout", help="Seconds any rank waits for the others (joining, every collective) before the run ends with an error.", rich_help_panel=PARALLEL_PANEL)]
MicroBatchesOpt = Annotated[Optional[int], typer.Option("--micro-batches", help="With --pp: a step's requests cut into up to this many micro-batches, so the stages work on different sequences at once. Default: one a stage.", rich_help_panel=PARALLEL_PANEL, show_default=False)]


def check_layout(tp: int, pp: int, timeout_s: float) -> tuple[int, int] | None:
    """(tp, pp) when the run is distributed (more than one rank, or started by torchrun), else
    None. One line for a size that cannot be."""
    import math

    for flag, v in (("--tp", tp), ("--pp", pp)):
        if v < 1:
            fail(f"{flag} must be 1 or more, got {v} — e.g. {flag} 2")
    if not (math.isfinite(timeout_s) and timeout_s > 0):
        fail(f"--dist-timeout must be a positive number of seconds, got {timeout_s} — e.g. --dist-timeout 60")
    from engines.dist.group import torchrun_env

    env = torchrun_env()
    if env is not None and env["world"] != tp * pp:
        fail(f"torchrun started {env['world']} ranks, but --tp {tp} x --pp {pp} needs {tp * pp} — launch "
             f"--nproc-per-node x --nnodes = {tp * pp} ranks, or change --tp/--pp")
    if tp * pp == 1 and env is None:
        return None
    return tp, pp


def check_backend_shards(backends: list[str], chosen: bool) -> str:
    """The one backend a distributed run uses: one whose record says it shards."""
    from engines import BACKENDS, backend

    sharding = [b.name for b in BACKENDS.values() if b.shards]
    if len(backends) != 1:
        fail(f"--tp and --pp run one backend at a time, got {', '.join(backends)} — pass one --backend")
    name = backends[0]
    if not backend(name).shards:
        fail(f"--tp and --pp split the torch engine's weights over ranks; the {name} engine cannot be split"
             + (" (it was picked as this machine's default)" if chosen else "")
             + f" — use --backend {' or '.join(sharding)}")
    return name


def check_gpus(backend: str, local_ranks: int) -> None:
    """A GPU backend's ranks on this host need a GPU each (NCCL does not share one device
    between ranks)."""
    from engines import backend as record

    if record(backend).device != "cuda":
        return
    from engines import gpu_count

    n = gpu_count()
    if local_ranks > n:
        fail(f"{local_ranks} ranks of --backend {backend} on this host need a GPU each; it has {n} — use fewer "
             "ranks a host (torchrun --nproc-per-node), or --backend torch to run them on the CPU")


def run_distributed(req, layout: tuple[int, int], timeout_s: float, format: str, csv_file: Path | None,
                    trace_file: Path | None, quiet: bool) -> None:
    from engines.dist.group import torchrun_env
    from engines.model.shards import check_pp, check_tp
    from profilers.dist_run import DistJob, torchrun_run

    from .outputs import check_format

    err = console.stderr()
    check_format(format)
    tp, pp = layout
    env = torchrun_env()
    lead = env is None or env["rank"] == 0  # who talks: the parent, or torchrun's rank 0
    if req.speculate:
        fail("--speculate does not combine with --tp or --pp yet — run one or the other")
    backends, chosen_why = req.check(sharded=True)
    backend = check_backend_shards(backends, chosen_why is not None)
    check_gpus(backend, tp * pp if env is None else int(os.environ.get("LOCAL_WORLD_SIZE", tp * pp)))
    quiet = quiet or not lead
    status = (lambda msg: err.status(msg, spinner="dots")) if not quiet else None
    ckpt, [(_, ids)] = req.open(backends, status)
    check_tp(ckpt.config, tp)
    check_pp(ckpt.config, pp)
    if chosen_why and not quiet:
        err.print(f"backend: {backend} ({chosen_why}; pick one with --backend)", style="dim")
    if not quiet:
        for note in req.notes(ckpt):
            err.print(note, style="dim", soft_wrap=True)
    job = DistJob(model=req.model, backend=backend, prompt_ids=ids, opts=req.run_options(), tp=tp, pp=pp,
                  timeout_s=timeout_s)
    if env is not None:
        records = torchrun_run(job, env)
        if records is None:  # not rank 0: rank 0 has this rank's record and prints
            return
    else:
        threads = max(1, req.thread_plan.threads // job.world)
        if not quiet:
            err.print(f"spawning {job.world} ranks (TP={tp} x PP={pp}) on this host, {threads} thread"
                      f"{'s' if threads != 1 else ''} each, over {'nccl' if job.device == 'cuda' else 'gloo'}",
                      style="dim")
        records = _spawn(job, threads, ckpt, err, quiet, stream=format == "table")
    from .outputs import emit_records

    emit_records(records, format, csv_file, trace_file, quiet, err, streamed=not quiet)


def _spawn(job, threads, ckpt, err, quiet, stream):
    from profilers.dist_run import spawn_run

    if quiet:
        return spawn_run(job, threads)
    from engines.model.tokenizer import StreamDecoder

    decoder = StreamDecoder(ckpt.tokenizer) if ckpt.tokenizer is not None else None
    text_out = sys.stdout if stream else sys.stderr
    shown = (lambda s: printable(s, keep="\n\t")) if text_out.isatty() else (lambda s: s)
    status = err.status(f"{job.backend}: starting {job.world} ranks", spinner="dots")
    status.start()
    state = {"streaming": False}

    def on_message(rank, payload):
        kind, value = payload
        if kind == "phase" and not state["streaming"]:
            status.update(f"{job.backend}: {value}")
        elif kind == "tokens":
            if not state["streaming"]:
                status.stop()
                state["streaming"] = True
                text_out.write(f"[{job.backend} x{job.world}] ")
            for token in value:
                text_out.write(shown(decoder.push(token)) if decoder else f"{token} ")
            text_out.flush()

    try:
        records = spawn_run(job, threads, on_message)
    finally:
        status.stop()
        if state["streaming"]:
            if decoder:
                text_out.write(shown(decoder.flush()))
            text_out.write("\n")
            text_out.flush()
    return records
