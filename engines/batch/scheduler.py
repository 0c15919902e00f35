"""Continuous batching: which requests run in the next step, and how many of their tokens.

Each step has a token budget (`max_num_batched_tokens`) and a limit on running requests
(`max_num_seqs`). The policy, in order:

1. **Running requests first**, oldest admission first. A decoding request takes 1 token of the
   budget; one still in its prompt takes the rest of its prompt or what is left of the budget,
   whichever is smaller (*chunked prefill*: a long prompt is computed over several steps, and
   the decodes of the others go on meanwhile).
2. **Preemption** when a running request needs a KV block and none is free: the most recently
   admitted running request gives all its blocks back and goes to the front of the queue, to be
   recomputed later (vLLM's default, *recompute*: no swap to host memory). Repeated until the
   block fits, or the request itself was the one preempted.
3. **Admission**, first come first served, while the budget, `max_num_seqs` and the free blocks
   allow, and only in a step that preempted nothing (what was just preempted is first in line).
   A request starts with the blocks of its prompt's prefix that the prefix cache holds.

A step therefore mixes prefill chunks and decodes, and a request leaves the batch the step it
finishes, its blocks free for the next admission at once.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .kv_blocks import BlockManager
from .request import Request, Status


@dataclass
class Item:
    """Tokens start .. start+n-1 of a request, computed this step."""
    req: Request
    start: int
    n: int
    decode: bool  # the one token sampled last step, and its drafts (else a chunk of prompt, or of a recompute)
    samples: bool  # the chunk reaches the request's last token: the step samples its next one
    drafts: int = 0  # speculative decoding: drafted tokens after the last one, verified this step


@dataclass
class Scheduled:
    """One step's work."""
    items: list[Item] = field(default_factory=list)
    preempted: list[Request] = field(default_factory=list)

    @property
    def prefill_tokens(self) -> int:
        return sum(it.n for it in self.items if not it.decode)

    @property
    def draft_tokens(self) -> int:
        return sum(it.drafts for it in self.items)

    @property
    def decode_seqs(self) -> int:
        return sum(1 for it in self.items if it.decode)

    @property
    def tokens(self) -> int:
        return sum(it.n for it in self.items)

    def _add(self, req: Request, n: int) -> None:
        start = req.num_computed
        drafts = len(req.draft_ids)
        self.items.append(Item(req, start, n, decode=bool(req.output_ids) and start == req.num_tokens - 1 - drafts
                               and start + n == req.num_tokens, samples=start + n == req.num_tokens, drafts=drafts))


class Scheduler:
    def __init__(self, blocks: BlockManager, max_num_seqs: int = 64, max_num_batched_tokens: int = 512):
        if max_num_seqs < 1:
            raise ValueError("max_num_seqs must be at least 1")
        if max_num_batched_tokens < max_num_seqs:
            raise ValueError(f"max_num_batched_tokens ({max_num_batched_tokens}) must be at least "
                             f"max_num_seqs ({max_num_seqs}): every running request decodes each step")
        self.blocks = blocks
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.preemptions = 0

    def add(self, req: Request) -> None:
        self.waiting.append(req)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def fits_ever(self, req: Request) -> bool:
        """Whether the whole pool could hold the request at its longest."""
        return self.blocks.blocks_for(len(req.prompt_ids) + req.max_new_tokens) <= self.blocks.num_blocks

    def _preempt(self, req: Request, out: Scheduled) -> None:
        self.running.remove(req)
        self.blocks.release(req.table)
        req.num_computed = 0
        req.draft_ids.clear()
        req.status = Status.PREEMPTED
        req.preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(req)
        out.preempted.append(req)

    def remove(self, req: Request) -> None:
        """Take a finished or aborted request out, its blocks back to the pool."""
        if req in self.running:
            self.running.remove(req)
        elif req in self.waiting:
            self.waiting.remove(req)
        self.blocks.release(req.table)

    def schedule(self) -> Scheduled:
        out = Scheduled()
        budget = self.max_num_batched_tokens
        bm = self.blocks
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            n = min(req.remaining, budget)
            if req.draft_ids and (n < req.remaining or not bm.can_grow(req.table, req.num_computed + n)):
                # drafts are a bet: cut to the budget, or dropped rather than preempt anyone for them
                keep = n - 1 if bm.can_grow(req.table, req.num_computed + n) else 0
                del req.draft_ids[keep:]
                n = req.remaining
            while not bm.can_grow(req.table, req.num_computed + n):
                self._preempt(self.running[-1], out)
                if req.status is Status.PREEMPTED:
                    break
            if req.status is Status.PREEMPTED:
                break
            bm.grow(req.table, req.num_computed + n)
            out._add(req, n)
            budget -= n
            i += 1
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs and not out.preempted:
            req = self.waiting[0]
            if not req.table.blocks:
                req.num_cached = req.num_computed = bm.allocate_prefix(req.table, req.tokens)
            n = min(req.remaining, budget)
            if not bm.can_grow(req.table, req.num_computed + n):
                bm.release(req.table)  # the prefix it would have shared, until next time
                req.num_computed = req.num_cached = 0
                break
            bm.grow(req.table, req.num_computed + n)
            bm.count_lookup(req.tokens, req.num_cached)
            self.waiting.popleft()
            req.status = Status.RUNNING
            self.running.append(req)
            out._add(req, n)
            budget -= n
        return out
