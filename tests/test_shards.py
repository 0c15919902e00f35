"""The fused layout split over tensor-parallel ranks (`engines.model.shards`).

The oracle is the identity tensor parallelism rests on, in float64 NumPy: a decoder layer
computed rank by rank on each rank's shard (its query heads with the KV heads they read, its
slice of the MLP), with the row-parallel partial products summed as an all-reduce would, equals
the layer computed whole.
"""

from __future__ import annotations

import numpy as np
import pytest

from engines.errors import UserError
from engines.model.config import ModelConfig
from engines.model.shards import check_tp, column_rows, row_cols, shard_layer, tp_sizes
from engines.model.weights import LayerWeights

CFG = ModelConfig("qwen2", vocab_size=32, hidden_size=16, intermediate_size=24, num_layers=1, num_heads=8,
                  num_kv_heads=4, head_dim=4, attention_bias=True, name="toy")


def layer(cfg: ModelConfig, seed: int = 0) -> LayerWeights:
    rng = np.random.default_rng(seed)
    H, I, qkv = cfg.hidden_size, cfg.intermediate_size, cfg.q_dim + 2 * cfg.kv_dim
    return LayerWeights(attn_norm=1 + 0.1 * rng.standard_normal(H), qkv=rng.standard_normal((qkv, H)),
                        qkv_bias=rng.standard_normal(qkv), q_norm=None, k_norm=None,
                        o_proj=rng.standard_normal((H, cfg.q_dim)), mlp_norm=1 + 0.1 * rng.standard_normal(H),
                        gate_up=rng.standard_normal((2 * I, H)), down=rng.standard_normal((H, I)))


def rmsnorm(x, w, eps=1e-6):
    return w * x / np.sqrt((x * x).mean(-1, keepdims=True) + eps)


def attention_part(lw, x, nh, nkv, hd):
    """Causal GQA attention of a layer (RoPE left out: it acts on each head alone), before o_proj."""
    T = x.shape[0]
    qkv = rmsnorm(x, lw.attn_norm) @ lw.qkv.T + lw.qkv_bias
    q = qkv[:, :nh * hd].reshape(T, nh, hd)
    k = qkv[:, nh * hd:(nh + nkv) * hd].reshape(T, nkv, hd)
    v = qkv[:, (nh + nkv) * hd:].reshape(T, nkv, hd)
    g = nh // nkv
    out = np.empty((T, nh, hd))
    mask = np.triu(np.ones((T, T), bool), 1)
    for h in range(nh):
        s = q[:, h] @ k[:, h // g].T / np.sqrt(hd)
        s[mask] = -np.inf
        p = np.exp(s - s.max(-1, keepdims=True))
        out[:, h] = (p / p.sum(-1, keepdims=True)) @ v[:, h // g]
    return out.reshape(T, nh * hd)


def mlp_part(lw, x, inter):
    gu = rmsnorm(x, lw.mlp_norm) @ lw.gate_up.T
    gate, up = gu[:, :inter], gu[:, inter:]
    return (gate / (1 + np.exp(-gate)) * up) @ lw.down.T


@pytest.mark.parametrize("world", [1, 2, 4])
def test_a_layer_computed_rank_by_rank_and_all_reduced_equals_the_whole_layer(world):
    cfg, lw = CFG, layer(CFG)
    x = np.random.default_rng(1).standard_normal((5, cfg.hidden_size))
    nh, nkv, hd, inter = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size
    whole = x + attention_part(lw, x, nh, nkv, hd) @ lw.o_proj.T
    whole = whole + mlp_part(lw, whole, inter)
    shards = [shard_layer(lw, cfg, r, world) for r in range(world)]
    for s in shards:
        assert s.qkv.shape == ((nh + 2 * nkv) * hd // world, cfg.hidden_size)
        assert s.o_proj.shape == (cfg.hidden_size, nh * hd // world) and s.down.shape == (cfg.hidden_size, inter // world)
    h = x + sum(attention_part(s, x, nh // world, nkv // world, hd) @ s.o_proj.T for s in shards)  # all-reduce
    h = h + sum(mlp_part(s, h, inter // world) for s in shards)
    np.testing.assert_allclose(h, whole, rtol=1e-12, atol=1e-12)


def test_the_shards_partition_the_fused_rows_and_columns():
    for world in tp_sizes(CFG):
        for field, n in (("qkv", CFG.q_dim + 2 * CFG.kv_dim), ("gate_up", 2 * CFG.intermediate_size)):
            rows = np.concatenate([column_rows(CFG, field, r, world) for r in range(world)])
            assert sorted(rows.tolist()) == list(range(n))
        for field, n in (("o_proj", CFG.q_dim), ("down", CFG.intermediate_size)):
            cols = [row_cols(CFG, field, r, world) for r in range(world)]
            assert [c.start for c in cols] == [r * n // world for r in range(world)] and cols[-1].stop == n


def test_a_size_that_splits_a_kv_head_is_refused_naming_the_valid_ones():
    assert tp_sizes(CFG) == [1, 2, 4]
    with pytest.raises(UserError, match=r"use --tp 1 or 2 or 4"):
        check_tp(CFG, 3)
    with pytest.raises(UserError):
        column_rows(CFG, "qkv", 0, 8)  # 8 ranks would split the 4 KV heads
