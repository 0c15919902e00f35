"""The simd engine: NumPy + Numba, float32.

Decode (one token) is a chain of matrix-vector products: memory-bandwidth-bound, so it runs on
our own Numba kernels (`simd_kernels.matvec` & co.) writing into preallocated buffers — no
allocation per token. Prefill (many tokens) is matrix-matrix: it goes to BLAS through
`np.matmul`, with the same Numba kernels for the norms, RoPE, softmax and SiLU.
Weights are fused where the math allows (q|k|v in one matrix, gate|up in one: the layout of
`engines.weights`). Shapes use the legend in `engines.config`.
"""

from __future__ import annotations

import time

import numba
import numpy as np

from . import resolve_dtype
from . import simd_kernels as K
from .base import Engine, attn_scale, rope_tables
from .ops import (
    ATTN_MIX, ATTN_NORM, ATTN_SCORES, ATTN_SOFTMAX, DOWN_PROJ, EMBED, FINAL_NORM, GATE_UP_PROJ,
    LM_HEAD, MLP_NORM, O_PROJ, QK_NORM, QKV_PROJ, ROPE, SILU_MUL,
)
from .weights import to_float32

f32 = np.float32
KS = K.serial


class SimdEngine(Engine):
    name = "simd"
    dtype = "float32"

    def __init__(self, ckpt, dtype: str | None = None, progress=None):
        super().__init__(ckpt)
        resolve_dtype(self.name, dtype)
        cfg = self.cfg
        # C-contiguous float32: what the kernels take (a float32 checkpoint stays mapped, no copy)
        self.load_weights(lambda t: np.ascontiguousarray(to_float32(t)), progress)
        # decode buffers, reused every token
        H, I = cfg.hidden_size, cfg.intermediate_size
        self.x = np.zeros((1, H), f32)
        self.h = np.zeros((1, H), f32)
        self.qkv = np.zeros(cfg.q_dim + 2 * cfg.kv_dim, f32)
        self.attn = np.zeros((cfg.num_heads, cfg.head_dim), f32)
        self.gu = np.zeros((1, 2 * I), f32)
        self.act = np.zeros((1, I), f32)
        self.logits = np.zeros(cfg.vocab_size, f32)
        self.reset(64)

    @staticmethod
    def nbytes(tensor: np.ndarray) -> int:
        return int(tensor.nbytes)

    has_jit = True
    too_big_fix = "use --backend torch --dtype bfloat16 (2 bytes a parameter), or a smaller --model"

    @classmethod
    def host_bytes_per_param(cls, dtype):
        return 4  # float32 copies of the weights

    def warmup(self) -> float:
        t0 = time.perf_counter()
        K.warmup()
        return time.perf_counter() - t0

    def reset(self, capacity: int) -> None:
        cfg = self.cfg
        self.capacity, self.pos = capacity, 0
        shape = (cfg.num_layers, cfg.num_kv_heads, capacity, cfg.head_dim)
        self.k_cache = np.zeros(shape, f32)  # (L, nkv, S, hd)
        self.v_cache = np.zeros(shape, f32)
        cos, sin = rope_tables(cfg.head_dim, cfg.rope_theta, capacity)
        self.cos, self.sin = cos.astype(f32), sin.astype(f32)  # (S, hd/2)
        self.scores_buf = np.zeros(cfg.num_heads * capacity, f32)

    def kv_cache_bytes(self) -> int:
        return self.k_cache.nbytes + self.v_cache.nbytes

    def _norm_rope(self, kernels, li, lw, q, k, cos, sin) -> None:
        """Qwen3's per-head q/k norm (lapped on its own), then RoPE on q and k, in place:
        q (T, nh, hd), k (T, nkv, hd). `kernels` is K, or its serial bodies in prefill. The
        caller laps `rope` once the keys and values are in the cache."""
        if lw.q_norm is not None:
            kernels.rmsnorm_heads(q, lw.q_norm, self.cfg.rms_norm_eps)
            kernels.rmsnorm_heads(k, lw.k_norm, self.cfg.rms_norm_eps)
            self.lap(li, QK_NORM)
        kernels.rope(q, cos, sin)
        kernels.rope(k, cos, sin)

    # --- decode: one token, Numba matvecs into preallocated buffers ------------------------
    def decode(self, token_id):
        self.check_room(1)
        cfg, lap = self.cfg, self.lap
        nh, nkv, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        qd, kvd, eps, scale = cfg.q_dim, cfg.kv_dim, cfg.rms_norm_eps, attn_scale(hd)
        P = self.pos
        n = P + 1
        x, h, qkv, attn, gu, act = self.x, self.h, self.qkv, self.attn, self.gu, self.act
        cos, sin = self.cos[P:n], self.sin[P:n]
        scores = self.scores_buf[: nh * n].reshape(nh, n)

        x[0] = self.embed[token_id]
        lap(-1, EMBED)
        for li, lw in enumerate(self.layers):
            kc, vc = self.k_cache[li], self.v_cache[li]
            K.rmsnorm(x, lw.attn_norm, eps, h)
            lap(li, ATTN_NORM)
            if lw.qkv_bias is not None:
                K.matvec_bias(lw.qkv, h[0], lw.qkv_bias, qkv)
            else:
                K.matvec(lw.qkv, h[0], qkv)
            q = qkv[:qd].reshape(1, nh, hd)
            k = qkv[qd:qd + kvd].reshape(1, nkv, hd)
            lap(li, QKV_PROJ)
            self._norm_rope(K, li, lw, q, k, cos, sin)
            kc[:, P] = k[0]
            vc[:, P] = qkv[qd + kvd:].reshape(nkv, hd)
            lap(li, ROPE)
            K.attn_scores(q[0], kc, n, scale, scores)
            lap(li, ATTN_SCORES)
            K.softmax_rows(scores, n)
            lap(li, ATTN_SOFTMAX)
            K.attn_mix(scores, vc, n, attn)
            lap(li, ATTN_MIX)
            K.matvec_residual(lw.o_proj, attn.reshape(-1), x[0], x[0])
            lap(li, O_PROJ)
            K.rmsnorm(x, lw.mlp_norm, eps, h)
            lap(li, MLP_NORM)
            K.matvec(lw.gate_up, h[0], gu[0])
            lap(li, GATE_UP_PROJ)
            K.silu_mul(gu, act)
            lap(li, SILU_MUL)
            K.matvec_residual(lw.down, act[0], x[0], x[0])
            lap(li, DOWN_PROJ)
        self.pos = n
        K.rmsnorm(x, self.final_norm, eps, h)
        lap(-1, FINAL_NORM)
        K.matvec(self.lm_head, h[0], self.logits)
        lap(-1, LM_HEAD)
        return self.logits

    # --- prefill: the whole prompt at once, BLAS matmuls ---------------------------------
    # The matmuls go to BLAS (its own thread pool); the small ops between them run on the
    # kernels' serial bodies (KS), and Numba's pool is held at one thread meanwhile, so the
    # two pools never fight over the cores. Measured on the 2-core dev VM, 64-token prompt on
    # qwen2.5-0.5b: 1.32 s with both pools live, 0.62 s like this.
    def prefill(self, ids, all_logits=False):
        threads = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            # an overflow (Inf weights, say) is not warned about here: the sampled logit is
            # checked, and the run stops with one line naming the layer
            with np.errstate(over="ignore", invalid="ignore"):
                return self._prefill(list(ids), all_logits)
        finally:
            numba.set_num_threads(threads)

    def _prefill(self, ids, all_logits):
        self.check_room(len(ids))
        cfg, lap = self.cfg, self.lap
        nh, nkv, hd, g = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.gqa_group
        qd, kvd, I, eps, scale = cfg.q_dim, cfg.kv_dim, cfg.intermediate_size, cfg.rms_norm_eps, attn_scale(hd)
        P, T = self.pos, len(ids)
        S = P + T
        cos, sin = self.cos[P:S], self.sin[P:S]
        h = np.empty((T, cfg.hidden_size), f32)
        act = np.empty((T, I), f32)

        x = self.embed[ids]  # (T, H) fancy indexing copies
        lap(-1, EMBED)
        for li, lw in enumerate(self.layers):
            kc, vc = self.k_cache[li], self.v_cache[li]
            KS.rmsnorm(x, lw.attn_norm, eps, h)
            lap(li, ATTN_NORM)
            qkv = h @ lw.qkv.T  # (T, q+2kv)
            if lw.qkv_bias is not None:
                qkv += lw.qkv_bias
            q = np.ascontiguousarray(qkv[:, :qd]).reshape(T, nh, hd)
            k = np.ascontiguousarray(qkv[:, qd:qd + kvd]).reshape(T, nkv, hd)
            lap(li, QKV_PROJ)
            self._norm_rope(KS, li, lw, q, k, cos, sin)
            kc[:, P:S] = k.transpose(1, 0, 2)
            vc[:, P:S] = qkv[:, qd + kvd:].reshape(T, nkv, hd).transpose(1, 0, 2)
            lap(li, ROPE)
            # GQA: the g query heads sharing a KV head are stacked as rows: (nkv, g*T, hd)
            qg = q.transpose(1, 0, 2).reshape(nkv, g * T, hd)
            scores = np.matmul(qg, kc[:, :S].transpose(0, 2, 1))  # (nkv, g*T, S)
            scores *= scale
            lap(li, ATTN_SCORES)
            KS.causal_softmax(scores.reshape(nh, T, S), P)
            lap(li, ATTN_SOFTMAX)
            mixed = np.matmul(scores, vc[:, :S])  # (nkv, g*T, hd)
            attn = mixed.reshape(nh, T, hd).transpose(1, 0, 2).reshape(T, qd)
            lap(li, ATTN_MIX)
            x += attn @ lw.o_proj.T
            lap(li, O_PROJ)
            KS.rmsnorm(x, lw.mlp_norm, eps, h)
            lap(li, MLP_NORM)
            gu = h @ lw.gate_up.T  # (T, 2I)
            lap(li, GATE_UP_PROJ)
            KS.silu_mul(gu, act)
            lap(li, SILU_MUL)
            x += act @ lw.down.T
            lap(li, DOWN_PROJ)
        self.pos = S
        if all_logits:
            KS.rmsnorm(x, self.final_norm, eps, h)
            lap(-1, FINAL_NORM)
            out = h @ self.lm_head.T
            lap(-1, LM_HEAD)
            return out
        last = np.ascontiguousarray(x[-1:])
        KS.rmsnorm(last, self.final_norm, eps, h[:1])
        lap(-1, FINAL_NORM)
        np.dot(self.lm_head, h[0], out=self.logits)
        lap(-1, LM_HEAD)
        return self.logits
