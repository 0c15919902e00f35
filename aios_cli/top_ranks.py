"""`aios top --tp N --pp M`: the checks before any rank starts, and the session that runs the
ranks (`aios_cli.tui.ranks_session`). The same checks as `aios run --tp/--pp` (`aios_cli.
parallel`), and what differs in a live view: the ranks are always spawned here (never joined
from torchrun), and their figures need op times."""

from __future__ import annotations

import sys

from .errors import fail
from .request import GenerateRequest


def open_ranks(req: GenerateRequest, layout: tuple[int, int], timeout_s: float, once: bool, err):
    """The session of the ranks' view, checked and ready to start; refuses in one line."""
    from engines.dist.group import torchrun_env
    from engines.model.shards import check_pp, check_tp
    from profilers.dist_live import LiveJob

    from .parallel import check_backend_shards, check_gpus
    from .tui.ranks_session import RanksSession

    tp, pp = layout
    if torchrun_env() is not None:
        fail("aios top spawns its ranks itself, and torchrun started this process as one — run it from a shell, "
             "or use aios run --tp/--pp under torchrun")
    if req.profile != "op":
        fail(f"--tp/--pp split each rank's time into compute and collectives from op times, which --profile "
             f"{req.profile} does not record — use --profile op")
    backends, chosen_why = req.check(sharded=True)
    backend = check_backend_shards(backends, chosen_why is not None)
    check_gpus(backend, tp * pp)
    if not once and not (sys.stdout.isatty() and sys.stdin.isatty()):
        fail(f"aios top needs a terminal — use aios top --tp {tp} --pp {pp} --once for a one-shot text report")
    ckpt, prompts = req.open(backends, lambda msg: err.status(msg, spinner="dots"))
    check_tp(ckpt.config, tp)
    check_pp(ckpt.config, pp)
    if chosen_why:
        err.print(f"backend: {backend} ({chosen_why}; pick one with --backend)", style="dim")
    for note in req.notes(ckpt):
        err.print(note, style="dim", soft_wrap=True)
    threads = max(1, req.thread_plan.threads // (tp * pp))
    job = LiveJob(model=req.model, backend=backend, prompt_ids=prompts[0][1], opts=req.run_options(), tp=tp, pp=pp,
                  timeout_s=timeout_s, more_prompts=tuple(tuple(ids) for _, ids in prompts[1:]),
                  generations=1 if once else None, mute=not once)
    return RanksSession(ckpt, job, prompts, threads)
