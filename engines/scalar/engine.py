"""The scalar engine: the Qwen forward pass in pure Python, one number at a time.

Lists of floats, `math`, and loops — float64 throughout. It is the readable reference: every
other engine computes exactly this, only faster. Read `_forward` top to bottom; it is the
whole model. Shapes use the legend in `engines.model.config`.
"""

from __future__ import annotations

import math
from operator import mul

import numpy as np

from ..backends import check_quant, resolve_dtype
from ..base import Engine, attn_scale, rope_tables
from ..ops import (
    ATTN_MIX, ATTN_NORM, ATTN_SCORES, ATTN_SOFTMAX, DOWN_PROJ, EMBED, FINAL_NORM, GATE_UP_PROJ,
    LM_HEAD, MLP_NORM, O_PROJ, QK_NORM, QKV_PROJ, ROPE, SILU_MUL,
)
from ..model.weights import to_float32

Vector = list  # list[float]
Matrix = list  # list[Vector], row-major: W[out][in]

# ---------------------------------------------------------------------------------------
# The building blocks
# ---------------------------------------------------------------------------------------

def dot(a: Vector, b: Vector) -> float:
    return sum(map(mul, a, b))


def matvec(W: Matrix, x: Vector) -> Vector:
    """y[o] = sum_i W[o][i] * x[i]"""
    return [dot(row, x) for row in W]


def add(a: Vector, b: Vector) -> Vector:
    return [p + q for p, q in zip(a, b)]


def rmsnorm(x: Vector, w: Vector, eps: float) -> Vector:
    """x / sqrt(mean(x^2) + eps) * w — a reduction over the whole vector: a barrier."""
    inv_rms = 1.0 / math.sqrt(sum(v * v for v in x) / len(x) + eps)
    return [v * inv_rms * g for v, g in zip(x, w)]


def softmax(x: Vector) -> Vector:
    """exp(x - max) / sum — two reductions (max, sum) over the whole vector: a barrier."""
    m = max(x)
    e = [math.exp(v - m) for v in x]
    s = sum(e)
    return [v / s for v in e]


def silu(v: float) -> float:
    return v / (1.0 + math.exp(-v)) if v > -700 else 0.0


def rope(vec: Vector, cos: Vector, sin: Vector) -> Vector:
    """Rotate pairs (j, j + d/2) by the position's angles (HF's rotate_half convention)."""
    half = len(vec) // 2
    x1, x2 = vec[:half], vec[half:]
    return [a * c - b * s for a, b, c, s in zip(x1, x2, cos, sin)] + [
        b * c + a * s for a, b, c, s in zip(x1, x2, cos, sin)
    ]


def heads(v: Vector, n: int, d: int) -> list[Vector]:
    return [v[h * d:(h + 1) * d] for h in range(n)]


# ---------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------

class ScalarEngine(Engine):
    name = "scalar"
    dtype = "float64"
    act_itemsize = 8

    def __init__(self, ckpt, dtype: str | None = None, progress=None, quant: str | None = None):
        super().__init__(ckpt)
        resolve_dtype(self.name, dtype)
        check_quant(self.name, quant)  # every weight is a float64 here: `none` is what it does anyway
        self.preflight(self.cfg, ckpt.name)
        # weights as Python lists of float64: matrices W[out][in], vectors (the layout and its
        # shapes: engines.model.weights.LayerWeights); a file's blocks dequantized
        with np.errstate(invalid="ignore"):  # a signalling NaN warns as it widens; the logits check names it
            self.load_weights(lambda t, role: to_float32(t).astype(np.float64).tolist(), progress)
        self.cos_table: list = []
        self.sin_table: list = []
        self.reset(64)

    @staticmethod
    def nbytes(tensor: list) -> int:
        """As float64 values (the Python float objects take ~4x more)."""
        rows = len(tensor)
        return 8 * (rows * len(tensor[0]) if rows and isinstance(tensor[0], list) else rows)

    def reset(self, capacity: int) -> None:
        cfg = self.cfg
        self.capacity = capacity
        self.pos = 0
        # k_cache[layer][kv_head] = list of key vectors, one per position
        self.k_cache = [[[] for _ in range(cfg.num_kv_heads)] for _ in range(cfg.num_layers)]
        self.v_cache = [[[] for _ in range(cfg.num_kv_heads)] for _ in range(cfg.num_layers)]
        cos, sin = rope_tables(cfg.head_dim, cfg.rope_theta, capacity)
        self.cos_table, self.sin_table = cos.tolist(), sin.tolist()

    def kv_cache_bytes(self) -> int:
        return self.cfg.kv_cache_bytes(self.capacity, "float64")

    def prefill(self, ids, all_logits=False, on_device=False):
        self.check_room(len(ids))
        return self._forward(list(ids), all_logits)

    def truncate(self, length: int) -> None:
        super().truncate(length)
        for layer in (*self.k_cache, *self.v_cache):  # the keys and values are lists, one entry a position
            for per_head in layer:
                del per_head[length:]

    def decode(self, token_id):
        self.check_room(1)
        return self._forward([token_id], False)

    def _forward(self, ids: list[int], all_logits: bool):
        cfg, lap = self.cfg, self.lap
        nh, nkv, hd, g = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.gqa_group
        eps, scale = cfg.rms_norm_eps, attn_scale(hd)
        P, T = self.pos, len(ids)

        qd, kvd, I = cfg.q_dim, cfg.kv_dim, cfg.intermediate_size
        x = [list(self.embed[t]) for t in ids]  # (T, H) the residual stream
        lap(-1, EMBED)
        for li, lw in enumerate(self.layers):
            h = [rmsnorm(row, lw.attn_norm, eps) for row in x]
            lap(li, ATTN_NORM)
            qkv = [matvec(lw.qkv, r) for r in h]  # (T, q + 2kv): q | k | v
            if lw.qkv_bias is not None:
                qkv = [add(r, lw.qkv_bias) for r in qkv]
            q = [heads(r[:qd], nh, hd) for r in qkv]  # (T, nh, hd)
            k = [heads(r[qd:qd + kvd], nkv, hd) for r in qkv]  # (T, nkv, hd)
            v = [heads(r[qd + kvd:], nkv, hd) for r in qkv]  # (T, nkv, hd)
            lap(li, QKV_PROJ)
            if lw.q_norm is not None:
                q = [[rmsnorm(hv, lw.q_norm, eps) for hv in qt] for qt in q]
                k = [[rmsnorm(hv, lw.k_norm, eps) for hv in kt] for kt in k]
                lap(li, QK_NORM)
            for t in range(T):
                cos, sin = self.cos_table[P + t], self.sin_table[P + t]
                q[t] = [rope(hv, cos, sin) for hv in q[t]]
                for j in range(nkv):  # rotated keys and values go into the cache
                    self.k_cache[li][j].append(rope(k[t][j], cos, sin))
                    self.v_cache[li][j].append(v[t][j])
            lap(li, ROPE)
            # scores[t][h][s] = q·k / sqrt(hd), for keys s = 0 .. P+t (causal)
            scores = [[[dot(q[t][hh], key) * scale for key in self.k_cache[li][hh // g][: P + t + 1]]
                       for hh in range(nh)] for t in range(T)]
            lap(li, ATTN_SCORES)
            probs = [[softmax(row) for row in st] for st in scores]
            lap(li, ATTN_SOFTMAX)
            attn = []  # (T, q)
            for t in range(T):
                out_t: Vector = []
                for hh in range(nh):
                    vals = self.v_cache[li][hh // g]
                    acc = [0.0] * hd
                    for p_s, val in zip(probs[t][hh], vals):
                        acc = [a + p_s * b for a, b in zip(acc, val)]
                    out_t += acc
                attn.append(out_t)
            lap(li, ATTN_MIX)
            x = [add(xr, matvec(lw.o_proj, ar)) for xr, ar in zip(x, attn)]
            lap(li, O_PROJ)
            h = [rmsnorm(row, lw.mlp_norm, eps) for row in x]
            lap(li, MLP_NORM)
            gu = [matvec(lw.gate_up, r) for r in h]  # (T, 2I): gate | up
            lap(li, GATE_UP_PROJ)
            act = [[silu(a) * b for a, b in zip(r[:I], r[I:])] for r in gu]  # (T, I)
            lap(li, SILU_MUL)
            x = [add(xr, matvec(lw.down, ar)) for xr, ar in zip(x, act)]
            lap(li, DOWN_PROJ)
        self.pos += T
        rows = x if all_logits else x[-1:]
        h = [rmsnorm(row, self.final_norm, eps) for row in rows]
        lap(-1, FINAL_NORM)
        logits = [matvec(self.lm_head, r) for r in h]  # (rows, V)
        lap(-1, LM_HEAD)
        out = np.array(logits, dtype=np.float64)
        return out if all_logits else out[0]
