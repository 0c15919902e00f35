"""The simd engine: NumPy + Numba, float32.

Decode (one token) is a chain of matrix-vector products: memory-bandwidth-bound, so it runs on
our own Numba kernels (`engines.simd.kernels`: `matvec` & co.) writing into preallocated buffers — no
allocation per token. Prefill (many tokens) is matrix-matrix: it goes to BLAS through
`np.matmul`, with the same Numba kernels for the norms, RoPE, softmax and SiLU. A short pass
(a speculative verify of k drafts; `short_tokens`) runs on Numba instead: it reads each weight
once for all its tokens and gives each token decode's logits exactly.
Weights are fused where the math allows (q|k|v in one matrix, gate|up in one: the layout of
`engines.model.weights`). Shapes use the legend in `engines.model.config`.
"""

from __future__ import annotations

import os
import time

import numba
import numpy as np

from ..backends import resolve_dtype
from ..quant import formats as quant
from . import kernels as K
from . import qkernels as QK
from ..base import Engine, attn_scale, rope_tables
from ..errors import UserError
from ..ops import (
    ATTN_MIX, ATTN_NORM, ATTN_SCORES, ATTN_SOFTMAX, DOWN_PROJ, EMBED, FINAL_NORM, GATE_UP_PROJ,
    LM_HEAD, MLP_NORM, O_PROJ, QK_NORM, QKV_PROJ, ROPE, SILU_MUL,
)
from ..model.weights import to_float32

f32 = np.float32
KS = K.serial

QUANT_DOTS = ("int8", "float32")


def quant_dot() -> str:
    """How the quantized matvecs multiply (`engines.simd.qkernels`): ``int8`` (the input quantized
    per 32-element block, as llama.cpp does; x86-64 with AVX2) or ``float32`` (exact, every
    machine). ``AIOS_QUANT_DOT`` picks one; the default is int8 where the machine has it."""
    want = os.environ.get("AIOS_QUANT_DOT", "").strip().lower()
    if want and want not in QUANT_DOTS:
        raise UserError(f"AIOS_QUANT_DOT={want!r} is not one of {', '.join(QUANT_DOTS)}",
                        "set AIOS_QUANT_DOT=int8 or AIOS_QUANT_DOT=float32, or unset it")
    if want == "int8" and not QK.HAVE_AVX2:
        raise UserError("AIOS_QUANT_DOT=int8 needs an x86-64 CPU with AVX2, and this one has none",
                        "unset AIOS_QUANT_DOT (float32 is the default here)")
    return want or ("int8" if QK.HAVE_AVX2 else "float32")


class SimdEngine(Engine):
    name = "simd"
    dtype = "float32"

    def __init__(self, ckpt, dtype: str | None = None, progress=None, quant: str | None = None):
        super().__init__(ckpt)
        resolve_dtype(self.name, dtype)
        self.quant = quant
        cfg = self.cfg
        self.load_weights(self._convert, progress)
        # decode buffers, reused every token
        H, I = cfg.hidden_size, cfg.intermediate_size
        tiled = [t for t in self._matrices() if isinstance(t, QK.Tiled)]
        # quantized matvec scratch: the padded input (and its int8 copy), the output's padded rows
        self.xpad = np.zeros(max([QK.xpad_size(t.blocks) for t in tiled], default=0), f32)
        self.xq = np.zeros(max([t.blocks * 32 for t in tiled], default=0), np.int8)
        self.qout = np.zeros(max([t.q.shape[0] * QK.R for t in tiled], default=0), f32)
        # how a quantized matrix meets its input: int8 x int8 where the machine has the kernels
        self.quant_dot = quant_dot() if tiled else ""
        self.x = np.zeros((1, H), f32)
        self.h = np.zeros((1, H), f32)
        self.qkv = np.zeros(cfg.q_dim + 2 * cfg.kv_dim, f32)
        self.attn = np.zeros((cfg.num_heads, cfg.head_dim), f32)
        self.gu = np.zeros((1, 2 * I), f32)
        self.act = np.zeros((1, I), f32)
        self.logits = np.zeros(cfg.vocab_size, f32)
        self.reset(64)

    def own_scratch(self) -> None:
        for name in ("xpad", "xq", "qout", "x", "h", "qkv", "attn", "gu", "act", "logits"):
            setattr(self, name, np.zeros_like(getattr(self, name)))

    def _convert(self, t, role: str):
        """A stored tensor -> what the kernels take: C-contiguous float32 (a float32 checkpoint
        stays mapped, no copy), or a quantized matrix in the kernels' tiled layout. A tensor the
        file holds in a format the kernels read stays in it; other quantized ones are dequantized;
        float matrices are quantized as `--quant` plans (`engines.quant.formats.plan`)."""
        fmt = quant.target(t.dtype if t.quantized else None, role, self.quant, QK.CODES)
        if fmt is not None and t.dtype == fmt:
            return QK.Tiled(t.array, fmt, t.cols)  # the file's own bytes
        a = np.ascontiguousarray(to_float32(t))
        if fmt is None or a.ndim != 2:
            return a
        return QK.Tiled(quant.quantize(a, fmt).blocks, fmt, a.shape[1])

    def _matrices(self):
        for lw in self.layers:
            yield from (lw.qkv, lw.o_proj, lw.gate_up, lw.down)
        yield self.embed
        yield self.lm_head

    @staticmethod
    def nbytes(tensor) -> int:
        return int(tensor.nbytes)

    @staticmethod
    def all_finite(tensor) -> bool:
        if isinstance(tensor, QK.Tiled):
            a = np.empty((tensor.cols, tensor.q.shape[0] * QK.R), f32)
            QK.dequant_tiles(tensor.q, tensor.d, tensor.m, tensor.code, 0, tensor.cols, a)
            tensor = a
        with np.errstate(invalid="ignore"):  # a signalling NaN warns as it widens: it is the answer here
            return bool(np.isfinite(np.asarray(tensor, dtype=np.float64)).all())

    # --- one matvec / matmul over either kind of weight ------------------------------------
    def _mv(self, W, x, out, add=None):
        """out = W @ x (+ add); add may be out (a residual). W float32 or quantized (tiled)."""
        if isinstance(W, QK.Tiled):
            if self.quant_dot == "int8":
                QK.qmatvec_int(W.q, W.d, W.m, W.code, x, self.xpad, self.xq, self.qout, out if add is None else add,
                               add is not None, out)
            else:
                QK.qmatvec(W.q, W.d, W.m, W.code, x, self.xpad, self.qout, out if add is None else add, add is not None, out)
        elif add is None:
            K.matvec(W, x, out)
        elif add is out:
            K.matvec_residual(W, x, out, out)
        else:
            K.matvec_bias(W, x, add, out)

    # prefill over quantized weights: up to this many tokens (a speculative verify, a short prompt),
    # one `qmatmul` a matrix, the weights read once for every token, each row the decode matvec's
    # result bit for bit; past it, the weights dequantized into a float32 scratch of at most
    # PREFILL_SCRATCH_BYTES, one BLAS call per scratchful. Measured on the 2-core dev VM, SmolLM2
    # (Q4_1): 16 tokens 45 ms against 274 ms; 32 tokens 88 against 280; 64 tokens 573 against 322
    # (BLAS's threads and Numba's then contend in the attention matmuls).
    PREFILL_MATVEC_TOKENS = 32
    PREFILL_SCRATCH_BYTES = 64 * 2**20

    # over float32 weights the same, up to this many tokens, on `kernels.matmul_rows`: the matvec's
    # blocks, each read once for all the tokens (BLAS packs the weights first, which costs more than
    # the product below ~16 rows). Measured on the dev VM, 3072 x 576: 5 rows 0.29 ms against
    # BLAS's 0.81; 16 rows 0.83 against 0.79.
    FLOAT_ROWS_TOKENS = 12

    @property
    def short_tokens(self) -> int:
        """Passes of up to this many tokens run the few-token kernels (and keep Numba's threads)."""
        return self.PREFILL_MATVEC_TOKENS if self.xpad.size else self.FLOAT_ROWS_TOKENS

    def _mm(self, h, W):
        """h @ W.T for prefill, over a float32 or a quantized matrix."""
        T = h.shape[0]
        if not isinstance(W, QK.Tiled):
            if T > self.short_tokens:
                return h @ W.T
            out = np.empty((T, W.shape[0]), f32)
            K.matmul_rows(W, np.ascontiguousarray(h), out)
            return out
        out = np.empty((T, W.rows), f32)
        if T <= self.PREFILL_MATVEC_TOKENS:
            QK.qmatmul(W.q, W.d, W.m, W.code, np.ascontiguousarray(h), self.quant_dot == "int8", out)
            return out
        tiles = W.q.shape[0]
        step = max(1, min(tiles, self.PREFILL_SCRATCH_BYTES // (W.cols * QK.R * 4)))  # tiles a scratchful
        buf = np.empty((W.cols, step * QK.R), f32)
        for t0 in range(0, tiles, step):
            k = min(step, tiles - t0)
            r0, r1 = t0 * QK.R, min(W.rows, (t0 + k) * QK.R)
            QK.dequant_tiles(W.q, W.d, W.m, W.code, t0, W.cols, buf[:, : k * QK.R])
            np.matmul(h, buf[:, : r1 - r0], out=out[:, r0:r1])
        return out

    def _embed_rows(self, ids, x):
        """x[i] = the embedding of ids[i]."""
        E = self.embed
        if not isinstance(E, QK.Tiled):
            x[:] = E[ids]
            return
        for i, t in enumerate(ids):
            QK.dequant_row(E.q, E.d, E.m, E.code, int(t), E.cols, x[i:i + 1])

    def warmup(self) -> float:
        t0 = time.perf_counter()
        K.warmup()
        if self.xpad.size:
            QK.warmup()
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

        self._embed_rows((token_id,), x)
        lap(-1, EMBED)
        for li, lw in enumerate(self.layers):
            kc, vc = self.k_cache[li], self.v_cache[li]
            K.rmsnorm(x, lw.attn_norm, eps, h)
            lap(li, ATTN_NORM)
            self._mv(lw.qkv, h[0], qkv, lw.qkv_bias)
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
            self._mv(lw.o_proj, attn.reshape(-1), x[0], x[0])
            lap(li, O_PROJ)
            K.rmsnorm(x, lw.mlp_norm, eps, h)
            lap(li, MLP_NORM)
            self._mv(lw.gate_up, h[0], gu[0])
            lap(li, GATE_UP_PROJ)
            K.silu_mul(gu, act)
            lap(li, SILU_MUL)
            self._mv(lw.down, act[0], x[0], x[0])
            lap(li, DOWN_PROJ)
        self.pos = n
        K.rmsnorm(x, self.final_norm, eps, h)
        lap(-1, FINAL_NORM)
        self._mv(self.lm_head, h[0], self.logits)
        lap(-1, LM_HEAD)
        return self.logits

    def _attend_rows(self, li, q, kc, vc, P, scale):
        """Attention for a short pass (T tokens after P cached ones), one token at a time on the
        decode's kernels: token t sees P + t + 1 keys, and its scores, softmax and mix are the
        numbers `decode` computes for it, bit for bit (with `qmatmul`'s rows, a speculative
        verify then sees exactly the logits a token-by-token decode would). Returns (T, q_dim)."""
        lap, nh = self.lap, self.cfg.num_heads
        T, S = q.shape[0], P + q.shape[0]
        buf = np.empty(T * nh * S, f32)
        rows = [buf[t * nh * S: t * nh * S + nh * (P + t + 1)].reshape(nh, P + t + 1) for t in range(T)]
        for t in range(T):
            K.attn_scores(q[t], kc, P + t + 1, scale, rows[t])
        lap(li, ATTN_SCORES)
        for t in range(T):
            K.softmax_rows(rows[t], P + t + 1)
        lap(li, ATTN_SOFTMAX)
        attn = np.empty((T, nh, q.shape[2]), f32)
        for t in range(T):
            K.attn_mix(rows[t], vc, P + t + 1, attn[t])
        lap(li, ATTN_MIX)
        return attn.reshape(T, -1)

    # --- prefill: the whole prompt at once, BLAS matmuls ---------------------------------
    # The matmuls go to BLAS (its own thread pool); the small ops between them run on the
    # kernels' serial bodies (KS), and Numba's pool is held at one thread meanwhile, so the
    # two pools never fight over the cores. Measured on the 2-core dev VM, 64-token prompt on
    # qwen2.5-0.5b: 1.32 s with both pools live, 0.62 s like this.
    def prefill(self, ids, all_logits=False, on_device=False):  # the host is this engine's device
        threads = numba.get_num_threads()
        if len(ids) > self.short_tokens:
            numba.set_num_threads(1)  # BLAS does the matmuls; a short pass is Numba's
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
        qd, kvd, I, scale = cfg.q_dim, cfg.kv_dim, cfg.intermediate_size, attn_scale(hd)
        eps = f32(cfg.rms_norm_eps)  # the serial bodies take it as given: float32, as the entry points pass it
        P, T = self.pos, len(ids)
        S = P + T
        cos, sin = self.cos[P:S], self.sin[P:S]
        h = np.empty((T, cfg.hidden_size), f32)
        act = np.empty((T, I), f32)

        short = T <= self.short_tokens  # attention row by row, on decode's kernels
        x = np.empty((T, cfg.hidden_size), f32)
        self._embed_rows(ids, x)
        lap(-1, EMBED)
        for li, lw in enumerate(self.layers):
            kc, vc = self.k_cache[li], self.v_cache[li]
            KS.rmsnorm(x, lw.attn_norm, eps, h)
            lap(li, ATTN_NORM)
            qkv = self._mm(h, lw.qkv)  # (T, q+2kv)
            if lw.qkv_bias is not None:
                qkv += lw.qkv_bias
            q = np.ascontiguousarray(qkv[:, :qd]).reshape(T, nh, hd)
            k = np.ascontiguousarray(qkv[:, qd:qd + kvd]).reshape(T, nkv, hd)
            lap(li, QKV_PROJ)
            self._norm_rope(KS, li, lw, q, k, cos, sin)
            kc[:, P:S] = k.transpose(1, 0, 2)
            vc[:, P:S] = qkv[:, qd + kvd:].reshape(T, nkv, hd).transpose(1, 0, 2)
            lap(li, ROPE)
            if short:
                attn = self._attend_rows(li, q, kc, vc, P, scale)
            else:
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
            x += self._mm(attn, lw.o_proj)
            lap(li, O_PROJ)
            KS.rmsnorm(x, lw.mlp_norm, eps, h)
            lap(li, MLP_NORM)
            gu = self._mm(h, lw.gate_up)  # (T, 2I)
            lap(li, GATE_UP_PROJ)
            KS.silu_mul(gu, act)
            lap(li, SILU_MUL)
            x += self._mm(act, lw.down)
            lap(li, DOWN_PROJ)
        self.pos = S
        if all_logits:
            KS.rmsnorm(x, self.final_norm, eps, h)
            lap(-1, FINAL_NORM)
            out = self._mm(h, self.lm_head)
            lap(-1, LM_HEAD)
            return out
        last = np.ascontiguousarray(x[-1:])
        KS.rmsnorm(last, self.final_norm, eps, h[:1])
        lap(-1, FINAL_NORM)
        if isinstance(self.lm_head, QK.Tiled):
            self.logits[:] = self._mm(h[:1], self.lm_head)[0]
        else:
            np.dot(self.lm_head, h[0], out=self.logits)
        lap(-1, LM_HEAD)
        return self.logits
