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
from .safetensors_mmap import TensorRef
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


def _part_size(cfg: ModelConfig, field: str, part: int) -> int:
    """Rows (column-parallel) or columns (row-parallel) of part `part` of a fused field, as
    `weights.layer_sources` lists the parts: q | k | v, gate | up, or the one matrix."""
    if field in ("qkv", "qkv_bias"):
        return cfg.q_dim if part == 0 else cfg.kv_dim
    if field in ("gate_up", "down"):
        return cfg.intermediate_size
    if field == "o_proj":
        return cfg.q_dim
    raise ValueError(f"{field} is not split")


def cut_ref(t: TensorRef, axis: int, lo: int, hi: int) -> TensorRef:
    """Rows (axis 0) or columns (axis 1) lo..hi of a stored tensor, still in its stored form: a
    view into the mapped file. A block-quantized tensor is cut along whole blocks (its rows are
    runs of blocks); a cut inside a block is refused in one line."""
    a = t.array
    if axis == 0:
        return TensorRef(a[lo:hi], t.dtype, t.cols)
    if not t.quantized:
        return TensorRef(a[:, lo:hi], t.dtype)
    from ..quant.formats import format_info

    f = format_info(t.dtype)
    bw, bb = f.block_weights, f.block_bytes
    if lo % bw or (hi % bw and hi != t.cols):
        raise UserError(f"a tensor-parallel shard of {hi - lo} columns at column {lo} would split a {t.dtype} "
                        f"block of {bw} weights", "use a --tp that splits the heads and the MLP at whole blocks, "
                        "or a float checkpoint")
    return TensorRef(a[:, lo // bw * bb: -(-hi // bw) * bb], t.dtype, hi - lo)


def stored_cut(cfg: ModelConfig, rank: int, world: int):
    """The `cut` for `ModelWeights.layer` that keeps rank `rank`'s share of each stored part:
    the same rows and columns as `column_rows` and `row_cols` pick from the fused matrices, taken
    before the parts fuse (the fused order of a shard is its q | k | v, its gate | up)."""
    check_tp(cfg, world)

    def cut(field: str, part: int, t: TensorRef) -> TensorRef:
        if field in COLUMN:
            return cut_ref(t, 0, *_span(_part_size(cfg, field, part), rank, world))
        if field in ROW:
            return cut_ref(t, 1, *_span(_part_size(cfg, field, part), rank, world))
        return t

    return cut


def stage_layers(num_layers: int, pp: int, stage: int) -> range:
    """The contiguous layers pipeline stage `stage` of `pp` runs: the first `num_layers % pp`
    stages take one more."""
    per, extra = divmod(num_layers, pp)
    start = stage * per + min(stage, extra)
    return range(start, start + per + (stage < extra))


def check_pp(cfg: ModelConfig, pp: int) -> None:
    if not 1 <= pp <= cfg.num_layers:
        raise UserError(f"a pipeline of {pp} stages needs at least {pp} layers; {cfg.name or 'the model'} has "
                        f"{cfg.num_layers}", f"use --pp 1 to {cfg.num_layers}")


def rank_config(cfg: ModelConfig, world: int) -> ModelConfig:
    """One tensor-parallel rank's share of the model's shape: heads, KV heads and the
    intermediate size divided by `world`; hidden, vocabulary and layers whole."""
    from dataclasses import replace

    check_tp(cfg, world)
    return replace(cfg, num_heads=cfg.num_heads // world, num_kv_heads=cfg.num_kv_heads // world,
                   intermediate_size=cfg.intermediate_size // world)
