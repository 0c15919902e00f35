"""The scalar engine: the Qwen forward pass in pure Python, one number at a time.

Lists of floats, `math`, and loops — float64 throughout. It is the readable reference: every
other engine computes exactly this, only faster. Read `_forward` top to bottom; it is the
whole model.
"""

from __future__ import annotations

import math
from operator import mul

import numpy as np

from profilers.ops import (
    ATTN_MIX, ATTN_NORM, ATTN_SCORES, ATTN_SOFTMAX, DOWN_PROJ, EMBED, FINAL_NORM, GATE_UP_PROJ,
    LM_HEAD, MLP_NORM, O_PROJ, QK_NORM, QKV_PROJ, ROPE, SILU_MUL,
)

from .base import Engine, attn_scale, rope_tables
from .checkpoint import layer_prefix, lm_head_name
from . import resolve_dtype
from .errors import BackendError

Vector = list  # list[float]
Matrix = list  # list[Vector], row-major: W[out][in]

# A Python float costs ~32 bytes (object + pointer), not 4: refuse what will not fit.
_BYTES_PER_PARAM = 32


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

class Layer:
    """One decoder layer's weights as Python lists (shapes in comments)."""

    def __init__(self, w, p: str, cfg):
        def mat(name):
            return w.f32(p + name).astype(np.float64).tolist()

        def vec(name):
            return w.f32(p + name).astype(np.float64).tolist()

        self.attn_norm = vec("input_layernorm.weight")  # (H,)
        self.wq, self.wk, self.wv = mat("self_attn.q_proj.weight"), mat("self_attn.k_proj.weight"), mat("self_attn.v_proj.weight")  # (nh*hd, H), (nkv*hd, H) x2
        zq, zk = [0.0] * cfg.q_dim, [0.0] * cfg.kv_dim
        self.bq = vec("self_attn.q_proj.bias") if cfg.attention_bias else zq  # (nh*hd,)
        self.bk = vec("self_attn.k_proj.bias") if cfg.attention_bias else zk  # (nkv*hd,)
        self.bv = vec("self_attn.v_proj.bias") if cfg.attention_bias else zk
        self.q_norm = vec("self_attn.q_norm.weight") if cfg.qk_norm else None  # (hd,)
        self.k_norm = vec("self_attn.k_norm.weight") if cfg.qk_norm else None
        self.wo = mat("self_attn.o_proj.weight")  # (H, nh*hd)
        self.mlp_norm = vec("post_attention_layernorm.weight")  # (H,)
        self.w_gate, self.w_up = mat("mlp.gate_proj.weight"), mat("mlp.up_proj.weight")  # (I, H) x2
        self.w_down = mat("mlp.down_proj.weight")  # (H, I)


class ScalarEngine(Engine):
    name = "scalar"
    dtype = "float64"
    weight_itemsize = 8
    act_itemsize = 8

    def __init__(self, ckpt, probe=None, dtype: str | None = None, progress=None):
        super().__init__(ckpt, probe)
        resolve_dtype(self.name, dtype)
        self.preflight(self.cfg, ckpt.name)
        cfg = self.cfg
        w = ckpt.weights
        self.embed = w.f32("model.embed_tokens.weight").astype(np.float64).tolist()  # (V, H)
        self.layers = []
        for i in range(cfg.num_layers):
            self.layers.append(Layer(w, layer_prefix(i), cfg))
            if progress:
                progress(i + 1, cfg.num_layers)
        self.final_norm = w.f32("model.norm.weight").astype(np.float64).tolist()  # (H,)
        head = lm_head_name(cfg)
        self.lm_head = self.embed if cfg.tie_word_embeddings else w.f32(head).astype(np.float64).tolist()  # (V, H)
        self.cos_table: list = []
        self.sin_table: list = []
        self.reset(64)

    @staticmethod
    def preflight(cfg, model_name: str) -> None:
        """Refuse, before anything loads, a model whose Python floats would not fit in RAM."""
        import psutil

        need = cfg.num_params() * _BYTES_PER_PARAM
        avail = psutil.virtual_memory().available
        if need > 0.7 * avail:
            raise BackendError(
                f"the scalar engine would need ~{need / 2**30:.1f} GiB of Python floats for {model_name} "
                f"({cfg.num_params() / 1e6:.0f}M params), {avail / 2**30:.1f} GiB is available",
                "use --backend simd, or a smaller model such as --model tiny",
            )

    @property
    def resident_weight_bytes(self) -> int:
        return self.cfg.num_params() * 8  # as float64 values (the Python objects take ~4x more)

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

    def prefill(self, ids, all_logits=False):
        self.check_room(len(ids))
        return self._forward(list(ids), all_logits)

    def decode(self, token_id):
        self.check_room(1)
        return self._forward([token_id], False)

    def _forward(self, ids: list[int], all_logits: bool):
        cfg, lap = self.cfg, self.lap
        nh, nkv, hd, g = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.gqa_group
        eps, scale = cfg.rms_norm_eps, attn_scale(hd)
        P, T = self.pos, len(ids)

        x = [list(self.embed[t]) for t in ids]  # (T, H) the residual stream
        lap(-1, EMBED)
        for li, L in enumerate(self.layers):
            h = [rmsnorm(row, L.attn_norm, eps) for row in x]
            lap(li, ATTN_NORM)
            q = [heads(add(matvec(L.wq, r), L.bq), nh, hd) for r in h]  # (T, nh, hd)
            k = [heads(add(matvec(L.wk, r), L.bk), nkv, hd) for r in h]  # (T, nkv, hd)
            v = [heads(add(matvec(L.wv, r), L.bv), nkv, hd) for r in h]  # (T, nkv, hd)
            lap(li, QKV_PROJ)
            if L.q_norm is not None:
                q = [[rmsnorm(hv, L.q_norm, eps) for hv in qt] for qt in q]
                k = [[rmsnorm(hv, L.k_norm, eps) for hv in kt] for kt in k]
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
            attn = []  # (T, nh*hd)
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
            x = [add(xr, matvec(L.wo, ar)) for xr, ar in zip(x, attn)]
            lap(li, O_PROJ)
            h = [rmsnorm(row, L.mlp_norm, eps) for row in x]
            lap(li, MLP_NORM)
            gate = [matvec(L.w_gate, r) for r in h]  # (T, I)
            up = [matvec(L.w_up, r) for r in h]  # (T, I)
            lap(li, GATE_UP_PROJ)
            act = [[silu(a) * b for a, b in zip(gr, ur)] for gr, ur in zip(gate, up)]
            lap(li, SILU_MUL)
            x = [add(xr, matvec(L.w_down, ar)) for xr, ar in zip(x, act)]
            lap(li, DOWN_PROJ)
        self.pos += T
        rows = x if all_logits else x[-1:]
        h = [rmsnorm(row, self.final_norm, eps) for row in rows]
        lap(-1, FINAL_NORM)
        logits = [matvec(self.lm_head, r) for r in h]  # (rows, V)
        lap(-1, LM_HEAD)
        out = np.array(logits, dtype=np.float64)
        return out if all_logits else out[0]
