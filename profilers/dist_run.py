"""A profiled generation over the ranks of a TP x PP run: every rank runs the same measured
generation on its `ShardedEngine` (`engines.dist`), and rank 0 ends up with every rank's record.

Two ways in, one body (`rank_run`):
  - `spawn_run`: aios starts the ranks itself on this host (`engines.dist.launch.run_ranks`), one
    process a rank; the calling process is not a rank, it collects the records and relays rank
    0's tokens as they come (`on_message`);
  - `torchrun_run`: torchrun (or any launcher that sets RANK, WORLD_SIZE, MASTER_ADDR and
    MASTER_PORT) started this process as one rank, perhaps on another host; it joins the group,
    runs its part, and the records are gathered to rank 0 over the group itself.

Each rank's probe laps on its own clock; within one host that clock (CLOCK_MONOTONIC, what
`perf_counter` reads) is shared, so each record keeps its probe's origin and the trace lines
the ranks up. Across hosts the origins are not comparable (the trace then aligns nothing).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from engines import backend as backend_record

from .harness import RunOptions, start_run
from .record import RunRecord


class RanksJob:
    """What every job over ranks has: `tp` x `pp` ranks of `backend`, and its collectives'
    `timeout_s` (`spawn_run` and `torchrun_run` read these)."""

    tp: int
    pp: int
    backend: str
    timeout_s: float

    @property
    def world(self) -> int:
        return self.tp * self.pp

    @property
    def device(self) -> str:
        return backend_record(self.backend).device


@dataclass(frozen=True)
class DistJob(RanksJob):
    model: str  # what --model named: every rank opens it itself
    backend: str  # torch | cuda: a backend whose record says it shards
    prompt_ids: list[int]
    opts: RunOptions
    tp: int
    pp: int
    timeout_s: float


def rank_run(rank: int, world: int, post, job: DistJob, local_rank: int | None = None) -> RunRecord:
    """This rank's part, inside the joined default group: open the model, load the shard, warm
    up and generate in step with the other ranks; its RunRecord (rank 0 posts its tokens)."""
    from engines.dist.engine import ShardedEngine
    from engines.dist.group import build_mesh
    from engines.model.sources import open_model

    say = post if rank == 0 else (lambda payload: None)
    ckpt = open_model(job.model)
    mesh = build_mesh(range(world), job.tp, job.pp)
    device = rank_device(job.device, rank, local_rank)
    say(("phase", f"loading rank shards ({mesh.describe()}, {world} ranks)"))
    t0 = time.perf_counter()
    engine = ShardedEngine(ckpt, mesh, dtype=job.opts.dtype, device=device, quant=job.opts.quant)
    load_s = time.perf_counter() - t0
    say(("phase", "warming up" if job.opts.warmup else "generating"))
    run = start_run(ckpt, job.backend, job.prompt_ids, job.opts, engine=engine)
    run.load_s += load_s
    say(("phase", "generating"))
    for _, tokens in run:
        say(("tokens", tokens))
    rec = run.record()
    rec.meta["dist"] = {
        "rank": rank, "world": world, "tp": job.tp, "pp": job.pp, "stage": mesh.stage, "tp_rank": mesh.tp_rank,
        "layers": [engine.layer_range.start, engine.layer_range.stop], "head": mesh.is_head,
        "collectives": "nccl" if job.device == "cuda" else "gloo",
        "sharded_weight_bytes": engine.sharded_weight_bytes,
        "replicated_weight_bytes": engine.replicated_weight_bytes,
        "clock_origin_ns": run.probe.origin_ns, "host": _host(),
    }
    return rec


def rank_device(device: str, rank: int, local_rank: int | None = None) -> str:
    """The torch device of a rank: the CPU, or the GPU of its local rank (NCCL's rule: one GPU
    a rank, set as the current device before any collective)."""
    if device != "cuda":
        return "cpu"
    import torch

    local = rank if local_rank is None else local_rank
    torch.cuda.set_device(local)
    return f"cuda:{local}"


def _host() -> str:
    import socket

    return socket.gethostname()


def spawn_run(job: RanksJob, threads: int, on_message=None, body=rank_run, stop=None) -> list:
    """Start the job's ranks on this host; every rank's result of `body` (by default its
    record), in rank order (until `stop` is set, see `run_ranks`)."""
    from engines.dist.group import backend_for
    from engines.dist.launch import run_ranks

    return run_ranks(body, job.world, (job,), backend=backend_for(job.device), timeout_s=job.timeout_s,
                     threads=threads, on_message=on_message, stop=stop)


def torchrun_run(job: RanksJob, env: dict, body=rank_run) -> list | None:
    """This process as rank env["rank"] of a launcher's run: every rank's result of `body` (by
    default its record) on rank 0, None on the others."""
    import torch.distributed as dist

    from engines.dist.group import backend_for, init

    rank, world = env["rank"], env["world"]
    init(rank, world, backend_for(job.device), env["addr"], env["port"], job.timeout_s)
    try:
        rec = body(rank, world, lambda payload: None, job, local_rank=env["local_rank"])
        gathered = [None] * world if rank == 0 else None
        dist.gather_object(rec, gathered, dst=0)
        return gathered
    finally:
        dist.destroy_process_group()
