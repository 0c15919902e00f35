"""The one link this machine has, measured: gloo's all-reduce and send/recv between ranks on
this host (TCP over loopback), turned into `Link`s the cost model can use in place of the
placeholder in profilers.sim.links.

Ranks are real processes (engines.dist.launch.run_ranks, each in an initialised gloo group).
For each message size every rank runs a few warm-up all-reduces of a float32 tensor, then
`repeats` timed ones, each after a barrier so all start together; a repeat's time is the slowest
rank's (the collective is done when the last rank has its result). The ping-pong sends the
buffer from rank 0 to rank 1 and back; half the round trip, timed on rank 0, is one hop. Each
size reports the median with the min, max and quartiles, since a 2-core machine running two
ranks (and gloo's own threads) is noisy; the thread count and the load average are recorded
with the numbers for the same reason.

The fit: least squares of t = latency x steps + bytes_moved / bandwidth over the medians, with
every point weighted by 1/t² (so it minimises the relative error; the sizes span three orders
of magnitude and an unweighted fit would ignore the small ones), neither term allowed below zero:
on a busy machine the noise can outgrow the bandwidth term, and then the fit says the bandwidth
is unresolved (infinite) rather than failing the measurement. For the all-reduce the
regressor is the ring's 2(n-1)/n x bytes and the intercept is 2(n-1) latencies, the closed form
`profilers.sim.parallel.ring_allreduce_s` prices. gloo picks its own all-reduce algorithm (ring,
halving-doubling, or a direct exchange for small buffers), so the fitted link is what the ring
formula needs to reproduce gloo's times, not the raw speed of the socket.
"""

from __future__ import annotations

import math
import os
import statistics
import time

from engines.errors import UserError

from .links import Link

KiB = 1024
DEFAULT_SIZES = (4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, 1024 * KiB, 4096 * KiB)
DEFAULT_REPEATS = 15
DEFAULT_WARMUP = 3
BATCH_BYTES = 1024 * KiB  # a repeat times back-to-back operations up to this many bytes (at most 16)


def batch(nbytes: int) -> int:
    """Operations timed back to back in one repeat: enough that a small message's repeat lasts
    well past the barrier's skew between the ranks (which would otherwise be most of it)."""
    return max(1, min(16, BATCH_BYTES // nbytes))


def _bench_rank(rank: int, world: int, post, sizes: tuple, repeats: int, warmup: int) -> dict:
    """One rank's part (run_ranks calls it inside the group): seconds per timed repeat, by size,
    for the all-reduce and (ranks 0 and 1) the ping-pong; and whether the all-reduce summed."""
    import torch
    import torch.distributed as dist

    out = {"allreduce": {}, "p2p": {}, "correct": True}
    for nbytes in sizes:
        n = max(1, nbytes // 4)
        probe = torch.full((n,), float(rank + 1))
        dist.all_reduce(probe)
        out["correct"] = out["correct"] and bool((probe == world * (world + 1) / 2).all())
        x = torch.zeros(n)  # zeros stay zeros: repeated sums never overflow
        k = batch(nbytes)
        times = []
        for i in range(warmup + repeats):
            dist.barrier()
            t0 = time.perf_counter()
            for _ in range(k):
                dist.all_reduce(x)
            dt = (time.perf_counter() - t0) / k
            if i >= warmup:
                times.append(dt)
        out["allreduce"][nbytes] = times
        times = []
        for i in range(warmup + repeats):
            dist.barrier()
            if rank == 0:
                t0 = time.perf_counter()
                for _ in range(k):
                    dist.send(x, 1)
                    dist.recv(x, 1)
                dt = (time.perf_counter() - t0) / (2 * k)
                if i >= warmup:
                    times.append(dt)
            elif rank == 1:
                for _ in range(k):
                    dist.recv(x, 0)
                    dist.send(x, 0)
        out["p2p"][nbytes] = times
    return out


def _busy(seconds: float, w, x) -> float:
    """Small matmuls for about `seconds` (a pass's ops between two collectives); the time taken."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        x = x @ w
    return time.perf_counter() - t0


def _in_pass_rank(rank: int, world: int, post, nbytes: int, layer_gap_s: float, wait_gap_s: float,
                  repeats: int, warmup: int) -> dict:
    """The collectives as a pass meets them, between compute rather than back to back: a rank
    that reaches a collective first blocks in it, and is woken when the data comes.
      allreduce  both ranks compute `layer_gap_s`, then all-reduce `nbytes` (each rank's own
                 time in it, averaged over the two)
      p2p        rank 0 computes `wait_gap_s` and sends `nbytes` while rank 1 waits in recv:
                 rank 1's wait less rank 0's compute is one hop (a pipeline stage's recv, or
                 the sampled token reaching a rank that waits for it)
    Both include the skew with which the ranks leave the barrier before them, as a pass's
    ranks reach a collective with the skew of their work."""
    import torch
    import torch.distributed as dist

    w, x0 = torch.eye(64) * 0.5, torch.ones(1, 64)
    buf = torch.zeros(max(1, nbytes // 4))
    out = {"allreduce": [], "p2p": []}
    for i in range(warmup + repeats):
        t = torch.zeros(4, dtype=torch.float64)  # all-reduce on r0, on r1, send gap, recv wait
        dist.barrier()
        _busy(layer_gap_s, w, x0)
        t0 = time.perf_counter()
        dist.all_reduce(buf)
        t[rank] = time.perf_counter() - t0
        dist.barrier()
        if rank == 0:
            t[2] = _busy(wait_gap_s, w, x0)
            dist.send(buf, 1)
        else:
            t0 = time.perf_counter()
            dist.recv(buf, 0)
            t[3] = time.perf_counter() - t0
        dist.all_reduce(t)  # every figure on both ranks
        if i >= warmup:
            a0, a1, send_gap, recv_wait = t.tolist()
            out["allreduce"].append((a0 + a1) / 2)
            out["p2p"].append(max(0.0, recv_wait - send_gap))
    return out


def measure_in_pass(nbytes: int, layer_gap_s: float, wait_gap_s: float, repeats: int = 15, warmup: int = 3,
                    timeout_s: float = 120.0) -> dict:
    """Each collective's cost as a pass meets it (`_in_pass_rank`), on 2 ranks: median and spread."""
    from engines.dist.launch import run_ranks

    r0 = run_ranks(_in_pass_rank, 2, args=(nbytes, layer_gap_s, wait_gap_s, repeats, warmup), backend="gloo",
                   timeout_s=timeout_s, threads=1)[0]
    return {"bytes": nbytes, "layer_gap_s": layer_gap_s, "wait_gap_s": wait_gap_s,
            **{op: spread(r0[op]) for op in ("allreduce", "p2p")}}


def spread(times: list[float]) -> dict:
    """Median, min, max and the quartiles of a list of seconds."""
    q = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else [times[0]] * 3
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "q1_s": q[0],
            "q3_s": q[2], "repeats": len(times)}


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(intercept, slope) of y = a + b x by least squares weighted 1/y² (relative error), with
    neither negative: a free fit with a < 0 is refitted through the origin, one with b <= 0
    (times that do not grow with the size: noise beats the bandwidth term) becomes the weighted
    mean with b = 0."""
    w = [1 / max(y, 1e-12) ** 2 for y in ys]
    s, sx, sy = sum(w), sum(wi * x for wi, x in zip(w, xs)), sum(wi * y for wi, y in zip(w, ys))
    sxx = sum(wi * x * x for wi, x in zip(w, xs))
    sxy = sum(wi * x * y for wi, x, y in zip(w, xs, ys))
    det = s * sxx - sx * sx
    if len(xs) >= 2 and det > 0:
        b = (s * sxy - sx * sy) / det
        a = (sy - b * sx) / s
        if a >= 0 and b > 0:
            return a, b
        if b <= 0:
            return sy / s, 0.0
    return 0.0, sxy / sxx


def fit_link(name: str, points: list[tuple[float, float]], world: int | None = None, what: str = "") -> Link:
    """A Link from (bytes, seconds) medians: of an all-reduce over `world` ranks (the ring's
    2(world-1) steps and 2(world-1)/world of the bytes per rank), or of one hop (world None).
    A bandwidth the sizes cannot resolve (no growth with size) is infinite; `what` says so."""
    if world is None:
        steps, share = 1, 1.0
    else:
        steps, share = 2 * (world - 1), 2 * (world - 1) / world
    a, b = fit_line([share * n for n, _ in points], [t for _, t in points])
    if b <= 0:
        what = (what + "; " if what else "") + "bandwidth unresolved: the times did not grow with the size"
    return Link(name, 1 / b if b > 0 else math.inf, a / steps, what)


def measure_links(sizes_bytes: tuple = DEFAULT_SIZES, world: int = 2, repeats: int = DEFAULT_REPEATS,
                  warmup: int = DEFAULT_WARMUP, threads: int = 1, timeout_s: float = 120.0) -> dict:
    """All-reduce and ping-pong times on gloo over loopback at each size, and the two fitted
    links ("allreduce", "p2p"), with the context the numbers were taken in (threads, load)."""
    from engines.dist.launch import run_ranks

    from .parallel import p2p_s, ring_allreduce_s

    sizes = tuple(sorted({int(s) for s in sizes_bytes}))
    if world < 2:
        raise UserError(f"a link needs at least 2 ranks, got world {world}")
    if not sizes or sizes[0] < 4:
        raise UserError("message sizes must be at least 4 bytes (one float32)")
    if repeats < 1 or warmup < 0:
        raise UserError(f"repeats must be 1 or more and warm-up 0 or more, got {repeats} and {warmup}")
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    ranks = run_ranks(_bench_rank, world, args=(sizes, repeats, warmup), backend="gloo", timeout_s=timeout_s,
                      threads=threads)
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()
    rows = []
    for n in sizes:
        # a repeat of the collective is as slow as its slowest rank
        per_repeat = [max(r["allreduce"][n][i] for r in ranks) for i in range(repeats)]
        rows.append({"op": "allreduce", "bytes": n, **spread(per_repeat)})
    for n in sizes:
        rows.append({"op": "p2p", "bytes": n, **spread(ranks[0]["p2p"][n])})
    ctx = f"gloo over loopback, world {world}, {threads} thread(s) a rank, load {load_before[0]:.2f}"
    ar = fit_link("gloo-loopback (measured)", [(r["bytes"], r["median_s"]) for r in rows if r["op"] == "allreduce"],
                  world, f"fitted to all-reduce medians: {ctx}")
    p2p = fit_link("gloo-loopback p2p (measured)", [(r["bytes"], r["median_s"]) for r in rows if r["op"] == "p2p"],
                   None, f"fitted to ping-pong medians: {ctx}")
    for r in rows:
        r["fit_s"] = ring_allreduce_s(r["bytes"], world, ar) if r["op"] == "allreduce" else p2p_s(r["bytes"], p2p)
        r["error_pct"] = 100 * (r["fit_s"] - r["median_s"]) / r["median_s"]
    return {"backend": "gloo", "world": world, "threads": threads, "cpus": os.cpu_count(), "repeats": repeats,
            "warmup": warmup, "load_before": list(load_before), "load_after": list(load_after), "wall_s": wall,
            "correct": all(r["correct"] for r in ranks), "rows": rows, "allreduce": ar, "p2p": p2p}


__all__ = ["DEFAULT_SIZES", "fit_line", "fit_link", "measure_in_pass", "measure_links", "spread"]
