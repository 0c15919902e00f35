"""The batched engine (paged KV cache, continuous batching) against the batch-1 engine.

The oracle: each request run alone through the batch-1 torch engine (`engines.generate`), whose
output tests/test_parity.py checks against transformers. With greedy sampling in float32 on the
CPU, a request's output ids in a batched run must equal its ids alone: with mixed prompt
lengths, with prompts computed in chunks, with prefix blocks shared, and with the KV pool made
too small on purpose so the scheduler preempts and recomputes. The block manager's invariants
are property-tested with hypothesis over random sequences of operations.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engines import engine_class
from engines.batch.engine import BatchEngine
from engines.errors import UserError
from engines.generate import Generation
from engines.batch.kv_blocks import BlockManager, BlockTable
from engines.sampling import SamplingParams


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def eng():
    from engines.model.sources import open_model

    return engine_class("torch")(open_model("tiny"))


def alone(eng, prompt, n):
    g = Generation(eng, prompt, n, eng.make_sampler(SamplingParams()))
    while not g.done:
        g.step()
    return g.generated_ids


def workload(eng, seed=0, count=12, shared=True):
    rng = np.random.default_rng(seed)
    V = eng.cfg.vocab_size
    prompts = [[int(t) for t in rng.integers(0, V, int(rng.integers(1, 40)))] for _ in range(count)]
    if shared:  # requests that share a 20-token prefix (a block and more at block size 16)
        base = prompts[0][:1] + [int(t) for t in rng.integers(0, V, 24)]
        for i in (2, 5, 9):
            prompts[i] = base[:20 + i] + prompts[i][:3]
    news = [int(rng.integers(1, 20)) for _ in prompts]
    return prompts, news


@pytest.fixture(scope="module")
def reference(eng):
    prompts, news = workload(eng)
    return prompts, news, [alone(eng, p, n) for p, n in zip(prompts, news)]


@pytest.mark.parametrize("kw", [
    dict(num_blocks=256),  # everything fits: mixed lengths in one batch
    dict(num_blocks=256, max_num_batched_tokens=16, max_num_seqs=8),  # prompts in chunks of <= 16 tokens
    dict(num_blocks=16, block_size=4),  # too small: preemption and recompute
    dict(num_blocks=15, block_size=4, max_num_batched_tokens=8, max_num_seqs=4),  # both
], ids=["batch", "chunked", "preempt", "chunked-preempt"])
def test_batched_ids_equal_alone(eng, reference, kw):
    prompts, news, ref = reference
    be = BatchEngine(eng, **kw)
    reqs = [be.add_request(p, n) for p, n in zip(prompts, news)]
    while be.has_unfinished():
        be.step()
        be.blocks.check([r.table for r in be.scheduler.running])
    assert [r.output_ids for r in reqs] == ref
    assert all(r.finish_reason == "length" for r in reqs)
    assert be.blocks.num_free == be.blocks.num_blocks  # every block back in the pool
    if "num_blocks" in kw and kw["num_blocks"] < 20:
        assert be.scheduler.preemptions > 0  # the case does what it says
    if kw.get("max_num_batched_tokens", 512) < 40:
        assert max(len(p) for p in prompts) > kw["max_num_batched_tokens"]  # some prompt took several steps


def test_prefix_blocks_are_shared_and_give_the_same_ids(eng, reference):
    """Requests arriving after a request with the same prefix has computed it reuse its blocks
    (they compute only what follows), and still produce the ids they produce alone."""
    prompts, news, ref = reference
    be = BatchEngine(eng, num_blocks=256)
    first = be.add_request(prompts[2], news[2])
    be.step()  # the prefix's blocks are written
    later = [be.add_request(prompts[i], news[i]) for i in (5, 9)]
    be.step()
    assert [r.num_cached for r in later] == [16, 16]  # one full block of 16 from the cache
    assert be.blocks.hits >= 2
    while be.has_unfinished():
        be.step()
    assert [first.output_ids] + [r.output_ids for r in later] == [ref[2], ref[5], ref[9]]


def test_abort_frees_the_pool_at_once(eng, reference):
    prompts, news, _ = reference
    be = BatchEngine(eng, num_blocks=64)
    reqs = [be.add_request(p, 50) for p in prompts[:4]]
    for _ in range(3):
        be.step()
    assert be.blocks.num_free < 64
    for r in reqs:
        assert be.abort(r.id)
    assert be.blocks.num_free == 64 and not be.has_unfinished()
    assert all(r.finish_reason == "abort" for r in reqs)
    assert not be.abort(reqs[0].id)  # already finished


def test_stop_ids_end_a_request(eng, reference):
    prompts, news, ref = reference
    be = BatchEngine(eng, num_blocks=64)
    stop = ref[0][2]
    r = be.add_request(prompts[0], 19, stop_ids=(stop,))
    be.run_all()
    assert r.output_ids == ref[0][: ref[0].index(stop) + 1] and r.finish_reason == "stop"


def test_bad_requests_are_one_line_errors(eng):
    be = BatchEngine(eng, num_blocks=4, block_size=4)
    with pytest.raises(UserError, match="KV blocks"):
        be.add_request(list(range(10)), 10)  # 20 tokens, 16 slots
    with pytest.raises(UserError, match="empty"):
        be.add_request([], 4)
    be.add_request([1, 2], 2, request_id="a")
    with pytest.raises(UserError, match="already in use"):
        be.add_request([1, 2], 2, request_id="a")
    with pytest.raises(UserError, match="max-num-seqs"):
        BatchEngine(eng, num_blocks=4, max_num_seqs=8, max_num_batched_tokens=4)


# --- the block manager's invariants ----------------------------------------------------------

OPS = st.lists(st.tuples(st.sampled_from(["new", "grow", "write", "truncate", "release"]), st.integers(0, 7),
                         st.integers(1, 40)), min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(ops=OPS, num_blocks=st.integers(1, 24), bs=st.sampled_from([1, 2, 4, 16]), seed=st.integers(0, 2**16))
def test_block_manager_invariants(ops, num_blocks, bs, seed):
    """Random admissions (prompts over a 3-token alphabet, so prefixes collide and blocks are
    shared), growth, writes, truncations (a rollback) and releases: after every operation no table holds a block twice,
    each reference count equals the tables holding the block, a block is free exactly when its
    count is 0, free + used is the pool, and every cached hash points at its block. A shared
    block is only ever a full block, written, whose tokens equal the sharer's, and a block a
    table holds that is hashed stands for that table's tokens (a truncation that cuts into a
    hashed block unhashes it, or copies it when another table shares it)."""
    rng = np.random.default_rng(seed)
    bm = BlockManager(num_blocks, bs)
    live: dict[int, tuple[BlockTable, list[int], int]] = {}  # slot -> (table, tokens, written)
    for op, slot, n in ops:
        if op == "new" and slot not in live:
            tokens = [int(t) for t in rng.integers(0, 3, n)]
            t = BlockTable()
            cached = bm.allocate_prefix(t, tokens)
            assert cached % bs == 0 and cached < len(tokens)
            for i, bid in enumerate(t.blocks):
                assert bm.blocks[bid].tokens == tuple(tokens[i * bs:(i + 1) * bs])
            if bm.can_grow(t, len(tokens)):
                bm.grow(t, len(tokens))
                live[slot] = (t, tokens, cached)
            else:
                bm.release(t)
        elif op == "grow" and slot in live:
            t, tokens, w = live[slot]
            more = tokens + [int(x) for x in rng.integers(0, 3, n % 5 + 1)]
            if bm.can_grow(t, len(more)):
                bm.grow(t, len(more))
                live[slot] = (t, more, w)
        elif op == "write" and slot in live:
            t, tokens, w = live[slot]
            w = min(len(tokens), w + n)
            bm.written(t, tokens, w)
            live[slot] = (t, tokens, w)
        elif op == "truncate" and slot in live:
            t, tokens, w = live[slot]
            written = min(w, n % (len(tokens) + 1))  # the KV kept: a rollback's tokens after it are new ones
            held = {bid: bm.blocks[bid].ref_count for bid in t.blocks}
            if bm.num_free or written % bs == 0:
                copy = bm.truncate(t, written)
                assert len(t.blocks) == bm.blocks_for(written) and len(t.hashes) == written // bs
                if copy is not None:  # the cut fell in a block another table holds: it got its own
                    src, dst = copy
                    assert held[src] > 1 and bm.blocks[src].ref_count == held[src] - 1 and t.blocks[-1] == dst
                live[slot] = (t, tokens[:written], written)
        elif op == "release" and slot in live:
            bm.release(live.pop(slot)[0])
        bm.check([t for t, _, _ in live.values()])
        for t, tokens, w in live.values():  # a hashed block in a table stands for that table's tokens
            for i, bid in enumerate(t.blocks):
                if bm.blocks[bid].hash is not None:
                    assert bm.blocks[bid].tokens == tuple(tokens[i * bs:(i + 1) * bs])
    for t, _, _ in live.values():
        bm.release(t)
    bm.check([])
    assert bm.num_free == num_blocks
