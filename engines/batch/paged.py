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
        cfg, dev, e = self.cfg, self.dev, self.engine
        lap = e.lap
        nh, nkv, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        ids, pos, slots, ctx_slots = [], [], [], []
        for it in items:
            toks = it.req.tokens
            ids.extend(toks[it.start:it.start + it.n])
            pos.append(torch.arange(it.start, it.start + it.n))
            slots.append(self._slots(it.req.table.blocks, it.start, it.start + it.n))
            ctx_slots.append(self._slots(it.req.table.blocks, 0, it.start + it.n))
        N = len(ids)
        idx = torch.tensor(ids, dtype=torch.long, device=dev)
        pos = torch.cat(pos).to(dev)
        slots = torch.cat(slots).to(dev)
        cos, sin = self.cos[pos].unsqueeze(1), self.sin[pos].unsqueeze(1)  # (N, 1, hd/2)
        # where each item's tokens sit in the flat batch; decodes batched, prefill chunks alone
        offs, o = [], 0
        for it in items:
            offs.append(o)
            o += it.n
        dec = [i for i, it in enumerate(items) if it.n == 1]
        pre = [i for i, it in enumerate(items) if it.n > 1]
        if dec:
            C = max(items[i].start + 1 for i in dec)
            gather = torch.zeros(len(dec), C, dtype=torch.long)
            valid = torch.zeros(len(dec), C, dtype=torch.bool)
            for j, i in enumerate(dec):
                c = items[i].start + 1
                gather[j, :c] = ctx_slots[i]
                valid[j, :c] = True
            gather, valid = gather.to(dev), valid.to(dev)
            dec_rows = torch.tensor([offs[i] for i in dec], dtype=torch.long, device=dev)
            dec_mask = valid[:, None, None, :]  # (D, 1, 1, C): True = attend
        pre_masks = {}
        for i in pre:
            it = items[i]
            # query t (absolute start+t) sees keys 0 .. start+t
            pre_masks[i] = torch.ones(it.n, it.start + it.n, dtype=torch.bool, device=dev).tril(diagonal=it.start)
        ctx_slots = [c.to(dev) for c in ctx_slots]
        scale = attn_scale(hd)

        x = e.embed_rows(idx)  # (N, H)
        lap(-1, EMBED)
        for li, lw in enumerate(e.layers):
            q, k, v = e.attention_in(li, lw, x, cos, sin)  # (N, nh|nkv, hd), roped
            kp, vp = self.k[li], self.v[li]  # (slots, nkv, hd)
            kp[slots] = k
            vp[slots] = v
            lap(li, ROPE)
            attn = torch.empty(N, nh, hd, dtype=self.dtype, device=dev)
            if dec:
                qd_ = q[dec_rows].unsqueeze(2)  # (D, nh, 1, hd)
                keys = kp[gather].transpose(1, 2)  # (D, nkv, C, hd)
                vals = vp[gather].transpose(1, 2)
                out = F.scaled_dot_product_attention(qd_, keys, vals, attn_mask=dec_mask, scale=scale,
                                                     enable_gqa=nh != nkv)  # (D, nh, 1, hd)
                attn[dec_rows] = out[:, :, 0]
            for i in pre:
                it, o = items[i], offs[i]
                keys = kp[ctx_slots[i]].transpose(0, 1).unsqueeze(0)  # (1, nkv, ctx, hd)
                vals = vp[ctx_slots[i]].transpose(0, 1).unsqueeze(0)
                qi = q[o:o + it.n].transpose(0, 1).unsqueeze(0)  # (1, nh, n, hd)
                out = F.scaled_dot_product_attention(qi, keys, vals, attn_mask=pre_masks[i], scale=scale,
                                                     enable_gqa=nh != nkv)
                attn[o:o + it.n] = out[0].transpose(0, 1)
            lap(li, ATTENTION)
            x = e.attention_out_and_mlp(li, lw, x, attn.reshape(N, cfg.q_dim))
        last = torch.tensor([r for i, it in enumerate(items) if it.samples
                             for r in range(offs[i] + it.n - 1 - it.drafts, offs[i] + it.n)], dtype=torch.long,
                            device=dev)
        if last.numel() == 0:  # only prompt chunks that end before their prompt does
            return torch.empty(0, cfg.vocab_size, dtype=torch.float32, device=dev)
        return e.head(x[last])  # (S, V)
