"""The torch engine split over the ranks of a mesh: tensor parallel inside a pipeline stage,
pipeline parallel across stages (`engines.dist.group.Mesh`).

Tensor parallel (Megatron-LM's cut, as gpt-fast's `tp.py` and nano-vllm's parallel linears make
it): a rank holds its query heads with the KV heads they read, its slice of the MLP, and the
matching input columns of o_proj and down (`engines.model.shards`). Attention and SiLU run on
local data; o_proj and down make partial sums that one all-reduce each adds up, so a layer costs
two all-reduces of the hidden state. Norms are small and stay whole on every rank.

Pipeline parallel: stage s runs a contiguous block of layers (`shards.stage_layers`); the first
embeds, the others receive the hidden state from the stage before (`recv`) and send theirs on
(`send`); the last computes the logits. At batch 1 the stages run one after another (a
pipeline's bubble: each rank idles while the others work).

The embedding and the lm_head are replicated, not split by vocabulary: stage 0 holds the
embedding, and the head rank (the last stage's tp_rank 0) holds the lm_head (with tied
embeddings: its own copy of the embedding) and alone computes logits and samples. The sampled
token is broadcast from it to every rank, so all append the same id. A vocabulary split would
spread the lm_head's read over the TP ranks at the cost of a gather of the logits per token;
for SmolLM2 the replicated head is about a fifth of the weights (see the README's numbers).

Each rank loads only its share: a layer's stored parts are cut before they fuse (views into the
mapped file; block-quantized tensors along whole blocks), and layers of other stages are never
read. Laps carry the model's layer index, so a stage's tables line up with the whole model's.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from ..model.shards import check_pp, check_tp, rank_config, stage_layers, stored_cut
from ..model.weights import op_weight_bytes, resident_bytes
from ..ops import ALLREDUCE, BROADCAST, EMBED, RECV, SEND, noop_lap
from ..torch.engine import TorchEngine
from .group import Mesh


class ShardedEngine(TorchEngine):
    """One rank's part of a TP x PP run of the torch engine (on torch CPU with gloo, or a GPU with
    NCCL). `prefill` and `decode` return logits on the head rank and None elsewhere; every rank
    runs the same `Generation`, and `read_token` hands the head rank's pick to all of them."""

    def __init__(self, ckpt, mesh: Mesh, dtype: str | None = None, device: str = "cpu", progress=None,
                 fused_attention: bool = False, quant: str | None = None):
        cfg = ckpt.config
        check_tp(cfg, mesh.tp)
        check_pp(cfg, mesh.pp)
        self.name = "cuda" if torch.device(device).type == "cuda" else "torch"
        self.mesh = mesh
        self.rank, self.world_size = mesh.rank, mesh.world
        self.layer_range = stage_layers(cfg.num_layers, mesh.pp, mesh.stage)
        self.first_layer = self.layer_range.start
        # the shape this rank computes: its heads and MLP slice over its layers (the KV cache and
        # the forward read it); the record's costs use the same share over the model's layers
        self.record_cfg = rank_config(cfg, mesh.tp)
        super().__init__(ckpt, dtype=dtype, device=device, progress=progress, fused_attention=fused_attention,
                         quant=quant)

    @property
    def first_stage(self) -> bool:
        return self.mesh.stage == 0

    @property
    def last_stage(self) -> bool:
        return self.mesh.stage == self.mesh.pp - 1

    def load_weights(self, convert, progress=None) -> None:
        from dataclasses import replace

        w, full = self.ckpt.weights, self.ckpt.config
        self.cfg = replace(self.record_cfg, num_layers=len(self.layer_range))
        cut = stored_cut(full, self.mesh.tp_rank, self.mesh.tp) if self.mesh.tp > 1 else None
        head = self.mesh.is_head
        # stage 0 embeds; the head rank's lm_head is the embedding when they are tied
        self.embed = convert(w.embed, "embed") if self.first_stage or (head and w.lm_head is None) else None
        self.layers = []
        for n, i in enumerate(self.layer_range):
            self.layers.append(w.layer(i, cut).map(convert))
            if progress:
                progress(n + 1, len(self.layer_range))
        self.final_norm = convert(w.final_norm, "vector") if head else None
        self.lm_head = None
        if head:
            self.lm_head = self.tied_head(self.embed) if w.lm_head is None else convert(w.lm_head, "lm_head")
        if not self.first_stage and self.embed is not None and w.lm_head is None:
            self.embed = None  # held as the lm_head only (a packed copy, or the same tensor)
        self._account()

    def _account(self) -> None:
        """What this rank holds: bytes per op over the model's layers (zero for the layers of
        other stages), and its resident weights split into sharded and replicated parts."""
        from ..quant.formats import formats

        full = self.ckpt.config
        nbytes = lambda t: 0 if t is None else self.nbytes(t)  # noqa: E731
        tab = op_weight_bytes(self.layers, self.embed, self.final_norm, self.lm_head, full.vocab_size, nbytes)
        self.op_weight_bytes = np.zeros((full.num_layers + 1, tab.shape[1]))
        self.op_weight_bytes[list(self.layer_range)] = tab[:-1]
        self.op_weight_bytes[-1] = tab[-1]
        self.resident_weight_bytes = resident_bytes(self.layers, self.embed, self.final_norm, self.lm_head, nbytes)
        split = ("qkv", "qkv_bias", "o_proj", "gate_up", "down") if self.mesh.tp > 1 else ()
        self.sharded_weight_bytes = sum(nbytes(getattr(lw, f)) for lw in self.layers for f in split)
        self.replicated_weight_bytes = self.resident_weight_bytes - self.sharded_weight_bytes
        mats = [t for lw in self.layers for t in (lw.qkv, lw.o_proj, lw.gate_up, lw.down)]
        self.weight_format = formats(mats + [t for t in (self.embed, self.lm_head) if t is not None])
        self.bits_per_weight = self.resident_weight_bytes * 8 / max(1, self._params_held())

    def _params_held(self) -> int:
        full, share = self.ckpt.config, self.record_cfg
        n = len(self.layer_range) * share.layer_params()
        if self.embed is not None:
            n += full.vocab_size * full.hidden_size
        if self.lm_head is not None and self.lm_head is not self.embed:
            n += full.vocab_size * full.hidden_size
        if self.final_norm is not None:
            n += full.hidden_size
        return n

    def set_lap(self, lap) -> None:
        """Laps name the model's layer: a stage's local layer i is layer `layer_range[i]`."""
        lap = lap or noop_lap
        first = self.first_layer
        if first and lap is not noop_lap:
            self.lap = lambda layer, op: lap(layer + first if layer >= 0 else layer, op)
        else:
            self.lap = lap

    # --- the pass ------------------------------------------------------------------------
    def _forward(self, idx: torch.Tensor, all_logits: bool):
        mesh, lap, T = self.mesh, self.lap, idx.shape[0]
        if self.first_stage:
            x = self.embed_rows(idx)
            lap(-1, EMBED)
        else:
            x = torch.empty(T, self.cfg.hidden_size, dtype=self.tdtype, device=self.tdev)
            dist.recv(x, src=mesh.prev)
            lap(-1, RECV)
        x = self.run_layers(x)
        if not self.last_stage:
            dist.send(x.contiguous(), dst=mesh.next)
            lap(-1, SEND)
            return None
        if not mesh.is_head:
            return None
        logits = self.head(x if all_logits else x[-1:])
        return logits if all_logits else logits[0]

    def residual(self, li: int, op: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.lap(li, op)
        if self.mesh.tp > 1:
            dist.all_reduce(y, group=self.mesh.tp_group)
            self.lap(li, ALLREDUCE)
        return x + y

    def prefill(self, ids, all_logits=False, on_device=False):
        logits = super().prefill(ids, all_logits=all_logits, on_device=True)
        if logits is not None and all_logits and not on_device:
            return logits.cpu().numpy()
        return logits

    def make_sampler(self, params):
        sampler = super().make_sampler(params)
        if self.mesh.is_head:
            return sampler
        return lambda logits: None  # the head rank picks; the others hear its pick in read_token

    def read_token(self, token, logits) -> tuple[int, bool]:
        """The head rank's (id, finite) broadcast to every rank of the mesh: one collective a
        token, lapped as `broadcast`."""
        if self.mesh.world == 1:  # a one-rank group (torchrun with one process): nobody to tell
            return super().read_token(token, logits)
        pair = torch.zeros(2, dtype=torch.int64, device=self.tdev)
        if self.mesh.is_head:
            t, finite = super().read_token(token, logits)
            pair[0], pair[1] = t, int(finite)
        dist.broadcast(pair, src=self.mesh.head, group=self.mesh.group)
        self.lap(-1, BROADCAST)
        t, finite = pair.tolist()
        return int(t), bool(finite)

    def to_host(self, logits):
        return None if logits is None else super().to_host(logits)
