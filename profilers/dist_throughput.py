"""A serving workload through the batched engine split over TP x PP ranks (`engines.dist.batch`):
every rank drives the same requests through its own `ShardedBatchEngine`, in step, and the
caller gets each rank's `ThroughputRun` and where its time went.

Ranks start as `profilers.dist_run` starts them (spawned here, or by torchrun); the body is
`rank_throughput`. Every rank builds the workload from the same seed, so only arrivals need
agreeing: with a finite rate, rank 0's clock decides each step how many requests have come
(one small broadcast a step); with every request at once, nothing is sent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .dist_run import RanksJob, rank_device


@dataclass(frozen=True)
class DistBatchJob(RanksJob):
    model: str
    backend: str  # torch | cuda
    dtype: str | None
    work: list  # profilers.throughput.WorkItem, the same on every rank
    rate: float
    tp: int
    pp: int
    micro_batches: int | None  # None: one a stage
    timeout_s: float
    profile: str  # op | none
    engine_kw: dict = field(default_factory=dict)  # BatchEngine's pool and scheduler options


def rank_throughput(rank: int, world: int, post, job: DistBatchJob, local_rank: int | None = None) -> dict:
    """This rank's part: load its shard, warm up, serve the workload. Rank 0 posts its progress
    (("phase", text) and ("step", finished requests, step number, running, waiting)). Returns
    {"run": its ThroughputRun, "rank": where it sits and what it holds}."""
    import time

    import torch.distributed as dist

    from engines.dist.batch import ShardedBatchEngine
    from engines.dist.engine import ShardedEngine
    from engines.dist.group import build_mesh
    from engines.model.sources import open_model

    from . import throughput as T
    from .probe import make_probe

    say = post if rank == 0 else (lambda payload: None)
    mesh = build_mesh(range(world), job.tp, job.pp)
    say(("phase", f"loading rank shards ({mesh.describe()}, {world} ranks)"))
    device = rank_device(job.device, rank, local_rank)
    engine = ShardedEngine(open_model(job.model), mesh, dtype=job.dtype, device=device)
    be = ShardedBatchEngine(engine, micro_batches=job.micro_batches, **job.engine_kw)
    say(("phase", "warming up"))
    T.warm_up(be)
    probe = make_probe("op", engine.tdev.type, engine.tdev, rank=rank) if job.profile == "op" else None
    agree = None
    if not math.isinf(job.rate):
        import torch

        def agree(k: int) -> int:
            t = torch.tensor([k], dtype=torch.int64, device=engine.tdev)
            dist.broadcast(t, src=0, group=mesh.group)
            return int(t.item())

    done = [0]

    def on_step(out, rec):
        done[0] += len(out.finished)
        say(("step", done[0], rec.step, out.running, out.waiting))

    say(("phase", "serving"))
    t0 = time.perf_counter()
    run = T.run_batched(be, job.work, probe, on_step, agree=agree)
    where = {"rank": rank, "stage": mesh.stage, "tp_rank": mesh.tp_rank, "head": mesh.is_head,
             "layers": [engine.layer_range.start, engine.layer_range.stop],
             "weight_bytes": engine.resident_weight_bytes, "sharded_weight_bytes": engine.sharded_weight_bytes,
             "replicated_weight_bytes": engine.replicated_weight_bytes, "kv_cache_bytes": be.kv_cache_bytes,
             "micro_batches": be.micro_batches, "collectives": "nccl" if job.device == "cuda" else "gloo",
             "dtype": engine.dtype, "serve_s": time.perf_counter() - t0}
    return {"run": run, "rank": where}
