"""The cost model (profilers/costs.py) against oracles that do not share its formula: the
weight bytes a decode pass reads must add up to the checkpoint's own tensors (HF transformers'
parameters, built on the meta device for every preset), and for one small config every op's
FLOPs and bytes are written out by hand. Every GB/s, GFLOP/s and %-of-peak rests on these."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engines import engine_class
from engines.model.config import PRESETS, ModelConfig
from engines.ops import OP_INDEX, OPS
from engines.model.weights import LayerWeights, layer_sources, op_weight_bytes
from profilers.costs import pass_costs

from .conftest import hf_classes


def hf_parameter_bytes(cfg: ModelConfig) -> int:
    """float32 bytes of every parameter HF's own model class has for this config (a tied
    lm_head is the embedding, counted once), built on the meta device: no memory, no math."""
    kw = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
              num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
              num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim, tie_word_embeddings=cfg.tie_word_embeddings)
    if cfg.arch == "llama":
        kw.update(attention_bias=False, mlp_bias=False)
    cfg_cls, model_cls = hf_classes(cfg.arch)
    with torch.device("meta"):
        model = model_cls(cfg_cls(**kw))
    return sum(p.numel() * 4 for p in model.parameters())


def shapes_table(cfg: ModelConfig) -> np.ndarray:
    """The per-op weight table an engine holding float32 weights reports, built from the
    layout's shapes (the presets' real tensors would take gigabytes to draw)."""
    fused = {f: (sum(shape[0] for _, shape in parts),) + parts[0][1][1:] for f, parts in layer_sources(cfg).items()}
    layer = LayerWeights(**{f: fused.get(f) for f in LayerWeights.__dataclass_fields__})
    V, H = cfg.vocab_size, cfg.hidden_size
    return op_weight_bytes([layer] * cfg.num_layers, (V, H), (H,), (V, H), V, lambda shape: 4 * math.prod(shape))


def decode_op_counts(cfg: ModelConfig) -> np.ndarray:
    """How often each canonical op runs in one decode pass: once per layer, or once."""
    counts = np.zeros(len(OPS))
    for i, op in enumerate(OPS):
        if op.covers or (op.name == "qk_norm" and not cfg.qk_norm):
            continue
        counts[i] = cfg.num_layers if op.per_layer else 1
    return counts


@pytest.mark.parametrize("name", list(PRESETS))
def test_decode_weight_bytes_add_up_to_the_checkpoint(name):
    cfg = PRESETS[name]
    total = hf_parameter_bytes(cfg)
    embed = cfg.vocab_size * cfg.hidden_size * 4
    # a decode pass reads every weight once, but only one row of the embedding table; a tied
    # lm_head reads that table whole
    want = total - embed + cfg.hidden_size * 4 + (embed if cfg.tie_word_embeddings else 0)
    costs = pass_costs(cfg, 1, 5, shapes_table(cfg), 4)
    assert costs.weight_total(decode_op_counts(cfg)) == want


def test_engines_count_their_own_storage(tiny):
    """float32 simd holds exactly the checkpoint's bytes; float64 scalar twice that; bf16 torch
    half: each engine's table comes from its tensors, not from one itemsize."""
    stored = hf_parameter_bytes(tiny.config)
    assert tiny.stored_bytes == stored
    for backend, kw, factor in (("simd", {}, 1.0), ("scalar", {}, 2.0), ("torch", {"dtype": "bfloat16"}, 0.5)):
        eng = engine_class(backend)(tiny, **kw)
        assert eng.resident_weight_bytes == stored * factor, backend
        np.testing.assert_array_equal(eng.op_weight_bytes, shapes_table(tiny.config) * factor)


def test_one_small_config_by_hand():
    """H=8, I=16, V=32, nh=2 over nkv=1, hd=4, one layer, q/k/v biases, float32; a pass of T=2
    tokens over P=3 cached ones (S=5 keys, 2*3 + 1+2 = 9 causal query-key pairs)."""
    cfg = ModelConfig(arch="qwen2", vocab_size=32, hidden_size=8, intermediate_size=16, num_layers=1, num_heads=2,
                      num_kv_heads=1, head_dim=4, attention_bias=True)
    c = pass_costs(cfg, 2, 3, shapes_table(cfg), 4)
    # (flops, bytes); bytes = weights read + activations in and out (4 bytes each)
    want = {
        "embed": (0, 2 * 8 * 4 + 2 * 8 * 4),  # two rows read, two written
        "attn_norm": (4 * 2 * 8, 8 * 4 + 2 * 2 * 8 * 4),
        "qkv_proj": (2 * 2 * 8 * 16 + 2 * 16, (16 * 8 + 16) * 4 + 2 * (8 + 16) * 4),
        "rope": (3 * 2 * 3 * 4, 2 * 2 * 3 * 4 * 4 + 2 * 2 * 4 * 4),  # rotate 3 heads of 2 tokens; write k, v
        "attn_scores": (2 * 2 * 4 * 9, 2 * 8 * 4 + 5 * 4 * 4 + 2 * 9 * 4),
        "attn_softmax": (5 * 2 * 9, 2 * 2 * 9 * 4),
        "attn_mix": (2 * 2 * 4 * 9, 2 * 9 * 4 + 5 * 4 * 4 + 2 * 8 * 4),
        "o_proj": (2 * 2 * 8 * 8 + 2 * 8, 8 * 8 * 4 + 2 * (8 + 2 * 8) * 4),
        "mlp_norm": (4 * 2 * 8, 8 * 4 + 2 * 2 * 8 * 4),
        "gate_up_proj": (2 * 2 * 8 * 32, 32 * 8 * 4 + 2 * (8 + 32) * 4),
        "silu_mul": (5 * 2 * 16, 3 * 2 * 16 * 4),
        "down_proj": (2 * 2 * 16 * 8 + 2 * 8, 16 * 8 * 4 + 2 * (16 + 2 * 8) * 4),
        "final_norm": (4 * 8, 8 * 4 + 2 * 8 * 4),  # the last position only
        "lm_head": (2 * 8 * 32, 32 * 8 * 4 + 8 * 4 + 32 * 4),
        "sample": (3 * 32, 32 * 4),
        # fused: the three ops' FLOPs; q, K and V in and the heads out, no scores in memory
        "attention": (2 * 2 * 4 * 9 + 5 * 2 * 9 + 2 * 2 * 4 * 9, 2 * 8 * 4 + 2 * 5 * 4 * 4 + 2 * 8 * 4),
        # communication: the 2 x 8 hidden state once (its adds as FLOPs); the token id
        "allreduce": (2 * 8, 2 * 8 * 4),
        "send": (0, 2 * 8 * 4),
        "recv": (0, 2 * 8 * 4),
        "broadcast": (0, 8),
    }
    assert set(want) | {"qk_norm"} == {op.name for op in OPS}
    for name, (flops, nbytes) in want.items():
        i = OP_INDEX[name]
        row = 0 if OPS[i].per_layer else -1
        assert (c.flops[i], c.bytes[row, i]) == (flops, nbytes), name
