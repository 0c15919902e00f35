"""KV truncation (roll a cache back to its first L positions), on the contiguous caches of the
batch-1 engines and the paged cache of the batched engine, and the all-positions prefill that
leaves its logits on the device.

The oracle is a fresh recompute: after `prefill(A + B)` and `truncate(len(A))`, pushing C must
give the logits that `prefill(A + C)` gives from an empty cache; a batched request rolled back
and continued must generate what a fresh request with the kept tokens as its prompt generates.
"""

from __future__ import annotations

import numpy as np
import pytest

from engines import engine_class
from engines.batch.engine import BatchEngine
from engines.batch.kv_blocks import BlockManager, BlockTable, OutOfBlocks
from engines.errors import UserError
from engines.generate import Generation
from engines.sampling import SamplingParams

pytestmark = pytest.mark.usefixtures("one_torch_thread")

A, B, C = [5, 17, 2003, 9, 44], [71, 1200, 3], [808, 15, 6, 90]
# float64 (scalar) agrees to rounding; float32 engines compute the chunk in another shape
TOL = {"scalar": 1e-9, "simd": 2e-4, "torch": 2e-4}


@pytest.fixture(scope="module", params=["scalar", "simd", "torch"])
def engine(request, tiny):
    return engine_class(request.param)(tiny)


def test_truncate_then_prefill_equals_a_fresh_prefill(engine):
    engine.reset(32)
    engine.prefill(A + B)
    engine.truncate(len(A))
    assert engine.pos == len(A)
    after = engine.to_host(engine.prefill(C, all_logits=True))
    engine.reset(32)
    fresh = engine.to_host(engine.prefill(A + C, all_logits=True))[len(A):]
    np.testing.assert_allclose(after, fresh, rtol=TOL[engine.name], atol=TOL[engine.name])
    # and a decode after a rollback to the very start
    engine.truncate(0)
    engine.prefill(A)
    dec = engine.to_host(engine.decode(C[0]))
    engine.reset(32)
    np.testing.assert_allclose(dec, engine.to_host(engine.prefill(A + C[:1], all_logits=True))[-1],
                               rtol=TOL[engine.name], atol=TOL[engine.name])


def test_truncate_refuses_to_grow(engine):
    engine.reset(16)
    engine.prefill(A)
    with pytest.raises(ValueError):
        engine.truncate(len(A) + 1)
    with pytest.raises(ValueError):
        engine.truncate(-1)


def test_all_logits_on_the_device_equal_the_host_copy(engine):
    engine.reset(16)
    host = engine.prefill(A, all_logits=True)
    assert isinstance(host, np.ndarray) and host.shape == (len(A), engine.cfg.vocab_size)
    engine.reset(16)
    dev = engine.prefill(A, all_logits=True, on_device=True)
    if engine.name == "torch":
        import torch

        assert isinstance(dev, torch.Tensor) and dev.device == engine.tdev
    np.testing.assert_array_equal(engine.to_host(dev), host)


# --- the paged cache ---------------------------------------------------------------------------

def written_table(bm: BlockManager, tokens: list[int]) -> BlockTable:
    t = BlockTable()
    bm.allocate_prefix(t, tokens)
    bm.grow(t, len(tokens))
    bm.written(t, tokens, len(tokens))
    return t


def test_block_truncate_frees_the_tail_and_unhashes_the_cut_block():
    bm = BlockManager(8, block_size=4)
    toks = list(range(14))  # blocks 0..2 full and hashed, block 3 holds 2 tokens
    t = written_table(bm, toks)
    b1 = t.blocks[1]
    assert bm.blocks[b1].hash is not None and bm.num_free == 4
    assert bm.truncate(t, 6) is None  # inside block 1, held by this table alone
    assert len(t.blocks) == 2 and len(t.hashes) == 1 and bm.num_free == 6
    assert bm.blocks[b1].hash is None and b1 not in bm.cached.values()
    bm.check([t])
    # a fresh table with the old first 8 tokens finds only block 0 in the prefix cache now
    assert bm.match_prefix(toks[:9]) == [t.blocks[0]]
    assert bm.truncate(t, 4) is None and len(t.blocks) == 1 and len(t.hashes) == 1
    assert bm.truncate(t, 0) is None and t.blocks == [] and bm.num_free == 8
    bm.check([t])


def test_block_truncate_copies_a_shared_block_on_write():
    bm = BlockManager(6, block_size=4)
    toks = list(range(9))
    a = written_table(bm, toks)
    b = BlockTable()
    assert bm.allocate_prefix(b, toks[:8] + [99]) == 8  # shares a's two full blocks
    bm.grow(b, 9)
    shared = a.blocks[1]
    assert bm.blocks[shared].ref_count == 2
    src, dst = bm.truncate(a, 6)
    assert src == shared and a.blocks[1] == dst != shared and b.blocks[1] == shared
    assert bm.blocks[shared].ref_count == 1 and bm.blocks[shared].hash is not None  # b's, still cached
    assert bm.blocks[dst].hash is None and bm.blocks[dst].ref_count == 1
    bm.check([a, b])
    # with no free block the copy cannot be made
    full = BlockManager(3, block_size=4)
    c = written_table(full, toks[:8])
    d = BlockTable()
    full.allocate_prefix(d, toks[:8] + [1])
    full.grow(d, 9)
    assert full.num_free == 0
    before = (list(c.blocks), list(c.hashes), [(b.ref_count, b.hash) for b in full.blocks], dict(full.cached))
    with pytest.raises(OutOfBlocks):
        full.truncate(c, 5)
    assert (list(c.blocks), list(c.hashes), [(b.ref_count, b.hash) for b in full.blocks], dict(full.cached)) == before


@pytest.fixture(scope="module")
def torch_engine(tiny):
    return engine_class("torch")(tiny)


def alone(eng, prompt, n):
    g = Generation(eng, prompt, n, eng.make_sampler(SamplingParams()))
    while not g.done:
        g.step()
    return g.generated_ids


def fresh_logits(eng, tokens) -> np.ndarray:
    eng.reset(len(tokens) + 1)
    return eng.to_host(eng.prefill(tokens))


@pytest.mark.parametrize("append", [False, True])
def test_batched_rollback_continues_as_a_fresh_request(torch_engine, append):
    """A request generates 7 tokens, is rolled back to its prompt + 4 and goes on (with a token
    appended, as a speculative step appends its bonus token, or computing its last one again).
    A second request shares its first three written blocks, so the cut falls in a shared block:
    copied on write. After the rollback, both requests' logits equal a fresh prefill of their
    tokens (greedy ids alone would not show it: the tiny random model repeats its last token)."""
    eng = torch_engine
    prompt = [3, 14, 15, 92, 65, 35]
    be = BatchEngine(eng, num_blocks=16, block_size=4)
    seen: dict[str, list[np.ndarray]] = {}
    sample = be._sample

    def keep(items, logits):
        for j, it in enumerate(items):
            seen.setdefault(it.req.id, []).append(logits[j].float().cpu().numpy())
        return sample(items, logits)

    be._sample = keep
    r = be.add_request(prompt, 12, request_id="r")
    while len(r.output_ids) < 7:
        be.step()
    first = list(r.output_ids)
    # a sharer of r's first 3 full, written blocks (prompt + 6 outputs: 12 tokens with KV)
    sharer = be.add_request(r.tokens[:12] + [7], 3, request_id="s")
    be.step()
    assert sharer.num_cached == 12
    used = be.blocks.num_used
    extra = 4321 if append else None
    be.truncate("r", len(prompt) + 4, append=extra)  # inside the shared third block
    kept = prompt + first[:4] + ([extra] if append else [])
    assert r.tokens == kept
    assert be.blocks.num_used <= used + 1  # r's tail freed, a copy of the cut block taken
    be.blocks.check([q.table for q in be.requests.values()])
    n_r, n_s = len(seen["r"]), len(seen["s"])
    for _ in range(2):
        r_tokens, s_tokens = list(r.tokens), list(sharer.tokens)
        be.step()
        np.testing.assert_allclose(seen["r"][-1], fresh_logits(eng, r_tokens), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(seen["s"][-1], fresh_logits(eng, s_tokens), rtol=1e-4, atol=1e-4)
    assert len(seen["r"]) == n_r + 2 and len(seen["s"]) == n_s + 2


def test_batched_truncate_says_when_the_appended_token_ends_the_request(torch_engine):
    be = BatchEngine(torch_engine, num_blocks=8, block_size=4)
    r = be.add_request([1, 2, 3], 4, stop_ids=(999,), request_id="x")
    be.step()
    be.step()
    assert len(r.output_ids) == 2
    assert be.truncate("x", 4, append=5) is False and r.output_ids[-1] == 5
    assert be.truncate("x", 5, append=999) is True  # its stop token
    assert r.finish_reason == "stop" and not be.has_unfinished() and be.blocks.num_free == 8


def test_batched_truncate_refuses_the_prompt_and_unknown_requests(torch_engine):
    be = BatchEngine(torch_engine, num_blocks=8, block_size=4)
    be.add_request([1, 2, 3], 4, request_id="x")
    be.step()
    with pytest.raises(ValueError):
        be.truncate("x", 2)
    with pytest.raises(UserError, match="not running"):
        be.truncate("nope", 3)
