"""FLOPs and minimum bytes of each canonical op, from the shapes alone.

These are properties of the op (what it must compute and the least it must move: weights
read once, activations in and out), not measurements. Dividing them by a measured time gives
an achieved rate. `T` tokens enter a pass that already has `P` tokens in its KV cache.
"""

from __future__ import annotations

import numpy as np

from engines.config import ModelConfig

from .ops import OP_INDEX, OPS


def op_costs(cfg: ModelConfig, T: int, P: int, wb: int, ab: int) -> tuple[np.ndarray, np.ndarray]:
    """(flops, bytes) per single execution of every op, indexed like OPS.

    wb/ab: bytes per weight / per activation as the engine holds them. Attention scores and
    probabilities are counted in float32 (all engines keep them at least that wide).
    """
    H, I, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    nh, nkv, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    qd, kvd = cfg.q_dim, cfg.kv_dim
    S = P + T
    pairs = T * P + T * (T + 1) // 2  # causal (query, key) pairs
    qkv_out = qd + 2 * kvd
    bias = qkv_out if cfg.attention_bias else 0
    R = 1  # rows entering final_norm / lm_head / sample: the last position only
    c = {
        "embed": (0, T * H * wb + T * H * ab),
        "attn_norm": (4 * T * H, H * wb + 2 * T * H * ab),
        "qkv_proj": (2 * T * H * qkv_out + T * bias, (H * qkv_out + bias) * wb + T * (H + qkv_out) * ab),
        "qk_norm": (4 * T * (nh + nkv) * hd, 2 * hd * wb + 2 * T * (nh + nkv) * hd * ab),
        # rotate q and k, and write the new k, v into the cache
        "rope": (3 * T * (nh + nkv) * hd, 2 * T * (nh + nkv) * hd * ab + 2 * T * kvd * ab),
        "attn_scores": (2 * nh * hd * pairs, T * qd * ab + S * kvd * ab + nh * pairs * 4),
        "attn_softmax": (5 * nh * pairs, 2 * nh * pairs * 4),
        "attn_mix": (2 * nh * hd * pairs, nh * pairs * 4 + S * kvd * ab + T * qd * ab),
        "o_proj": (2 * T * qd * H + T * H, H * qd * wb + T * (qd + 2 * H) * ab),
        "mlp_norm": (4 * T * H, H * wb + 2 * T * H * ab),
        "gate_up_proj": (2 * T * H * 2 * I, 2 * I * H * wb + T * (H + 2 * I) * ab),
        "silu_mul": (5 * T * I, 3 * T * I * ab),
        "down_proj": (2 * T * I * H + T * H, I * H * wb + T * (I + 2 * H) * ab),
        "final_norm": (4 * R * H, H * wb + 2 * R * H * ab),
        "lm_head": (2 * R * H * V, V * H * wb + R * H * ab + R * V * 4),
        "sample": (3 * R * V, R * V * 4),
    }
    flops = np.zeros(len(OPS), np.float64)
    nbytes = np.zeros(len(OPS), np.float64)
    for name, (f, b) in c.items():
        flops[OP_INDEX[name]] = f
        nbytes[OP_INDEX[name]] = b
    return flops, nbytes
