"""The KV cache as a pool of fixed-size blocks: block tables, a free list, reference counts and
prefix caching (vLLM's PagedAttention memory manager; nano-vllm's `BlockManager` is the compact
reading of it).

The pool holds `num_blocks` blocks of `block_size` token slots each. A sequence owns a *block
table*, the list of block ids that hold its tokens in order: token i lives in slot
``table[i // block_size] * block_size + i % block_size``. Blocks are taken from the free list as
a sequence grows and given back when it finishes or is preempted, so memory follows the tokens
actually held, not a worst-case length per sequence.

Prefix caching. A *full* block is identified by a hash of its tokens chained with the hash of
the block before it, so equal hashes mean an equal prefix up to and including the block.
`hash -> block id` is kept for every full block whose KV is written; a new sequence whose first
blocks hash the same (and whose tokens compare equal: the hash is only the index) shares those
blocks instead of computing them again, each share adding one to the block's reference count.
A block whose count drops to 0 goes back to the free list but keeps its hash and contents until
the free list hands it out again, so a prefix can be hit after its last owner finished (least
recently freed blocks are reused first).

Invariants (``check``; property-tested): a block is free exactly when its count is 0; each
count equals the number of tables that hold the block; no table holds a block twice; and free
+ used = the pool.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


def block_hash(prev: int | None, tokens) -> int:
    """The chained hash of a full block: its tokens and the hash of the block before it."""
    return hash((prev, tuple(tokens)))


@dataclass
class Block:
    id: int
    ref_count: int = 0
    hash: int | None = None  # set once the block is full and its KV written
    tokens: tuple[int, ...] = ()  # the tokens of a hashed block, to confirm a hash hit


@dataclass
class BlockTable:
    """A sequence's blocks, and how many of its tokens have KV written in them."""
    blocks: list[int] = field(default_factory=list)
    hashes: list[int] = field(default_factory=list)  # hashes of its leading full, written blocks


class OutOfBlocks(Exception):
    """The pool cannot give the blocks asked for (the scheduler checks first; this is a bug guard)."""


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int = 16, prefix_caching: bool = True):
        if num_blocks < 1 or block_size < 1:
            raise ValueError("num_blocks and block_size must be positive")
        self.block_size = block_size
        self.prefix_caching = prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self.cached: dict[int, int] = {}  # hash -> block id
        self.hits = 0  # prefix-cache hits, in blocks
        self.lookups = 0  # full prompt blocks looked up

    # --- sizes -------------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free(self) -> int:
        return len(self.free)

    @property
    def num_used(self) -> int:
        return len(self.blocks) - len(self.free)

    def blocks_for(self, n_tokens: int) -> int:
        return -(-n_tokens // self.block_size)

    def slot(self, table: BlockTable, pos: int) -> int:
        """The pool slot of token `pos` of a sequence."""
        return table.blocks[pos // self.block_size] * self.block_size + pos % self.block_size

    # --- taking and giving back ----------------------------------------------------------------
    def _take(self) -> int:
        if not self.free:
            raise OutOfBlocks("no free KV block")
        bid, _ = self.free.popitem(last=False)  # the least recently freed
        b = self.blocks[bid]
        if b.hash is not None and self.cached.get(b.hash) == bid:
            del self.cached[b.hash]  # its old contents are about to be overwritten
        b.hash, b.tokens, b.ref_count = None, (), 1
        return bid

    def _share(self, bid: int) -> None:
        b = self.blocks[bid]
        if b.ref_count == 0:
            del self.free[bid]
        b.ref_count += 1

    def match_prefix(self, tokens: list[int]) -> list[int]:
        """The cached blocks that hold the leading full blocks of `tokens` (not taken yet). The
        last token is never covered: its forward pass gives the logits of the next token."""
        if not self.prefix_caching:
            return []
        bs, out, prev = self.block_size, [], None
        for i in range((len(tokens) - 1) // bs):
            chunk = tuple(tokens[i * bs:(i + 1) * bs])
            h = block_hash(prev, chunk)
            bid = self.cached.get(h)
            if bid is None or self.blocks[bid].tokens != chunk:
                break
            out.append(bid)
            prev = h
        return out

    def allocate_prefix(self, table: BlockTable, tokens: list[int]) -> int:
        """A fresh sequence's table starts with the cached blocks of its prefix; returns the
        number of tokens they cover (whose KV need not be computed)."""
        assert not table.blocks
        bs = self.block_size
        hit = self.match_prefix(tokens)
        prev = None
        for i, bid in enumerate(hit):
            self._share(bid)
            table.blocks.append(bid)
            prev = block_hash(prev, tokens[i * bs:(i + 1) * bs])
            table.hashes.append(prev)
        return len(hit) * bs

    def count_lookup(self, tokens: list[int], cached_tokens: int) -> None:
        """Count one admission's prefix lookup: its full prompt blocks, and the ones it found."""
        self.lookups += (len(tokens) - 1) // self.block_size
        self.hits += cached_tokens // self.block_size

    def can_grow(self, table: BlockTable, n_tokens: int) -> bool:
        return self.blocks_for(n_tokens) - len(table.blocks) <= self.num_free

    def grow(self, table: BlockTable, n_tokens: int) -> None:
        """Enough blocks in `table` for `n_tokens` tokens."""
        need = self.blocks_for(n_tokens) - len(table.blocks)
        if need > self.num_free:
            raise OutOfBlocks(f"{need} blocks needed, {self.num_free} free")
        for _ in range(need):
            table.blocks.append(self._take())

    def written(self, table: BlockTable, tokens: list[int], n_written: int) -> None:
        """The KV of tokens[:n_written] is now in the table's blocks: register every newly full
        block in the prefix cache."""
        if not self.prefix_caching:
            return
        bs = self.block_size
        for i in range(len(table.hashes), n_written // bs):
            chunk = tuple(tokens[i * bs:(i + 1) * bs])
            h = block_hash(table.hashes[-1] if table.hashes else None, chunk)
            table.hashes.append(h)
            b = self.blocks[table.blocks[i]]
            if b.hash is None:
                b.hash, b.tokens = h, chunk
                self.cached.setdefault(h, b.id)  # an equal block already cached stays the one

    def truncate(self, table: BlockTable, n_tokens: int) -> tuple[int, int] | None:
        """Keep the KV of the table's first `n_tokens` tokens only (a speculative step's rejected
        tokens, a rollback): the blocks past them go back to the pool, and the block the cut
        falls in will be written past the cut, so it leaves the prefix cache. If that block is
        shared with another table, it is copied on write: the table gets a fresh block, and the
        returned (src, dst) pair says which KV the caller must copy; None when nothing is to
        copy. Raises OutOfBlocks when a copy is needed and no block is free."""
        bs = self.block_size
        keep = self.blocks_for(n_tokens)
        if not 0 <= keep <= len(table.blocks):
            raise ValueError(f"cannot truncate {len(table.blocks)} blocks to {n_tokens} tokens")
        cut = self.blocks[table.blocks[keep - 1]] if keep and n_tokens % bs else None  # the cut falls in it
        # a partial block is only ever this table's (sharing is by hash, of full blocks)
        shared = cut is not None and cut.hash is not None and cut.ref_count > 1
        if shared and not self.free and all(self.blocks[b].ref_count > 1 for b in table.blocks[keep:]):
            raise OutOfBlocks("no free KV block to copy a shared block into")  # nothing changed yet
        for bid in reversed(table.blocks[keep:]):
            self._unref(bid)
        del table.blocks[keep:]
        del table.hashes[n_tokens // bs:]
        if cut is None or cut.hash is None:
            return None
        if not shared:  # ours alone: it stops standing for its old tokens
            if self.cached.get(cut.hash) == cut.id:
                del self.cached[cut.hash]
            cut.hash, cut.tokens = None, ()
            return None
        fresh = self._take()
        cut.ref_count -= 1  # still held by the others, so never free here
        table.blocks[-1] = fresh
        return cut.id, fresh

    def _unref(self, bid: int) -> None:
        b = self.blocks[bid]
        b.ref_count -= 1
        if b.ref_count == 0:
            self.free[bid] = None  # hashed: at the back, its prefix kept as long as possible
            if b.hash is None:
                self.free.move_to_end(bid, last=False)  # unhashed: nothing to keep, reuse first

    def release(self, table: BlockTable) -> None:
        """Give back every block of the table (finished, aborted or preempted), last first, so
        a sequence's tail is reused before its shareable head."""
        for bid in reversed(table.blocks):
            self._unref(bid)
        table.blocks.clear()
        table.hashes.clear()

    # --- invariants --------------------------------------------------------------------------
    def check(self, tables) -> None:
        """Raise AssertionError unless the invariants hold for these (all the live) tables."""
        owners: dict[int, int] = {}
        for t in tables:
            assert len(set(t.blocks)) == len(t.blocks), "a table holds a block twice"
            for bid in t.blocks:
                owners[bid] = owners.get(bid, 0) + 1
        for b in self.blocks:
            assert b.ref_count == owners.get(b.id, 0), f"block {b.id}: count {b.ref_count}, held {owners.get(b.id, 0)}"
            assert (b.ref_count == 0) == (b.id in self.free), f"block {b.id}: free list and count disagree"
        assert self.num_free + self.num_used == self.num_blocks
        for h, bid in self.cached.items():
            assert self.blocks[bid].hash == h, "a cached hash points at a block holding something else"
