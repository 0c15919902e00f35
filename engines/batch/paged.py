"""The batched forward pass over a paged KV cache, in PyTorch (`torch` on the CPU, `cuda`).

One step computes any mix of prefill chunks and decode tokens for many requests at once. The
tokens of every request in the step are laid end to end (N tokens in all), so each projection
is one GEMM over the whole batch: a weight read once serves every request, which is the whole
gain of batching at decode, where one token alone is a matrix-vector product bound by the
bytes of the weights.

The KV cache is one pool per layer, ``(slots, nkv, hd)`` with slots = blocks x block_size
(`engines.batch.kv_blocks`): each token's K and V are written to the slot its request's block table
gives, and attention reads a request's keys back through its table:

- the decode tokens of a step (one query each) in one SDPA call: their keys gathered into a
  ``(D, nkv, C, hd)`` batch padded to the longest context C, the padding masked out;
- each prefill chunk in its own SDPA call over its keys so far, causal from its first position
  (a chunk of n tokens starting at position p sees keys 0 .. p+i for its query i).

That is `torch.nn.functional.scaled_dot_product_attention` on gathered blocks, PyTorch's own
kernel, as the issue asks before anything hand-written; the gather costs a copy of the keys a
step (a paged kernel would read the blocks in place). Ops are lapped with the batch-1 engine's
names (attention as the composite `attention`), so a batched step's profile reads like a
batch-1 one; its FLOPs and bytes cover every token of the step. The parts of a layer around
attention are the batch-1 engine's own (`TorchEngine.attention_in`, `attention_out_and_mlp`,
`head`), laps included: the engine's `lap` times both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..base import attn_scale, rope_tables
from ..ops import ATTENTION, EMBED, ROPE
from ..torch.engine import TorchEngine


class PagedTorchRunner:
    """The forward pass of `engine`'s weights over a pool of `num_blocks` KV blocks."""

    def __init__(self, engine: TorchEngine, num_blocks: int, block_size: int):
        cfg = engine.cfg
        self.engine, self.cfg = engine, cfg
        self.block_size = block_size
        self.dtype, self.dev = engine.tdtype, engine.tdev
        shape = (cfg.num_layers, num_blocks * block_size, cfg.num_kv_heads, cfg.head_dim)
        self.k = torch.zeros(shape, dtype=self.dtype, device=self.dev)
        self.v = torch.zeros(shape, dtype=self.dtype, device=self.dev)
        cos, sin = rope_tables(cfg.head_dim, cfg.rope_theta, cfg.max_position_embeddings)
        self.cos = torch.from_numpy(cos).to(self.dev, torch.float32)  # (S, hd/2)
        self.sin = torch.from_numpy(sin).to(self.dev, torch.float32)

    @property
    def kv_cache_bytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()

    @torch.inference_mode()
    def copy_block(self, src: int, dst: int) -> None:
        """Block `dst` gets block `src`'s keys and values, in every layer (copy on write)."""
        bs = self.block_size
        for pool in (self.k, self.v):
            pool[:, dst * bs:(dst + 1) * bs] = pool[:, src * bs:(src + 1) * bs]

    def _slots(self, blocks: list[int], start: int, stop: int) -> torch.Tensor:
        bs = self.block_size
        pos = torch.arange(start, stop)
        table = torch.tensor(blocks, dtype=torch.long)
        return table[pos // bs] * bs + pos % bs

    @torch.inference_mode()
    def forward(self, items) -> torch.Tensor:
        """Compute `items` (`engines.batch.scheduler.Item`: tokens start..start+n-1 of a request, its
        block table already holding their slots); returns the logits (S, V), float32 on the
        device, at the last token of each item that samples, in the items' order (an item with
        d drafts: its last d + 1 tokens, every position a speculative verify needs)."""
        b = self.prepare(items)
        x = self.engine.embed_rows(b.ids)  # (N, H)
        self.engine.lap(-1, EMBED)
        return self.logits(self.run_layers(x, b), b)

    def prepare(self, items) -> "PagedBatch":
        """The step's (or a micro-batch's) token ids, positions, slots and attention masks, on the
        device: what every layer of the pass reads."""
        cfg, dev = self.cfg, self.dev
        ids, pos, slots, ctx_slots = [], [], [], []
        for it in items:
            toks = it.req.tokens
            ids.extend(toks[it.start:it.start + it.n])
            pos.append(torch.arange(it.start, it.start + it.n))
            slots.append(self._slots(it.req.table.blocks, it.start, it.start + it.n))
            ctx_slots.append(self._slots(it.req.table.blocks, 0, it.start + it.n))
        b = PagedBatch(items=list(items), n=len(ids))
        b.ids = torch.tensor(ids, dtype=torch.long, device=dev)
        pos = torch.cat(pos).to(dev)
        b.slots = torch.cat(slots).to(dev)
        b.cos, b.sin = self.cos[pos].unsqueeze(1), self.sin[pos].unsqueeze(1)  # (N, 1, hd/2)
        # where each item's tokens sit in the flat batch; decodes batched, prefill chunks alone
        o = 0
        for it in items:
            b.offs.append(o)
            o += it.n
        b.dec = [i for i, it in enumerate(items) if it.n == 1]
        b.pre = [i for i, it in enumerate(items) if it.n > 1]
        if b.dec:
            C = max(items[i].start + 1 for i in b.dec)
            gather = torch.zeros(len(b.dec), C, dtype=torch.long)
            valid = torch.zeros(len(b.dec), C, dtype=torch.bool)
            for j, i in enumerate(b.dec):
                c = items[i].start + 1
                gather[j, :c] = ctx_slots[i]
                valid[j, :c] = True
            b.gather = gather.to(dev)
            b.dec_rows = torch.tensor([b.offs[i] for i in b.dec], dtype=torch.long, device=dev)
            b.dec_mask = valid.to(dev)[:, None, None, :]  # (D, 1, 1, C): True = attend
        for i in b.pre:
            it = items[i]
            # query t (absolute start+t) sees keys 0 .. start+t
            b.pre_masks[i] = torch.ones(it.n, it.start + it.n, dtype=torch.bool, device=dev).tril(diagonal=it.start)
        b.ctx_slots = [c.to(dev) for c in ctx_slots]
        b.last = torch.tensor([r for i, it in enumerate(items) if it.samples
                               for r in range(b.offs[i] + it.n - 1 - it.drafts, b.offs[i] + it.n)],
                              dtype=torch.long, device=dev)
        return b

    @torch.inference_mode()
    def run_layers(self, x: torch.Tensor, b: "PagedBatch") -> torch.Tensor:
        """The engine's layers over the batch's hidden states x (N, H), each token's K and V
        written to its slot on the way."""
        cfg, dev, e = self.cfg, self.dev, self.engine
        lap = e.lap
        nh, nkv, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        N, items, scale = b.n, b.items, attn_scale(hd)
        for li, lw in enumerate(e.layers):
            q, k, v = e.attention_in(li, lw, x, b.cos, b.sin)  # (N, nh|nkv, hd), roped
            kp, vp = self.k[li], self.v[li]  # (slots, nkv, hd)
            kp[b.slots] = k
            vp[b.slots] = v
            lap(li, ROPE)
            attn = torch.empty(N, nh, hd, dtype=self.dtype, device=dev)
            if b.dec:
                qd_ = q[b.dec_rows].unsqueeze(2)  # (D, nh, 1, hd)
                keys = kp[b.gather].transpose(1, 2)  # (D, nkv, C, hd)
                vals = vp[b.gather].transpose(1, 2)
                out = F.scaled_dot_product_attention(qd_, keys, vals, attn_mask=b.dec_mask, scale=scale,
                                                     enable_gqa=nh != nkv)  # (D, nh, 1, hd)
                attn[b.dec_rows] = out[:, :, 0]
            for i in b.pre:
                it, o = items[i], b.offs[i]
                keys = kp[b.ctx_slots[i]].transpose(0, 1).unsqueeze(0)  # (1, nkv, ctx, hd)
                vals = vp[b.ctx_slots[i]].transpose(0, 1).unsqueeze(0)
                qi = q[o:o + it.n].transpose(0, 1).unsqueeze(0)  # (1, nh, n, hd)
                out = F.scaled_dot_product_attention(qi, keys, vals, attn_mask=b.pre_masks[i], scale=scale,
                                                     enable_gqa=nh != nkv)
                attn[o:o + it.n] = out[0].transpose(0, 1)
            lap(li, ATTENTION)
            x = e.attention_out_and_mlp(li, lw, x, attn.reshape(N, cfg.q_dim))
        return x

    @torch.inference_mode()
    def logits(self, x: torch.Tensor, b: "PagedBatch") -> torch.Tensor:
        """The logits (S, V) at the batch's sampling rows of the last layer's x."""
        if b.last.numel() == 0:  # only prompt chunks that end before their prompt does
            return torch.empty(0, self.cfg.vocab_size, dtype=torch.float32, device=self.dev)
        return self.engine.head(x[b.last])  # (S, V)


@dataclass
class PagedBatch:
    """What `PagedTorchRunner.prepare` gives the layers: the flat batch of N tokens, where each
    item's tokens sit in it, its slots and masks, and the rows that sample."""
    items: list
    n: int
    ids: torch.Tensor = None
    slots: torch.Tensor = None
    cos: torch.Tensor = None
    sin: torch.Tensor = None
    offs: list = field(default_factory=list)
    dec: list = field(default_factory=list)
    pre: list = field(default_factory=list)
    gather: torch.Tensor = None
    dec_rows: torch.Tensor = None
    dec_mask: torch.Tensor = None
    pre_masks: dict = field(default_factory=dict)
    ctx_slots: list = field(default_factory=list)
    last: torch.Tensor = None
