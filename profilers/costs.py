"""FLOPs and minimum bytes of each op, from the shapes and the engine's weight storage.

These are properties of the op (what it must compute and the least it must move: weights
read once, activations in and out), not measurements. Dividing them by a measured time gives
an achieved rate. `T` tokens enter a pass that already has `P` tokens in its KV cache (shape
legend: `engines.model.config`).

Weight bytes come from each tensor as the engine holds it (`Engine.op_weight_bytes`, one row
per layer and one for the ops outside the layers), so a quantized or mixed-precision layer is
counted as stored. Attention scores and probabilities are counted in float32 (all engines keep
them at least that wide).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.model.config import ModelConfig
from engines.ops import EMBED, OP_INDEX, OPS

PER_LAYER = np.array([op.per_layer for op in OPS])


@dataclass(frozen=True)
class PassCosts:
    """Costs of one execution of each op in a pass of T tokens over P cached ones."""

    flops: np.ndarray  # (len(OPS),)
    bytes: np.ndarray  # (L + 1, len(OPS)): row i = layer i, row -1 = the ops outside the layers
    weight_bytes: np.ndarray  # the part of `bytes` that is weights read

    def per_exec_bytes(self) -> np.ndarray:
        """(len(OPS),) bytes of one execution: a per-layer op's mean over the layers."""
        return np.where(PER_LAYER, self.bytes[:-1].mean(axis=0), self.bytes[-1])

    def event_bytes(self, layers: np.ndarray, ops: np.ndarray) -> np.ndarray:
        """Bytes of each executed (layer, op); layer -1 picks the last row."""
        return self.bytes[layers, ops]

    def totals(self, op_counts: np.ndarray) -> tuple[float, float]:
        """(flops, bytes) of everything a pass with these op counts executed."""
        return float(op_counts @ self.flops), float(op_counts @ self.per_exec_bytes())

    def weight_total(self, op_counts: np.ndarray) -> float:
        """Weight bytes a pass with these op counts read."""
        per_exec = np.where(PER_LAYER, self.weight_bytes[:-1].mean(axis=0), self.weight_bytes[-1])
        return float(op_counts @ per_exec)


def activation_costs(cfg: ModelConfig, T: int, P: int, ab: int) -> tuple[np.ndarray, np.ndarray]:
    """(flops, activation bytes) of one execution of each op, indexed like OPS. `ab`: bytes per
    activation as the engine holds them."""
    H, I, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    nh, nkv, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    qd, kvd = cfg.q_dim, cfg.kv_dim
    S = P + T
    pairs = T * P + T * (T + 1) // 2  # causal (query, key) pairs
    qkv_out = qd + 2 * kvd
    bias = qkv_out if cfg.attention_bias else 0
    R = 1  # rows entering final_norm / lm_head / sample: the last position only
    c = {
        "embed": (0, T * H * ab),
        "attn_norm": (4 * T * H, 2 * T * H * ab),
        "qkv_proj": (2 * T * H * qkv_out + T * bias, T * (H + qkv_out) * ab),
        "qk_norm": (4 * T * (nh + nkv) * hd, 2 * T * (nh + nkv) * hd * ab),
        # rotate q and k, and write the new k, v into the cache
        "rope": (3 * T * (nh + nkv) * hd, 2 * T * (nh + nkv) * hd * ab + 2 * T * kvd * ab),
        "attn_scores": (2 * nh * hd * pairs, T * qd * ab + S * kvd * ab + nh * pairs * 4),
        "attn_softmax": (5 * nh * pairs, 2 * nh * pairs * 4),
        "attn_mix": (2 * nh * hd * pairs, nh * pairs * 4 + S * kvd * ab + T * qd * ab),
        "o_proj": (2 * T * qd * H + T * H, T * (qd + 2 * H) * ab),
        "mlp_norm": (4 * T * H, 2 * T * H * ab),
        "gate_up_proj": (2 * T * H * 2 * I, T * (H + 2 * I) * ab),
        "silu_mul": (5 * T * I, 3 * T * I * ab),
        "down_proj": (2 * T * I * H + T * H, T * (I + 2 * H) * ab),
        "final_norm": (4 * R * H, 2 * R * H * ab),
        "lm_head": (2 * R * H * V, R * H * ab + R * V * 4),
        "sample": (3 * R * V, R * V * 4),
        # fused: the three attention ops' FLOPs, but scores and probabilities never leave the
        # kernel: q and the keys and values in, the mixed heads out
        "attention": (2 * nh * hd * pairs + 5 * nh * pairs + 2 * nh * hd * pairs,
                      T * qd * ab + 2 * S * kvd * ab + T * qd * ab),
        # communication: the message, once (a ring all-reduce sends 2(n-1)/n of it per rank;
        # `profilers.sim.parallel` models that); its adds are the reduction's FLOPs
        "allreduce": (T * H, T * H * ab),
        "send": (0, T * H * ab),
        "recv": (0, T * H * ab),
        "broadcast": (0, 8),  # one token id
    }
    flops = np.zeros(len(OPS), np.float64)
    nbytes = np.zeros(len(OPS), np.float64)
    for name, (f, b) in c.items():
        flops[OP_INDEX[name]] = f
        nbytes[OP_INDEX[name]] = b
    return flops, nbytes


def pass_costs(cfg: ModelConfig, T: int, P: int, op_weight_bytes: np.ndarray, act_itemsize: int) -> PassCosts:
    """Costs of a pass: activation traffic from the shapes, plus the weight bytes each op
    reads (`op_weight_bytes`, (L + 1, len(OPS)), per execution; embed's is per token)."""
    flops, act = activation_costs(cfg, T, P, act_itemsize)
    weights = np.array(op_weight_bytes, dtype=np.float64)
    weights[:, EMBED] *= T  # one embedding row per token
    return PassCosts(flops, weights + act, weights)
