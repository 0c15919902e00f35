"""The batched engine (`engines.batch.engine`) over the ranks of a TP x PP mesh: continuous
batching and the paged KV cache on a `ShardedEngine`, with pipeline micro-batches.

Every rank runs the same scheduler on the same requests, so each step's items (which tokens of
which requests) are the same on every rank without sending them; a rank's KV pool holds its
own layers and heads only. Tensor parallel needs nothing more: the layers' all-reduces are the
sharded engine's own.

Pipeline parallel with micro-batches: a step's items are cut into up to `micro_batches`
contiguous groups of whole requests (about equal tokens each), and each stage runs them in
turn, sending micro-batch j on (`isend`) while it computes micro-batch j+1, so the stages work
on different sequences at once (GPipe's schedule, within a step). The next step needs this
step's tokens, so a step ends with the pipeline drained: with m micro-batches over p equal
stages each rank idles about (p-1)/(m+p-1) of a step (the bubble: the stage's `recv` waits and
stage 0's wait for the tokens). vLLM keeps p independent batches in flight across steps
(its virtual engines) to hide even that; this engine does not (a step here is one batch).

The head rank (last stage, tp_rank 0) alone computes logits and samples; the step's tokens go
to every rank in one broadcast, with a flag for non-finite logits so every rank stops alike.
Speculative steps are not sharded (refused).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..batch.engine import BatchEngine
from ..errors import NonFiniteError, UserError
from ..ops import BROADCAST, EMBED, RECV, SAMPLE, SEND


def split_micro_batches(items: list, m: int) -> list[list]:
    """`items` cut into at most `m` contiguous, non-empty groups of about equal tokens (an
    item's `n`), whole items each: micro-batches of different sequences."""
    m = min(m, len(items))
    if m <= 1:
        return [list(items)]
    total = sum(it.n for it in items)
    parts, cur, acc = [], [], 0
    for i, it in enumerate(items):
        cur.append(it)
        acc += it.n
        items_left, parts_left = len(items) - i - 1, m - len(parts) - 1
        if parts_left and items_left >= parts_left and (
                acc >= total * (len(parts) + 1) / m or items_left == parts_left):
            parts.append(cur)
            cur = []
    parts.append(cur)
    return parts


class ShardedBatchEngine(BatchEngine):
    """One rank's batched engine over a `ShardedEngine`; every rank of the mesh makes one with
    the same options and is given the same requests in the same order."""

    def __init__(self, engine, *args, micro_batches: int | None = None, **kwargs):
        if kwargs.get("speculate"):
            raise UserError("--speculate does not combine with --tp or --pp yet", "run one or the other")
        mesh = engine.mesh
        m = mesh.pp if micro_batches is None else micro_batches
        if m < 1:
            raise UserError(f"--micro-batches must be 1 or more, got {m}", f"pass --micro-batches {mesh.pp}, say")
        super().__init__(engine, *args, **kwargs)
        self.mesh = mesh
        self.micro_batches = m if mesh.pp > 1 else 1  # without stages there is nothing to overlap

    @torch.inference_mode()
    def _emit(self, items, sampling) -> list[list[int]]:
        e, mesh, runner = self.engine, self.mesh, self.runner
        sends, logits = [], []
        for part in split_micro_batches(items, self.micro_batches):
            b = runner.prepare(part)
            if e.first_stage:
                x = e.embed_rows(b.ids)
                e.lap(-1, EMBED)
            else:
                x = torch.empty(b.n, e.cfg.hidden_size, dtype=e.tdtype, device=e.tdev)
                dist.recv(x, src=mesh.prev)  # waits for the stage before: the bubble, seen from here
                e.lap(-1, RECV)
            x = runner.run_layers(x, b)
            if not e.last_stage:
                x = x.contiguous()
                sends.append((dist.isend(x, dst=mesh.next), x))  # the buffer lives until waited on
                e.lap(-1, SEND)
            elif mesh.is_head:
                logits.append(runner.logits(x, b))
        for handle, _ in sends:
            handle.wait()
        if sends:
            e.lap(-1, SEND)
        if not sampling:
            return []
        return self._share(sampling, torch.cat(logits) if logits else None)

    def _share(self, sampling, logits) -> list[list[int]]:
        """The head rank's picks for the sampling items (lapped there as `sample`), on every rank
        (one broadcast)."""
        mesh, e = self.mesh, self.engine
        msg = torch.zeros(len(sampling) + 1, dtype=torch.int64, device=e.tdev)
        error = None
        if mesh.is_head:
            try:
                picks = [t for [t] in self._pick(sampling, logits)]
                msg[1:] = torch.tensor(picks, dtype=torch.int64)
                msg[0] = 1
            except NonFiniteError as err:
                error = err
            e.lap(-1, SAMPLE)
        if mesh.world > 1:
            dist.broadcast(msg, src=mesh.head, group=mesh.group)
            e.lap(-1, BROADCAST)
        if error is not None:
            raise error
        got = msg.tolist()
        if not got[0]:
            raise NonFiniteError("the model produced NaN or Inf logits (seen on the head rank)", "try --dtype float32")
        return [[t] for t in got[1:]]
