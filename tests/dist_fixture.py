"""What the ranks of tests/test_dist.py's one process group run: a list of jobs, each over one or
more meshes of disjoint ranks (so a TP=2 pair and a PP=2 pair run at the same time on a 4-rank
group). Every rank walks the same jobs in the same order (building a mesh is collective) and
runs the ones whose mesh holds it. Importable by the spawned ranks (a module, not a test)."""

from __future__ import annotations

import numpy as np


def run_jobs(rank: int, world: int, post, jobs: list[dict]) -> dict:
    from engines.dist.engine import ShardedEngine
    from engines.dist.group import build_mesh
    from engines.model.sources import open_model
    from engines.ops import OP_INDEX
    from engines.sampling import SamplingParams
    from profilers.harness import RunOptions, profile_run

    out, opened = {}, {}
    for job in jobs:
        mine = None
        for ranks, tp, pp in job["meshes"]:
            m = build_mesh(ranks, tp, pp)
            mine = m or mine
        if mine is None:
            continue
        if job["model"] not in opened:  # once a rank: a preset's weights are drawn as it opens
            opened[job["model"]] = open_model(job["model"])
        ckpt = opened[job["model"]]
        engine = ShardedEngine(ckpt, mine, quant=job.get("quant"))
        if "requests" in job:
            out[job["name"]] = run_batched(engine, job, mine)
            continue
        engine.reset(len(job["ids"]) + 1)
        logits = engine.prefill(job["ids"], all_logits=True)
        opts = RunOptions(max_new_tokens=job["n"], sampling=SamplingParams(**job.get("sampling", {})),
                          warmup=False, ignore_eos=True, quant=job.get("quant"))
        rec = profile_run(ckpt, "torch", job["ids"], opts, engine=engine)
        dec = rec.decode_steps
        counts = {op: [int((s.ops == OP_INDEX[op]).sum()) for s in dec] for op in ("allreduce", "send", "recv", "broadcast")}
        out[job["name"]] = {
            "mesh": (mine.ranks, mine.tp, mine.pp, mine.stage, mine.tp_rank, mine.is_head),
            "tokens": list(rec.generated_ids), "logits": None if logits is None else np.asarray(logits),
            "counts": counts, "step_ranks": sorted({s.rank for s in rec.steps}),
            "layers_lapped": sorted({int(x) for s in dec for x in s.layers if x >= 0}),
            "layers": (engine.layer_range.start, engine.layer_range.stop),
            "weight_bytes": engine.resident_weight_bytes, "sharded_bytes": engine.sharded_weight_bytes,
            "kv_bytes": engine.kv_cache_bytes(), "record_heads": rec.config.num_heads,
        }
    return out


BATCH_OPTS = {"num_blocks": 64, "block_size": 4, "max_num_seqs": 4, "max_num_batched_tokens": 16}
COMM = ("allreduce", "send", "recv", "broadcast")


def serve(be, requests) -> dict:
    """Every request through the batched engine `be`, op-lapped: each one's ids, the logits of
    every step on a rank that computes them (its `_pick`, recorded), and each step's items,
    sampling items and count of every collective."""
    import numpy as np

    from engines.ops import OP_INDEX
    from profilers.probe import make_probe

    probe = make_probe("op", "cpu")
    be.set_lap(probe.lap)
    steps, pick = [], be._pick
    be._pick = lambda items, logits: steps.append(np.asarray(logits.cpu())) or pick(items, logits)
    reqs = [be.add_request(list(p), n) for p, n in requests]
    counts = []
    while be.has_unfinished():
        out = be.step(probe)
        st, items = out.probe_step, out.scheduled.items
        counts.append({"items": len(items), "samples": sum(it.samples for it in items),
                       **{op: int((st.ops == OP_INDEX[op]).sum()) for op in COMM}})
    return {"tokens": [list(r.output_ids) for r in reqs], "step_logits": steps, "counts": counts}


def run_batched(engine, job, mesh) -> dict:
    """The batched engine on this rank's shard: `serve`'s results, and where the rank sits."""
    from engines.dist.batch import ShardedBatchEngine

    be = ShardedBatchEngine(engine, micro_batches=job.get("micro_batches"), **BATCH_OPTS)
    return {"mesh": (mesh.ranks, mesh.tp, mesh.pp, mesh.stage, mesh.tp_rank, mesh.is_head),
            "layers": (engine.layer_range.start, engine.layer_range.stop), "micro_batches": be.micro_batches,
            **serve(be, job["requests"])}
