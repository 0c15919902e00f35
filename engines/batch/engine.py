"""The batched engine: requests in, tokens out, one `step()` at a time.

It ties the block manager (`engines.batch.kv_blocks`), the scheduler (`engines.batch.scheduler`) and the
batched forward pass (`engines.batch.paged`) together, over the weights of a torch engine. It is
pull-style, like `engines.generate.Generation`: nothing runs until the caller asks for a step,
so a benchmark measures each step from outside, a live view pauses by not pulling, and a server
adds and aborts requests between steps and streams what each step returns.

    be = BatchEngine(engine, num_blocks=512)
    r = be.add_request([1, 2, 3], max_new_tokens=16)
    while be.has_unfinished():
        out = be.step()          # StepOutput: the new token of each request that got one
        for req, tok in out.tokens: ...
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import NonFiniteError, UserError
from ..generate import check_request
from .kv_blocks import BlockManager
from ..ops import SAMPLE, noop_lap
from .paged import PagedTorchRunner
from .request import Request, Status
from ..sampling import SamplingParams
from .scheduler import Scheduled, Scheduler


@dataclass
class StepOutput:
    index: int
    scheduled: Scheduled
    tokens: list[tuple[Request, int]] = field(default_factory=list)  # (request, its new token)
    finished: list[Request] = field(default_factory=list)
    schedule_s: float = 0.0  # the scheduler's share of the step
    wall_s: float = 0.0
    blocks_used: int = 0  # after the step
    blocks_free: int = 0
    running: int = 0
    waiting: int = 0
    probe_step: object = None  # the probe's `Step` when step() was given one


class BatchEngine:
    def __init__(self, engine, num_blocks: int | None = None, kv_cache_bytes: int | None = None,
                 block_size: int = 16, max_num_seqs: int = 64, max_num_batched_tokens: int = 512,
                 prefix_caching: bool = True, speculate: str | None = None, spec_k: int = 4):
        cfg = engine.cfg
        from ..spec.drafters import check_batched

        check_batched(speculate)
        if speculate and not 1 <= spec_k <= 64:
            raise UserError(f"--spec-k must be between 1 and 64, got {spec_k}", "pass --spec-k 4, say")
        if block_size < 1:
            raise UserError(f"--block-size must be positive, got {block_size}", "pass 16, the default")
        per_block = 2 * cfg.num_layers * block_size * cfg.kv_dim * engine.act_itemsize
        if num_blocks is None:
            if kv_cache_bytes is None:
                raise ValueError("give num_blocks or kv_cache_bytes")
            num_blocks = kv_cache_bytes // per_block
        if num_blocks < 1:
            raise UserError(f"a KV pool of {num_blocks} blocks holds no tokens",
                            f"give --kv-blocks 1 or more (a block of {block_size} tokens is {per_block} bytes here)")
        if max_num_seqs < 1 or max_num_batched_tokens < max_num_seqs:
            raise UserError(f"--max-num-seqs {max_num_seqs} with a step budget of {max_num_batched_tokens} tokens",
                            "the budget must be at least --max-num-seqs (each running request decodes every step)")
        self.engine = engine
        self.cfg = cfg
        self.blocks = BlockManager(num_blocks, block_size, prefix_caching)
        self.scheduler = Scheduler(self.blocks, max_num_seqs, max_num_batched_tokens)
        self.runner = PagedTorchRunner(engine, num_blocks, block_size)
        self.requests: dict[str, Request] = {}  # the unfinished ones: a finished request is the caller's
        self._ids = itertools.count()
        self.steps = 0
        self.lap = noop_lap
        self.speculate, self.spec_k = speculate, spec_k
        if speculate:
            from ..spec.ngram import PromptLookup

            self.drafter = PromptLookup()
        # speculative decoding's counters, as vLLM's spec-decode metrics: verify passes (requests
        # that had drafts), drafted and accepted tokens, and accepted tokens by draft position
        self.spec_drafts = self.spec_draft_tokens = self.spec_accepted_tokens = 0
        self.spec_accepted_per_pos = [0] * (spec_k if speculate else 0)

    def set_lap(self, lap) -> None:
        """A lap function for every op of every step (the batch-1 engines' `set_lap`)."""
        self.lap = lap or noop_lap
        self.engine.set_lap(lap)  # the forward pass laps through the engine's own

    @property
    def kv_cache_bytes(self) -> int:
        return self.runner.kv_cache_bytes

    # --- requests ------------------------------------------------------------------------------
    def add_request(self, prompt_ids: list[int], max_new_tokens: int, params: SamplingParams | None = None,
                    stop_ids: tuple[int, ...] = (), request_id: str | None = None,
                    arrival_s: float | None = None) -> Request:
        check_request(self.cfg, list(prompt_ids), max_new_tokens)
        rid = request_id if request_id is not None else f"req-{next(self._ids)}"
        if rid in self.requests:
            raise UserError(f"request id {rid!r} is already in use", "give each request its own id")
        params = params or SamplingParams()
        req = Request(rid, list(prompt_ids), max_new_tokens, params, tuple(stop_ids),
                      sampler=self.engine.make_sampler(params))
        if arrival_s is not None:
            req.arrival_s = arrival_s
        if not self.scheduler.fits_ever(req):
            need = self.blocks.blocks_for(len(req.prompt_ids) + max_new_tokens)
            raise UserError(f"request {rid}: {len(req.prompt_ids)} + {max_new_tokens} tokens need {need} KV blocks, "
                            f"the pool has {self.blocks.num_blocks}", "give a bigger --kv-blocks or shorter requests")
        self.requests[rid] = req
        self.scheduler.add(req)
        return req

    def abort(self, request_id: str) -> bool:
        """Stop a request now, its blocks back to the pool; False if it had finished already."""
        req = self.requests.get(request_id)
        if req is None or req.finished:
            return False
        self.scheduler.remove(req)
        req.finish("abort", time.perf_counter())
        del self.requests[request_id]
        return True

    def truncate(self, request_id: str, length: int, append: int | None = None) -> bool:
        """Roll a running request back to its first `length` tokens (prompt and output; never
        into the prompt): the output past them is dropped with its KV, the blocks past the
        cut go back to the pool. Then `append`, if given, is added as its next output token
        (a speculative step's bonus token), and the KV of all `length` tokens is kept; without
        it the last kept token is computed again next step, to give the next token's logits.
        Returns True when `append` finished the request (a stop token, or its last token): it
        has left the engine then, and the caller reports it as a step's `finished` would. A
        rollback that needs a free block to copy a shared one into and finds none raises
        OutOfBlocks, the request untouched."""
        req = self.requests.get(request_id)
        if req is None or req.finished:
            raise UserError(f"request {request_id!r} is not running", "truncate a request that is")
        if not len(req.prompt_ids) <= length <= req.num_tokens:
            raise ValueError(f"request {request_id}: cannot truncate {req.num_tokens} tokens "
                             f"(prompt {len(req.prompt_ids)}) to {length}")
        kv = min(req.num_computed, length if append is not None else length - 1)
        if req.table.blocks:
            copy = self.blocks.truncate(req.table, kv)  # first: it raises before changing anything
            if copy is not None:
                self.runner.copy_block(*copy)
        req.num_computed = kv
        out = length - len(req.prompt_ids)
        del req.output_ids[out:]
        del req.token_s[out:]
        if append is None:
            return False
        req.add_token(append, time.perf_counter())
        if req.finished:
            self.scheduler.remove(req)
            self.requests.pop(req.id, None)
        return req.finished

    def has_unfinished(self) -> bool:
        return self.scheduler.has_work()

    # --- one step --------------------------------------------------------------------------------
    def step(self, probe=None) -> StepOutput:
        """Schedule and run one step. `probe` (a `profilers.probe.Probe`, its lap set with
        `set_lap`) gets the step's forward pass and sampling as one step, the scheduling apart."""
        t0 = time.perf_counter()
        if self.speculate:
            self._draft()
        sched = self.scheduler.schedule()
        t1 = time.perf_counter()
        out = StepOutput(self.steps, sched, schedule_s=t1 - t0)
        self.steps += 1
        if probe is not None:
            probe.begin_step("batch", out.index, sched.tokens, 0)
        if sched.items:
            sampling = [it for it in sched.items if it.samples]
            emitted = self._emit(sched.items, sampling)  # per sampling item, the tokens it emits
            kept = {id(it): it.start + len(e) for it, e in zip(sampling, emitted) if it.drafts}
            now = time.perf_counter()
            for it in sched.items:
                req = it.req
                if it.drafts:  # the last token's KV and the accepted drafts' stay; the rest rolls back
                    del req.draft_ids[:]
                    copy = self.blocks.truncate(req.table, kept[id(it)])
                    if copy is not None:
                        self.runner.copy_block(*copy)
                    req.num_computed = kept[id(it)]
                else:
                    req.num_computed = it.start + it.n
                self.blocks.written(req.table, req.tokens, req.num_computed)
            for it, tokens in zip(sampling, emitted):
                for tok in tokens:
                    it.req.add_token(tok, now)
                    out.tokens.append((it.req, tok))
                    if it.req.finished:
                        break
                if it.req.finished:
                    self.scheduler.remove(it.req)
                    self.requests.pop(it.req.id, None)  # its id may be used again; memory stays flat
                    out.finished.append(it.req)
        if probe is not None:
            out.probe_step = probe.end_step(emitted=len(out.tokens))
        out.wall_s = time.perf_counter() - t0
        out.blocks_used, out.blocks_free = self.blocks.num_used, self.blocks.num_free
        out.running, out.waiting = len(self.scheduler.running), len(self.scheduler.waiting)
        return out

    def _emit(self, items, sampling) -> list[list[int]]:
        """The step's forward pass over `items`, and the tokens each of `sampling` emits (the
        sharded engine's override splits the pass over ranks and micro-batches). Laps the
        picking as `sample`."""
        emitted = self._pick(sampling, self.runner.forward(items))
        self.lap(-1, SAMPLE)
        return emitted

    def _pick(self, items, logits: torch.Tensor) -> list[list[int]]:
        """The tokens each sampling item emits: its sampled token, or with drafts the verifier's
        (its rows of `logits` are its drafts' and its last token's, in order)."""
        if not any(it.drafts for it in items):  # no speculation this step: one row an item, as is
            return [[t] for t in self._sample(items, logits)]
        rows, r = [], 0
        for it in items:
            rows.append(r)
            r += 1 + it.drafts
        plain = [i for i, it in enumerate(items) if not it.drafts]
        out: list[list[int]] = [[] for _ in items]
        if plain:
            for i, t in zip(plain, self._sample([items[i] for i in plain], logits[[rows[i] for i in plain]])):
                out[i] = [t]
        for i, it in enumerate(items):
            if it.drafts:
                out[i] = self._verify(it, logits[rows[i]:rows[i] + 1 + it.drafts])
        return out

    def _draft(self) -> None:
        """Each decoding request drafts up to spec_k tokens by prompt lookup, within its own room
        (its max_new_tokens less one for the bonus token, and the model's context); the
        scheduler cuts or drops drafts that do not fit the step's budget or the KV pool."""
        limit = self.cfg.max_position_embeddings
        for req in self.scheduler.running:
            if req.output_ids and req.remaining == 1 and not req.draft_ids:
                room = min(self.spec_k, req.max_new_tokens - len(req.output_ids) - 1, limit - req.num_tokens - 1)
                if room > 0:
                    req.draft_ids = self.drafter.propose(req.tokens, room)

    def _verify(self, it, rows: torch.Tensor) -> list[int]:
        """A request's drafts against its rows of logits (one per draft, one more): the tokens it
        emits (the accepted drafts, then the target's own token), by the exact acceptance rule
        (`engines.spec.rule`, the drafts' q a point mass) or, greedy, the argmax chain."""
        from ..spec.rule import verify_greedy, verify_sampled

        req = it.req
        drafted = list(req.draft_ids)
        host = rows.float().cpu().numpy()
        if not np.isfinite(host).all():
            raise NonFiniteError(f"request {req.id}: the model produced NaN or Inf logits", "try --dtype float32")
        if req.params.is_greedy:
            out = verify_greedy(np.argmax(host, axis=-1).tolist(), drafted)
        else:
            p = np.stack([req.sampler.distribution(x) for x in host])
            q = np.zeros((len(drafted), p.shape[1]))
            q[np.arange(len(drafted)), drafted] = 1.0
            out = verify_sampled(p, q, drafted, req.sampler.rng)
        accepted = len(out) - 1
        self.spec_drafts += 1
        self.spec_draft_tokens += len(drafted)
        self.spec_accepted_tokens += accepted
        for i in range(accepted):
            self.spec_accepted_per_pos[i] += 1
        return out

    def _sample(self, items, logits: torch.Tensor) -> list[int]:
        if not items:
            return []
        if all(it.req.params.is_greedy for it in items):
            picks = torch.argmax(logits, dim=-1)  # the first of equal maxima, as np.argmax
        else:
            picks = torch.stack([it.req.sampler(logits[j]) for j, it in enumerate(items)])
        chosen = logits.gather(1, picks.reshape(-1, 1))[:, 0]
        pair = torch.stack((picks.to(torch.float64), chosen.to(torch.float64)), dim=1).tolist()  # one transfer
        for (tok, logit), it in zip(pair, items):
            if logit != logit or logit in (float("inf"), float("-inf")):
                raise NonFiniteError(f"request {it.req.id}: the model produced NaN or Inf logits",
                                     "try --dtype float32")
        return [int(t) for t, _ in pair]

    # --- convenience -----------------------------------------------------------------------------
    def run_all(self) -> list[StepOutput]:
        """Step until every request added so far has finished."""
        outs = []
        while self.has_unfinished():
            outs.append(self.step())
        return outs


__all__ = ["BatchEngine", "StepOutput", "Status"]
