"""Spawning the ranks of a run on this host (what `aios run --tp 2` does when torchrun did not
start it), with every failure ending every rank.

`run_ranks(fn, world, args)` starts `world` processes (torch.multiprocessing, spawn: each is a
fresh interpreter, as torchrun's are), each joins one gloo or NCCL group on a free local port
and calls `fn(rank, world, post, *args)`; the parent is not a rank, it waits, relays what the
ranks `post` to `on_message`, and returns their results in rank order. Given `stop` (a
`threading.Event`, set from another thread of the parent), it stops them early: once set, the
ranks are ended where they are (a live view's ranks generate without end) and the results of
those that had not returned are None.

Ends, all bounded: a rank that raises reports its error and the others are stopped after a
short grace; a rank that dies (killed, out of memory, a segfault) is seen by its exit code and
named; a rank stuck in a collective is ended by the group's timeout. The parent itself stopped
(Ctrl-C, SIGTERM) stops the ranks before it goes.
"""

from __future__ import annotations

import os
import queue as queue_mod
import signal
import socket
import time
import traceback
from typing import Callable

from ..errors import UserError

GRACE_S = 3.0  # after the first failure: time for the other ranks' reports before they are stopped


class RankFailed(UserError):
    """A rank of a distributed run failed; `rank` names it."""

    def __init__(self, rank: int, problem: str, fix: str | None = None):
        self.rank = rank
        super().__init__(problem, fix)


def free_port(addr: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


def prepare_spawn() -> None:
    """Start multiprocessing's resource tracker now, while this process's stderr is a file: the
    first spawn starts it with `sys.stderr.fileno()`, which a full-screen UI that has taken
    stderr over (Textual) answers with -1, and every spawn after fails."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()


def _rank_main(fn, rank, world, args, q, backend, port, timeout_s, threads, env):
    """The body of one spawned rank: join the group, run fn, report, leave."""
    os.environ.update(env)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which stops the ranks
    try:
        import torch

        if threads:
            torch.set_num_threads(threads)
        from .group import init

        init(rank, world, backend, "127.0.0.1", port, timeout_s)
        out = fn(rank, world, lambda payload: q.put(("msg", rank, payload)), *args)
        q.put(("ok", rank, out))
    except UserError as e:
        q.put(("user", rank, (e.problem, e.fix)))
    except BaseException as e:  # noqa: BLE001 -- every failure is reported, one line
        q.put(("error", rank, (f"{type(e).__name__}: {e}".strip().splitlines()[0], traceback.format_exc())))
    finally:
        try:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
        except Exception:  # noqa: BLE001 -- leaving a broken group must not hide the report
            pass


def _death(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def run_ranks(fn: Callable, world: int, args: tuple = (), *, backend: str = "gloo", timeout_s: float = 300.0,
              threads: int | None = 1, on_message: Callable[[int, object], None] | None = None,
              env: dict | None = None, stop=None) -> list:
    """Run fn(rank, world, post, *args) on `world` spawned ranks; their results in rank order.
    Raises RankFailed (a UserError, one line) naming the first rank that failed or died before
    `stop` (anything with `is_set()`) was set; once it is, every rank is ended within a poll
    (0.1 s) and the ranks that had not returned give None."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = free_port()
    env = {"OMP_NUM_THREADS": str(threads or 1), **(env or {})}
    procs = [ctx.Process(target=_rank_main, args=(fn, r, world, args, q, backend, port, timeout_s, threads, env),
                         daemon=True, name=f"aios-rank{r}") for r in range(world)]
    for p in procs:
        p.start()
    results: dict[int, object] = {}
    failures: list[tuple[int, str, tuple]] = []  # (rank, kind, detail) in the order seen
    deadline = None
    try:
        while len(results) < world:
            if stop is not None and stop.is_set():
                break  # what the ranks do after this is the stop's doing, not a failure
            try:
                kind, rank, payload = q.get(timeout=0.1)
            except queue_mod.Empty:
                kind = None
            if kind == "msg":
                if on_message is not None:
                    on_message(rank, payload)
                continue
            if kind == "ok":
                results[rank] = payload
            elif kind in ("user", "error"):
                failures.append((rank, kind, payload))
            reported = set(results) | {f[0] for f in failures}
            for r, p in enumerate(procs):
                if r not in reported and p.exitcode is not None:
                    # exited without a report: give its last message a moment to arrive
                    time.sleep(0.2)
                    if q.empty():
                        failures.append((r, "died", (p.exitcode,)))
            if failures and deadline is None:
                deadline = time.monotonic() + GRACE_S
            if deadline is not None and (time.monotonic() > deadline or len(results) + len(failures) >= world):
                break
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
    if failures:
        raise _root_cause(failures, world)
    return [results.get(r) for r in range(world)]  # all of them, unless stopped


def _root_cause(failures: list, world: int) -> RankFailed:
    """The one line to show: a rank that died explains the others' broken connections; then a
    UserError (bad input, found by whichever rank met it); then the first error seen."""
    for rank, kind, detail in failures:
        if kind == "died":
            return RankFailed(rank, f"rank {rank} of {world} died ({_death(detail[0])}); the other ranks were stopped",
                              "see whether it ran out of memory (dmesg), then run again")
    for rank, kind, detail in failures:
        if kind == "user":
            return RankFailed(rank, *detail)
    rank, _, (line, tb) = failures[0]
    if os.environ.get("AIOS_DEBUG"):
        print(tb)
    return RankFailed(rank, f"rank {rank} of {world} failed: {line}", "run again with AIOS_DEBUG=1 for its traceback")
