"""How the fused weight layout splits over the ranks of a tensor-parallel run (Megatron-LM's
column and row parallelism, as gpt-fast's `tp.py` and nano-vllm's parallel linears cut it).

A layer's q|k|v and gate|up matrices are fused along their output rows (`engines.model.weights`),
so a rank's shard of them is not one slice: it is its share of each part. Column-parallel
(q|k|v, its bias, gate|up): each rank holds whole heads, whole KV heads with the query heads
that read them (GQA: query head h reads KV head h // g), and its slice of the intermediate
size, so attention and SiLU run on local data. Row-parallel (o_proj, down): each rank holds the
input columns that match its heads or its intermediate slice; the ranks' partial products add
up to the full one (the all-reduce). Norms stay whole on every rank.

Shapes use the legend in `engines.model.config`. Everything here is index arithmetic on the
fused layout; the arrays it returns index the stored tensors, so a rank can load only its rows.
"""

from __future__ import annotations

import numpy as np

from ..errors import UserError
from .config import ModelConfig
from .weights import LayerWeights

COLUMN = ("qkv", "qkv_bias", "gate_up")  # split along the output rows
ROW = ("o_proj", "down")  # split along the input columns


def tp_sizes(cfg: ModelConfig) -> list[int]:
    """The tensor-parallel sizes this model splits into evenly: they divide the KV heads (so
    every rank has whole query groups) and the intermediate size."""
    return [w for w in range(1, cfg.num_kv_heads + 1) if cfg.num_kv_heads % w == 0 and cfg.intermediate_size % w == 0]


def check_tp(cfg: ModelConfig, world: int) -> None:
    if world not in tp_sizes(cfg):
        raise UserError(f"a tensor-parallel size of {world} does not divide {cfg.name or 'the model'}'s "
                        f"{cfg.num_kv_heads} KV heads and {cfg.intermediate_size} intermediate rows evenly",
                        f"use --tp {' or '.join(map(str, tp_sizes(cfg)))}")


def _span(n: int, rank: int, world: int) -> tuple[int, int]:
    per = n // world
    return rank * per, (rank + 1) * per


def column_rows(cfg: ModelConfig, field: str, rank: int, world: int) -> np.ndarray:
    """The rows of the fused matrix `field` (qkv, qkv_bias, gate_up) that `rank` holds, in the
    fused order (its q | k | v, or gate | up)."""
    check_tp(cfg, world)
    hd = cfg.head_dim
    if field in ("qkv", "qkv_bias"):
        q0, q1 = _span(cfg.num_heads * hd, rank, world)
        k0, k1 = _span(cfg.num_kv_heads * hd, rank, world)
        q, kv = cfg.q_dim, cfg.kv_dim
        return np.concatenate([np.arange(q0, q1), q + np.arange(k0, k1), q + kv + np.arange(k0, k1)])
    if field == "gate_up":
        i0, i1 = _span(cfg.intermediate_size, rank, world)
        return np.concatenate([np.arange(i0, i1), cfg.intermediate_size + np.arange(i0, i1)])
    raise ValueError(f"{field} is not column-parallel")


def row_cols(cfg: ModelConfig, field: str, rank: int, world: int) -> slice:
    """The input columns of `field` (o_proj, down) that `rank` holds: those that meet its heads'
    outputs, or its slice of the intermediate size."""
    check_tp(cfg, world)
    if field == "o_proj":
        return slice(*_span(cfg.q_dim, rank, world))
    if field == "down":
        return slice(*_span(cfg.intermediate_size, rank, world))
    raise ValueError(f"{field} is not row-parallel")


def shard_layer(lw: LayerWeights, cfg: ModelConfig, rank: int, world: int) -> LayerWeights:
    """Rank `rank`'s share of a layer of NumPy arrays (norms whole). Its local shapes are the
    model's with nh, nkv and I divided by `world`."""
    out = {}
    for name in LayerWeights.__dataclass_fields__:
        t = getattr(lw, name)
        if t is None:
            out[name] = None
        elif name in COLUMN:
            out[name] = t[column_rows(cfg, name, rank, world)]
        elif name in ROW:
            out[name] = t[:, row_cols(cfg, name, rank, world)]
        else:
            out[name] = t
    return LayerWeights(**out)
