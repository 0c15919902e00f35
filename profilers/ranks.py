"""Per-rank figures of a distributed run (one RunRecord a rank, `profilers.dist_run`): what each
rank holds, where its decode time went (its own compute, or communication: the all-reduces, the
pipeline's send and recv, the token's broadcast), and how even the work was.

A collective's time on a rank is the whole time the rank spent inside it: the transfer and the
wait for the slowest peer. So on a pipeline's later stage, `recv` holds the time the earlier
stages computed (the bubble, seen from that rank); on a tensor-parallel rank, `allreduce` holds
the wait for the slower rank of the pair (the imbalance) as well as the transfer.
"""

from __future__ import annotations

import numpy as np

from engines.ops import OP_INDEX, OPS

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .record import RunRecord

COMM_OPS = tuple(op.name for op in OPS if op.kind == "comm")
# what a rank's summary (and the summary CSV) adds, in order
RANK_FIELDS = ("rank", "world", "tp", "pp", "stage", "sharded_weight_bytes", "replicated_weight_bytes",
               "compute_s_per_token", "comm_s_per_token", "comm_share", *(f"{op}_s_per_token" for op in COMM_OPS))
_COMM = np.array([op.kind == "comm" for op in OPS])


def rank_row(r: "RunRecord") -> dict:
    """One rank: its place, what it holds, and its decode time per token split into compute
    (every op that is not communication), each collective, and what no op claimed."""
    d = r.meta.get("dist", {})
    dec = [s for s in r.decode_steps if s.durs_ns is not None]
    n = len(dec)
    row = {"rank": d.get("rank", 0), "stage": d.get("stage", 0), "tp_rank": d.get("tp_rank", 0),
           "layers": d.get("layers"), "head": d.get("head", True),
           "weight_bytes": r.weight_bytes, "sharded_weight_bytes": d.get("sharded_weight_bytes", 0),
           "replicated_weight_bytes": d.get("replicated_weight_bytes", r.weight_bytes),
           "kv_cache_bytes": r.kv_cache_bytes, "decode_tokens": n,
           "decode_s_per_token": None, "compute_s_per_token": None, "comm_s_per_token": None,
           "comm_share": None, **{f"{op}_s_per_token": None for op in COMM_OPS},
           "comm_bytes_per_token": None}
    if not n:
        return row
    wall = sum(s.wall_s for s in dec) / n
    per_op = sum(step_op_seconds(s) for s in dec) / n
    comm_bytes = 0.0
    for s in dec:
        c = r.step_costs(s)
        is_comm = _COMM[s.ops]
        comm_bytes += float(c.event_bytes(s.layers, s.ops)[is_comm].sum())
    comm = float(per_op[_COMM].sum())
    row.update(decode_s_per_token=wall, **split_compute_comm(per_op, "_s_per_token"), comm_s_per_token=comm,
               comm_share=comm / wall if wall else None, comm_bytes_per_token=comm_bytes / n)
    return row


def step_op_seconds(st) -> np.ndarray:
    """Seconds of each op of the table (`OPS` order) in one op-level step."""
    return np.bincount(st.ops, weights=st.durs_ns, minlength=len(OPS)) * 1e-9


def split_compute_comm(per_op: np.ndarray, suffix: str) -> dict:
    """Seconds per op of the table, split as a rank's time is: `compute<suffix>` (every op that
    is not communication) and `<collective><suffix>` for each collective."""
    return {f"compute{suffix}": float(per_op[~_COMM].sum()),
            **{f"{op}{suffix}": float(per_op[OP_INDEX[op]]) for op in COMM_OPS}}


def batch_rank_row(run, d: dict) -> dict:
    """One rank of a batched run (`profilers.throughput.ThroughputRun`, its steps op-timed; `d`
    where the rank sits and what it holds): its time per engine step, split as `rank_row`
    splits a token's, with the scheduler's share apart."""
    row = {k: d.get(k) for k in ("rank", "stage", "tp_rank", "layers", "head", "weight_bytes",
                                  "sharded_weight_bytes", "replicated_weight_bytes", "kv_cache_bytes")}
    timed = [s for s in run.steps if s.op_seconds]
    n = len(timed)
    row.update(steps=len(run.steps), step_s=None, schedule_s=None, compute_s=None, comm_s=None, comm_share=None,
               **{f"{op}_s": None for op in COMM_OPS})
    if not n:
        return row
    wall = sum(s.wall_s for s in timed) / n
    per_op = np.zeros(len(OPS))
    for s in timed:
        for name, secs in s.op_seconds.items():
            per_op[OP_INDEX[name]] += secs
    comm = float(per_op[_COMM].sum()) / n
    row.update(step_s=wall, schedule_s=sum(s.schedule_s for s in timed) / n, comm_s=comm,
               comm_share=comm / wall if wall else None, **split_compute_comm(per_op / n, "_s"))
    return row


def pipeline_bubble(run, pp: int, micro_batches: int) -> float | None:
    """The bubble a pipeline of `pp` equal stages would have over this run's steps, as a model:
    (p-1)/(m+p-1) a step, m its micro-batches (up to `micro_batches`, at most one a request),
    weighted by the step's time. None without stages."""
    if pp < 2 or not run.steps:
        return None
    w = [s.wall_s for s in run.steps]
    b = [(pp - 1) / (min(micro_batches, max(1, s.items)) + pp - 1) for s in run.steps]
    return float(np.average(b, weights=w)) if sum(w) else None


def balance(rows: list[dict], compute: str = "compute_s_per_token", wall: str = "decode_s_per_token") -> dict:
    """How even the ranks' work was: the slowest rank's compute over the mean (1 = even), and
    the share of decode time the ranks spent not computing (at batch 1 under PP, about
    (p-1)/p: each stage waits while the others run: the pipeline's bubble with one micro-batch).
    `compute` and `wall` name the rows' fields (a batched run's are per step)."""
    comp = [r[compute] for r in rows if r[compute] is not None]
    walls = [r[wall] for r in rows if r[wall] is not None]
    if not comp or not walls:
        return {"imbalance": None, "idle_share": None}
    mean = sum(comp) / len(comp)
    return {"imbalance": max(comp) / mean if mean else None,
            "idle_share": 1 - sum(comp) / sum(walls) if sum(walls) else None}
