"""Numba kernels for the ``simd`` engine (one Qwen2/Qwen3 forward pass, CPU, float32).

Every public kernel writes into caller-provided arrays (``out`` or in place), so the
decode hot path allocates nothing. All array arguments must be **float32 and
C-contiguous**; scalars are plain Python ``int`` (``n``, ``past``) and ``float``
(``eps``, ``scale``).  Numba compiles one specialization per argument-type tuple, so
passing a non-contiguous view (e.g. ``qkv[:, :896]`` with T > 1), a float64 array or an
``np.int32`` scalar triggers a *fresh JIT compile* in the middle of a run -- use
:func:`specializations` to check that a run did not add any.

Public kernels (the contract the engine is written against)::

    matvec(W, x, out)                   out = W @ x            W (O, I), x (I,), out (O,)
    matvec_bias(W, x, b, out)           out = W @ x + b
    matvec_residual(W, x, resid, out)   out = resid + W @ x    (resid may be out)
    rmsnorm(x, w, eps, out)             x, out (T, H), w (H,)  (out may be x)
    rope(x, cos, sin)                   in place, x (T, nh, hd), cos/sin (T, hd//2)
    attn_scores(q, k_cache, n, scale, out)   q (nh, hd), k_cache (nkv, S, hd), out (nh, >=n)
    softmax_rows(x, n)                  in place over x[:, :n]
    attn_mix(p, v_cache, n, out)        p (nh, >=n), v_cache (nkv, S, hd), out (nh, hd)
    causal_softmax(s, past)             in place, s (nh, T, S_total)
    silu_mul(gu, out)                   gu (T, 2I) = [gate | up], out (T, I)
    rmsnorm_heads(x, w, eps)            in place, x (T, nh, hd), w (hd,)

``aios compare`` kernels (not used by the engine; see their sections below)::

    dot(a, b) -> float                  sum a * b in float32,  a, b (n,)
    matmul(A, B, out)                   out = A @ B   A (M, K), B (K, N), out (M, N), any sizes
                                        (allocates its packed copy of B per call)

``out`` of ``attn_scores`` and ``p`` of ``attn_mix`` may have more than ``n`` columns
(a preallocated ``(nh, S_max)`` buffer): only the first ``n`` are read/written, so the
engine can pass the whole buffer instead of a (non-contiguous) view.

Parallelism.  A ``parallel=True`` call costs ~2-3 us of thread-pool fork/join on top of
the ~0.3-1 us Numba dispatch (tens of us when the pool has gone to sleep between
calls), which is more than the whole work of e.g. a one-token rmsnorm.  So each kernel
with a parallel body also has a serial body, and the public entry point (itself a
serial ``njit`` function) picks one by the amount of work (``_PAR_MIN_*`` below,
crossovers measured back-to-back on the 2-core dev box).  Both bodies are compiled
together the first time the entry point is compiled, so :func:`warmup` on tiny inputs
compiles (or loads from cache) everything.

Thread pools.  Numba's pool (GNU OpenMP) and OpenBLAS's (numpy) both spin-wait after a
call.  On 2 cores, a parallel kernel called right after a multi-threaded ``np.dot`` (or
an ``np.dot`` right after a parallel kernel) waits for a scheduler time slice: ~3-5 *ms*
instead of ~3 us.  Do not interleave multi-threaded BLAS calls with these kernels in a
timed decode loop (torch's own OpenMP pool did not show the effect).

matvec.  Decode is memory-bandwidth bound, so ``matvec`` streams ``W`` once: ``prange``
over blocks of ``_ROWS`` = 8 rows, each block reading 8 rows in lock-step against one
``x`` load (8 independent float32 SIMD accumulators, vectorized by LLVM thanks to the
``reassoc`` fast-math flag).  8 rows measured best against 2, 4, 6, 12, 16 (more
concurrent read streams per core helps the DRAM-bound shapes; past 8 it is noise).

Fast-math.  Kernels use ``_FASTMATH`` = reassoc/contract/nsz/arcp/afn: everything that
vectorizes reductions and fuses multiply-adds, but *not* ``nnan``/``ninf``, so a NaN or
inf produced upstream propagates (and ``exp`` overflow in silu stays well-defined)
instead of being optimized into garbage.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
from numba import njit, prange

__all__ = [
    "matvec",
    "matvec_bias",
    "matvec_residual",
    "rmsnorm",
    "rope",
    "attn_scores",
    "softmax_rows",
    "attn_mix",
    "causal_softmax",
    "silu_mul",
    "rmsnorm_heads",
    "dot",
    "matmul",
    "warmup",
    "specializations",
]

# Fast-math flags: fastmath=True minus nnan/ninf (see module docstring).
_FASTMATH = {"reassoc", "contract", "nsz", "arcp", "afn"}

# Rows per matvec block (the inner loop keeps this many accumulators).
_ROWS = 8

# Work thresholds below which the serial body is used (a parallel call costs ~2-3 us
# of fork/join; crossovers measured back-to-back on the 2-core dev box, see the report
# of benchmarks/bench_matvec.py's "per-call overhead" section).
_PAR_MIN_MATVEC = 96 * 1024  # O*I multiply-adds; Qwen decode shapes are all >= 800K
_PAR_MIN_ROWS = 16 * 1024  # T*H elements for rmsnorm / rope / rmsnorm_heads
_PAR_MIN_ATTN = 96 * 1024  # nh*n*hd multiply-adds for attn_scores / attn_mix
_PAR_MIN_EXP = 4 * 1024  # exp() calls for softmax / silu (libm expf, not vectorized)

# Column chunk for parallel silu_mul (so a single decode row still splits over cores).
_SILU_CHUNK = 1024

# dot / matmul (the ``aios compare`` kernels, not used by the engine).  Thresholds in
# elements / multiply-adds, crossovers measured back-to-back on the 2-core dev box with
# benchmarks/bench_compare_kernels.py.
_PAR_MIN_DOT = 64 * 1024  # n
_DOT_CHUNKS = 16  # partial sums of the parallel dot
_PAR_MIN_MATMUL = 256 * 1024  # M*N*K (64^3)
# matmul blocking (see the matmul section): K block, output tile rows x columns,
# transpose block, columns (rows) of B (A) packed per prange iteration.
_MM_KC = 1024
_MM_MB = 128
_MM_NC = 32
_MM_TB = 32
_MM_PACK = 32
# fewer rows than this: no packing, rows of out accumulated along B's rows (_mm_rows),
# in column spans of _MM_ROWS_NC per prange iteration
_MM_ROWS_M = 16
_MM_ROWS_NC = 256


def _jit(parallel: bool = False):
    return njit(cache=True, fastmath=_FASTMATH, parallel=parallel, nogil=True)


# --------------------------------------------------------------------------- matvec


@_jit()
def _mv_block(W, x, r, add, use_add, out):
    """Rows r .. r+7 of out = W @ x (+ add)."""
    I = W.shape[1]
    w0 = W[r]
    w1 = W[r + 1]
    w2 = W[r + 2]
    w3 = W[r + 3]
    w4 = W[r + 4]
    w5 = W[r + 5]
    w6 = W[r + 6]
    w7 = W[r + 7]
    a0 = np.float32(0.0)
    a1 = np.float32(0.0)
    a2 = np.float32(0.0)
    a3 = np.float32(0.0)
    a4 = np.float32(0.0)
    a5 = np.float32(0.0)
    a6 = np.float32(0.0)
    a7 = np.float32(0.0)
    for i in range(I):
        xi = x[i]
        a0 += w0[i] * xi
        a1 += w1[i] * xi
        a2 += w2[i] * xi
        a3 += w3[i] * xi
        a4 += w4[i] * xi
        a5 += w5[i] * xi
        a6 += w6[i] * xi
        a7 += w7[i] * xi
    if use_add:
        # read add[] before writing out[]: add may be out (matvec_residual)
        a0 += add[r]
        a1 += add[r + 1]
        a2 += add[r + 2]
        a3 += add[r + 3]
        a4 += add[r + 4]
        a5 += add[r + 5]
        a6 += add[r + 6]
        a7 += add[r + 7]
    out[r] = a0
    out[r + 1] = a1
    out[r + 2] = a2
    out[r + 3] = a3
    out[r + 4] = a4
    out[r + 5] = a5
    out[r + 6] = a6
    out[r + 7] = a7


@_jit()
def _mv_row(W, x, o, add, use_add, out):
    wo = W[o]
    acc = np.float32(0.0)
    for i in range(W.shape[1]):
        acc += wo[i] * x[i]
    if use_add:
        acc += add[o]
    out[o] = acc


@_jit(parallel=True)
def _mv_par(W, x, add, use_add, out):
    O = W.shape[0]
    nb = O // _ROWS
    for b in prange(nb):
        _mv_block(W, x, b * _ROWS, add, use_add, out)
    for o in range(nb * _ROWS, O):
        _mv_row(W, x, o, add, use_add, out)


@_jit()
def _mv_ser(W, x, add, use_add, out):
    O = W.shape[0]
    nb = O // _ROWS
    for b in range(nb):
        _mv_block(W, x, b * _ROWS, add, use_add, out)
    for o in range(nb * _ROWS, O):
        _mv_row(W, x, o, add, use_add, out)


@_jit()
def _mv(W, x, add, use_add, out):
    O, I = W.shape
    if x.shape[0] != I or out.shape[0] != O or (use_add and add.shape[0] != O):
        raise ValueError("matvec: shape mismatch (W (O, I), x (I,), out (O,))")
    if O * I >= _PAR_MIN_MATVEC:
        _mv_par(W, x, add, use_add, out)
    else:
        _mv_ser(W, x, add, use_add, out)


@_jit()
def matvec(W, x, out):
    """out[o] = sum_i W[o, i] * x[i]; W (O, I), x (I,), out (O,)."""
    _mv(W, x, out, False, out)


@_jit()
def matvec_bias(W, x, b, out):
    """out = W @ x + b."""
    _mv(W, x, b, True, out)


@_jit()
def matvec_residual(W, x, resid, out):
    """out = resid + W @ x.  ``resid`` may be the same array as ``out``."""
    _mv(W, x, resid, True, out)


# -------------------------------------------------------------------------- rmsnorm


@_jit()
def _rms_scale(xr, eps):
    H = xr.shape[0]
    ss = np.float32(0.0)
    for j in range(H):
        v = xr[j]
        ss += v * v
    return np.float32(1.0) / np.sqrt(ss / np.float32(H) + eps)


@_jit()
def _rmsnorm_row(xr, w, eps, outr):
    inv = _rms_scale(xr, eps)  # before any write: outr may be xr
    for j in range(xr.shape[0]):
        outr[j] = (xr[j] * inv) * w[j]


@_jit(parallel=True)
def _rmsnorm_par(x, w, eps, out):
    for t in prange(x.shape[0]):
        _rmsnorm_row(x[t], w, eps, out[t])


@_jit()
def _rmsnorm_ser(x, w, eps, out):
    for t in range(x.shape[0]):
        _rmsnorm_row(x[t], w, eps, out[t])


@_jit()
def rmsnorm(x, w, eps, out):
    """out[t] = x[t] / sqrt(mean(x[t]**2) + eps) * w; x, out (T, H), w (H,).

    Sum of squares accumulated in float32 (as HF Qwen2RMSNorm does in fp32); ``out``
    may be ``x``.
    """
    T, H = x.shape
    if w.shape[0] != H or out.shape[0] != T or out.shape[1] != H:
        raise ValueError("rmsnorm: shape mismatch (x (T, H), w (H,), out (T, H))")
    e = np.float32(eps)
    if T > 1 and T * H >= _PAR_MIN_ROWS:
        _rmsnorm_par(x, w, e, out)
    else:
        _rmsnorm_ser(x, w, e, out)


@_jit(parallel=True)
def _rmsnorm_heads_par(x, w, eps):
    T, nh, _ = x.shape
    for k in prange(T * nh):
        r = x[k // nh, k % nh]
        _rmsnorm_row(r, w, eps, r)


@_jit()
def _rmsnorm_heads_ser(x, w, eps):
    T, nh, _ = x.shape
    for t in range(T):
        for h in range(nh):
            r = x[t, h]
            _rmsnorm_row(r, w, eps, r)


@_jit()
def rmsnorm_heads(x, w, eps):
    """In-place per-head RMSNorm (Qwen3 q_norm / k_norm): x (T, nh, hd), w (hd,)."""
    T, nh, hd = x.shape
    if w.shape[0] != hd:
        raise ValueError("rmsnorm_heads: w must have shape (hd,)")
    e = np.float32(eps)
    if T * nh * hd >= _PAR_MIN_ROWS:
        _rmsnorm_heads_par(x, w, e)
    else:
        _rmsnorm_heads_ser(x, w, e)


# ----------------------------------------------------------------------------- rope


@_jit()
def _rope_row(xr, c, s):
    half = c.shape[0]
    for j in range(half):
        x1 = xr[j]
        x2 = xr[j + half]
        xr[j] = x1 * c[j] - x2 * s[j]
        xr[j + half] = x2 * c[j] + x1 * s[j]


@_jit(parallel=True)
def _rope_par(x, cos, sin):
    T, nh, _ = x.shape
    for k in prange(T * nh):
        t = k // nh
        _rope_row(x[t, k % nh], cos[t], sin[t])


@_jit()
def _rope_ser(x, cos, sin):
    T, nh, _ = x.shape
    for t in range(T):
        c = cos[t]
        s = sin[t]
        for h in range(nh):
            _rope_row(x[t, h], c, s)


@_jit()
def rope(x, cos, sin):
    """In-place rotary embedding, HF rotate_half (non-interleaved) convention.

    x (T, nh, hd); cos, sin (T, hd//2).  For j < hd/2:
    x[..., j], x[..., j+hd/2] = x1*cos - x2*sin, x2*cos + x1*sin.
    """
    T, nh, hd = x.shape
    if hd % 2 != 0 or cos.shape[0] != T or sin.shape[0] != T:
        raise ValueError("rope: x (T, nh, hd) with even hd, cos/sin (T, hd//2)")
    if cos.shape[1] != hd // 2 or sin.shape[1] != hd // 2:
        raise ValueError("rope: cos/sin must be (T, hd//2)")
    if T * nh * hd >= _PAR_MIN_ROWS:
        _rope_par(x, cos, sin)
    else:
        _rope_ser(x, cos, sin)


# ------------------------------------------------------------------------ attention


@_jit()
def _scores_head(qh, kc, n, scale, oh):
    hd = qh.shape[0]
    for t in range(n):
        kt = kc[t]
        acc = np.float32(0.0)
        for d in range(hd):
            acc += qh[d] * kt[d]
        oh[t] = acc * scale


@_jit(parallel=True)
def _attn_scores_par(q, k_cache, n, scale, out):
    nh = q.shape[0]
    g = nh // k_cache.shape[0]
    for h in prange(nh):
        _scores_head(q[h], k_cache[h // g], n, scale, out[h])


@_jit()
def _attn_scores_ser(q, k_cache, n, scale, out):
    nh = q.shape[0]
    g = nh // k_cache.shape[0]
    for h in range(nh):
        _scores_head(q[h], k_cache[h // g], n, scale, out[h])


@_jit()
def attn_scores(q, k_cache, n, scale, out):
    """out[h, t] = scale * q[h] . k_cache[h // (nh // nkv), t] for t < n (GQA).

    q (nh, hd), k_cache (nkv, S, hd) with the first n positions valid, out (nh, >=n).
    """
    nh, hd = q.shape
    nkv, S, hdk = k_cache.shape
    if hdk != hd or nkv == 0 or nh % nkv != 0:
        raise ValueError("attn_scores: q (nh, hd), k_cache (nkv, S, hd), nh % nkv == 0")
    if n < 0 or n > S or out.shape[0] != nh or out.shape[1] < n:
        raise ValueError("attn_scores: need 0 <= n <= S and out (nh, >=n)")
    sc = np.float32(scale)
    if nh > 1 and nh * n * hd >= _PAR_MIN_ATTN:
        _attn_scores_par(q, k_cache, n, sc, out)
    else:
        _attn_scores_ser(q, k_cache, n, sc, out)


@_jit()
def _mix_head(ph, vc, n, oh):
    hd = oh.shape[0]
    for d in range(hd):
        oh[d] = np.float32(0.0)
    t = 0
    # 4 positions per pass: one read-modify-write of oh per 4 value rows
    while t + 4 <= n:
        p0 = ph[t]
        p1 = ph[t + 1]
        p2 = ph[t + 2]
        p3 = ph[t + 3]
        v0 = vc[t]
        v1 = vc[t + 1]
        v2 = vc[t + 2]
        v3 = vc[t + 3]
        for d in range(hd):
            oh[d] += (p0 * v0[d] + p1 * v1[d]) + (p2 * v2[d] + p3 * v3[d])
        t += 4
    while t < n:
        pt = ph[t]
        vt = vc[t]
        for d in range(hd):
            oh[d] += pt * vt[d]
        t += 1


@_jit(parallel=True)
def _attn_mix_par(p, v_cache, n, out):
    nh = out.shape[0]
    g = nh // v_cache.shape[0]
    for h in prange(nh):
        _mix_head(p[h], v_cache[h // g], n, out[h])


@_jit()
def _attn_mix_ser(p, v_cache, n, out):
    nh = out.shape[0]
    g = nh // v_cache.shape[0]
    for h in range(nh):
        _mix_head(p[h], v_cache[h // g], n, out[h])


@_jit()
def attn_mix(p, v_cache, n, out):
    """out[h] = sum_{t<n} p[h, t] * v_cache[h // (nh // nkv), t] (GQA).

    p (nh, >=n), v_cache (nkv, S, hd), out (nh, hd).
    """
    nh, hd = out.shape
    nkv, S, hdv = v_cache.shape
    if hdv != hd or nkv == 0 or nh % nkv != 0:
        raise ValueError("attn_mix: out (nh, hd), v_cache (nkv, S, hd), nh % nkv == 0")
    if n < 0 or n > S or p.shape[0] != nh or p.shape[1] < n:
        raise ValueError("attn_mix: need 0 <= n <= S and p (nh, >=n)")
    if nh > 1 and nh * n * hd >= _PAR_MIN_ATTN:
        _attn_mix_par(p, v_cache, n, out)
    else:
        _attn_mix_ser(p, v_cache, n, out)


# -------------------------------------------------------------------------- softmax


@_jit()
def _softmax_row(r, n):
    """Max-subtracted float32 softmax of r[:n], in place."""
    if n <= 0:
        return
    m = r[0]
    for j in range(1, n):
        if r[j] > m:
            m = r[j]
    s = np.float32(0.0)
    for j in range(n):
        e = np.exp(r[j] - m)
        r[j] = e
        s += e
    inv = np.float32(1.0) / s
    for j in range(n):
        r[j] *= inv


@_jit(parallel=True)
def _softmax_rows_par(x, n):
    for i in prange(x.shape[0]):
        _softmax_row(x[i], n)


@_jit()
def _softmax_rows_ser(x, n):
    for i in range(x.shape[0]):
        _softmax_row(x[i], n)


@_jit()
def softmax_rows(x, n):
    """In-place softmax over the first n columns of each row of x (R, C)."""
    R, C = x.shape
    if n < 0 or n > C:
        raise ValueError("softmax_rows: need 0 <= n <= x.shape[1]")
    if R > 1 and R * n >= _PAR_MIN_EXP:
        _softmax_rows_par(x, n)
    else:
        _softmax_rows_ser(x, n)


@_jit()
def _causal_row(r, valid):
    _softmax_row(r, valid)
    for j in range(valid, r.shape[0]):
        r[j] = np.float32(0.0)


@_jit(parallel=True)
def _causal_softmax_par(s, past):
    nh, T, S = s.shape
    for k in prange(nh * T):
        i = k % T
        _causal_row(s[k // T, i], min(past + i + 1, S))


@_jit()
def _causal_softmax_ser(s, past):
    nh, T, S = s.shape
    for h in range(nh):
        for i in range(T):
            _causal_row(s[h, i], min(past + i + 1, S))


@_jit()
def causal_softmax(s, past):
    """In-place causal softmax for prefill: s (nh, T, S_total).

    Query row i sits at absolute position past + i and attends to keys
    0 .. past + i (inclusive); the masked entries are set to 0.
    """
    nh, T, S = s.shape
    if past < 0 or past + T > S:
        raise ValueError("causal_softmax: need 0 <= past and past + T <= S_total")
    if nh * T > 1 and nh * T * (past + (T + 1) // 2) >= _PAR_MIN_EXP:
        _causal_softmax_par(s, past)
    else:
        _causal_softmax_ser(s, past)


# ------------------------------------------------------------------------------ mlp


@_jit()
def _silu_mul_span(g, u, o):
    for j in range(o.shape[0]):
        gj = g[j]
        o[j] = gj / (np.float32(1.0) + np.exp(-gj)) * u[j]


@_jit(parallel=True)
def _silu_mul_par(gu, out):
    T, I = out.shape
    nc = (I + _SILU_CHUNK - 1) // _SILU_CHUNK
    for k in prange(T * nc):
        t = k // nc
        c0 = (k % nc) * _SILU_CHUNK
        c1 = min(c0 + _SILU_CHUNK, I)
        row = gu[t]
        _silu_mul_span(row[c0:c1], row[I + c0 : I + c1], out[t, c0:c1])


@_jit()
def _silu_mul_ser(gu, out):
    T, I = out.shape
    for t in range(T):
        row = gu[t]
        _silu_mul_span(row[:I], row[I:], out[t])


@_jit()
def silu_mul(gu, out):
    """out = silu(gate) * up with gu (T, 2I) = [gate | up] and out (T, I)."""
    T, I = out.shape
    if gu.shape[0] != T or gu.shape[1] != 2 * I:
        raise ValueError("silu_mul: gu (T, 2I), out (T, I)")
    if T * I >= _PAR_MIN_EXP:
        _silu_mul_par(gu, out)
    else:
        _silu_mul_ser(gu, out)


# ----------------------------------------------------------------------------- dot


@_jit()
def _dot_span(a, b):
    """float32 dot product of two equal-length 1-D C-contiguous arrays (or views).

    One scalar accumulator in the source; the ``reassoc`` flag lets LLVM vectorize it
    and interleave the loop into 4 independent 8-lane (ymm) FMA accumulators (checked
    in the assembly), so the loop is bound by loads, not by the FMA latency chain.
    The loop index must start at 0: ``range(lo, hi)`` with an arbitrary ``lo`` keeps
    Numba's negative-index wraparound select in the loop and LLVM then does not
    vectorize it at all (15x slower) -- hence the slices.
    """
    acc = np.float32(0.0)
    for i in range(a.shape[0]):
        acc += a[i] * b[i]
    return acc


@_jit(parallel=True)
def _dot_par(a, b):
    # _DOT_CHUNKS contiguous chunks; prange's static schedule hands each thread an equal
    # run of them (16 divides 1, 2, 4, 8, 16 threads).  The thread count is not read in
    # here: numba.get_num_threads() inside a kernel makes it uncacheable.
    n = a.shape[0]
    nch = _DOT_CHUNKS
    step = (n + nch - 1) // nch
    acc = np.float32(0.0)
    for c in prange(nch):
        lo = min(n, c * step)
        hi = min(n, lo + step)
        acc += _dot_span(a[lo:hi], b[lo:hi])
    return acc


_dot_ser = _dot_span  # the serial body (named like the other kernels' bodies)


@_jit()
def dot(a, b):
    """sum_i a[i] * b[i] accumulated in float32; a, b (n,).  Returns a float32 (a
    Python ``float`` when called from Python)."""
    n = a.shape[0]
    if b.shape[0] != n:
        raise ValueError("dot: a and b must have the same length")
    if n >= _PAR_MIN_DOT:
        return _dot_par(a, b)
    return _dot_span(a, b)


# -------------------------------------------------------------------------- matmul
#
# out = A @ B as a grid of dot products.  B is packed once per call, transposed and cut
# into K blocks: Bp[blk, j, kk] = B[blk*kc + kk, j], so both operands of every dot
# product are contiguous along k (rows of A are already).  The micro-kernel computes a
# 4x4 block of out with 16 accumulators and the k loop innermost; LLVM vectorizes that
# loop (reassoc) into 8 loads + 16 independent 8-lane FMAs per 8 k's -- FMA-bound,
# up to ~90 GFLOP/s on one core of the dev box with hot caches (Numba/LLVM picks 256-bit
# vectors on this CPU; OpenBLAS uses 512-bit ones).  Each 4x4 block then pays 16
# horizontal sums, amortized over kc (kc = K up to _MM_KC).
#
# The k index of every micro-kernel loop starts at 0 (packed K blocks, 3-D arrays
# indexed [blk, row, kk]): an offset index ``k0 + kk`` keeps Numba's wraparound select
# for negative indices inside the loop and LLVM then runs the scalar loop (measured
# 3.4 vs 57 GFLOP/s).  For K <= _MM_KC A is used in place (a (1, M, K) view), else it
# is packed too.  Edges (M or N not a multiple of 4) use 1x4, 4x1 and 1x1 kernels
# with the same k loop, so any size is handled without padding.
#
# Parallelism: prange over tiles of _MM_MB rows x _MM_NC columns of out (each tile is
# written by one thread; a tile's 4-row slab of A stays in L1 while its _MM_NC packed
# columns of B stay in L2).  Packing is a second, earlier prange.
#
# Packing is a strided transpose, ~1.3-2 ns per element here (2x faster than numpy's
# B.T.copy(), but 0.35 ms for a 512x512 B): fine when M is large, ruinous for a
# vector-matrix product (1x512x512: 0.3 ms of packing for 0.5 MFLOP).  So with fewer
# than _MM_ROWS_M rows out is instead accumulated along B's rows (_mm_rows, no packing,
# vectorized along j): 1x512x512 ~25 us instead of ~290 us (crossover measured at
# M ~ 16 for K = N = 512..1024).


@_jit()
def _mm_4x4(Ap, Bp, blk, i, j, kc, first, out):
    c00 = np.float32(0.0)
    c01 = np.float32(0.0)
    c02 = np.float32(0.0)
    c03 = np.float32(0.0)
    c10 = np.float32(0.0)
    c11 = np.float32(0.0)
    c12 = np.float32(0.0)
    c13 = np.float32(0.0)
    c20 = np.float32(0.0)
    c21 = np.float32(0.0)
    c22 = np.float32(0.0)
    c23 = np.float32(0.0)
    c30 = np.float32(0.0)
    c31 = np.float32(0.0)
    c32 = np.float32(0.0)
    c33 = np.float32(0.0)
    for k in range(kc):
        x0 = Ap[blk, i, k]
        x1 = Ap[blk, i + 1, k]
        x2 = Ap[blk, i + 2, k]
        x3 = Ap[blk, i + 3, k]
        y0 = Bp[blk, j, k]
        y1 = Bp[blk, j + 1, k]
        y2 = Bp[blk, j + 2, k]
        y3 = Bp[blk, j + 3, k]
        c00 += x0 * y0
        c01 += x0 * y1
        c02 += x0 * y2
        c03 += x0 * y3
        c10 += x1 * y0
        c11 += x1 * y1
        c12 += x1 * y2
        c13 += x1 * y3
        c20 += x2 * y0
        c21 += x2 * y1
        c22 += x2 * y2
        c23 += x2 * y3
        c30 += x3 * y0
        c31 += x3 * y1
        c32 += x3 * y2
        c33 += x3 * y3
    if not first:  # later K blocks add to what the earlier ones stored
        c00 += out[i, j]
        c01 += out[i, j + 1]
        c02 += out[i, j + 2]
        c03 += out[i, j + 3]
        c10 += out[i + 1, j]
        c11 += out[i + 1, j + 1]
        c12 += out[i + 1, j + 2]
        c13 += out[i + 1, j + 3]
        c20 += out[i + 2, j]
        c21 += out[i + 2, j + 1]
        c22 += out[i + 2, j + 2]
        c23 += out[i + 2, j + 3]
        c30 += out[i + 3, j]
        c31 += out[i + 3, j + 1]
        c32 += out[i + 3, j + 2]
        c33 += out[i + 3, j + 3]
    out[i, j] = c00
    out[i, j + 1] = c01
    out[i, j + 2] = c02
    out[i, j + 3] = c03
    out[i + 1, j] = c10
    out[i + 1, j + 1] = c11
    out[i + 1, j + 2] = c12
    out[i + 1, j + 3] = c13
    out[i + 2, j] = c20
    out[i + 2, j + 1] = c21
    out[i + 2, j + 2] = c22
    out[i + 2, j + 3] = c23
    out[i + 3, j] = c30
    out[i + 3, j + 1] = c31
    out[i + 3, j + 2] = c32
    out[i + 3, j + 3] = c33


@_jit()
def _mm_1x4(Ap, Bp, blk, i, j, kc, first, out):
    c0 = np.float32(0.0)
    c1 = np.float32(0.0)
    c2 = np.float32(0.0)
    c3 = np.float32(0.0)
    for k in range(kc):
        x = Ap[blk, i, k]
        c0 += x * Bp[blk, j, k]
        c1 += x * Bp[blk, j + 1, k]
        c2 += x * Bp[blk, j + 2, k]
        c3 += x * Bp[blk, j + 3, k]
    if not first:
        c0 += out[i, j]
        c1 += out[i, j + 1]
        c2 += out[i, j + 2]
        c3 += out[i, j + 3]
    out[i, j] = c0
    out[i, j + 1] = c1
    out[i, j + 2] = c2
    out[i, j + 3] = c3


@_jit()
def _mm_4x1(Ap, Bp, blk, i, j, kc, first, out):
    c0 = np.float32(0.0)
    c1 = np.float32(0.0)
    c2 = np.float32(0.0)
    c3 = np.float32(0.0)
    for k in range(kc):
        y = Bp[blk, j, k]
        c0 += Ap[blk, i, k] * y
        c1 += Ap[blk, i + 1, k] * y
        c2 += Ap[blk, i + 2, k] * y
        c3 += Ap[blk, i + 3, k] * y
    if not first:
        c0 += out[i, j]
        c1 += out[i + 1, j]
        c2 += out[i + 2, j]
        c3 += out[i + 3, j]
    out[i, j] = c0
    out[i + 1, j] = c1
    out[i + 2, j] = c2
    out[i + 3, j] = c3


@_jit()
def _mm_1x1(Ap, Bp, blk, i, j, kc, first, out):
    c = np.float32(0.0)
    for k in range(kc):
        c += Ap[blk, i, k] * Bp[blk, j, k]
    if not first:
        c += out[i, j]
    out[i, j] = c


@_jit()
def _mm_tile(Ap, Bp, K, kc, i0, i1, j0, j1, out):
    """out[i0:i1, j0:j1] = A[i0:i1] @ B[:, j0:j1] from the packed operands."""
    for blk in range(Bp.shape[0]):
        kb = min(kc, K - blk * kc)
        first = blk == 0
        i = i0
        while i + 4 <= i1:
            j = j0
            while j + 4 <= j1:
                _mm_4x4(Ap, Bp, blk, i, j, kb, first, out)
                j += 4
            while j < j1:
                _mm_4x1(Ap, Bp, blk, i, j, kb, first, out)
                j += 1
            i += 4
        while i < i1:
            j = j0
            while j + 4 <= j1:
                _mm_1x4(Ap, Bp, blk, i, j, kb, first, out)
                j += 4
            while j < j1:
                _mm_1x1(Ap, Bp, blk, i, j, kb, first, out)
                j += 1
            i += 1


@_jit()
def _mm_pack_b(B, Bp, kc, j0, j1):
    """Bp[blk, j, kk] = B[blk*kc + kk, j] for columns j0 <= j < j1 (blocked transpose)."""
    K = B.shape[0]
    nj = j1 - j0
    for blk in range(Bp.shape[0]):
        k0 = blk * kc
        kb = min(kc, K - k0)
        src = B[k0 : k0 + kb, j0:j1]  # views: 0-based indices below (see _dot_span)
        dst = Bp[blk, j0:j1]
        for kk0 in range(0, kb, _MM_TB):
            kk1 = min(kb, kk0 + _MM_TB)
            for jj0 in range(0, nj, _MM_TB):
                jj1 = min(nj, jj0 + _MM_TB)
                for jj in range(jj0, jj1):
                    for kk in range(kk0, kk1):
                        dst[jj, kk] = src[kk, jj]


@_jit()
def _mm_pack_a(A, Ap, kc, i0, i1):
    """Ap[blk, i, kk] = A[i, blk*kc + kk] for rows i0 <= i < i1 (only when K > _MM_KC)."""
    K = A.shape[1]
    for i in range(i0, i1):
        row = A[i]
        for blk in range(Ap.shape[0]):
            k0 = blk * kc
            kb = min(kc, K - k0)
            src = row[k0 : k0 + kb]
            dst = Ap[blk, i]
            for kk in range(kb):
                dst[kk] = src[kk]


@_jit()
def _mm_rows(A, B, out, j0, j1):
    """out[:, j0:j1] = A @ B[:, j0:j1] for few rows (M < _MM_ROWS_M), without packing.

    Row by row, vectorized along j: out[i, j0:j1] += A[i, k] * B[k, j0:j1], four k's
    per pass over the (L1-resident) output span.  Reads B in place, so a 1 x K x N
    product costs one pass over B instead of a transpose of it.
    """
    M, K = A.shape
    for i in range(M):
        o = out[i, j0:j1]
        a = A[i]
        n = o.shape[0]
        for j in range(n):
            o[j] = np.float32(0.0)
        k = 0
        while k + 4 <= K:
            x0 = a[k]
            x1 = a[k + 1]
            x2 = a[k + 2]
            x3 = a[k + 3]
            b0 = B[k, j0:j1]
            b1 = B[k + 1, j0:j1]
            b2 = B[k + 2, j0:j1]
            b3 = B[k + 3, j0:j1]
            for j in range(n):
                o[j] += (x0 * b0[j] + x1 * b1[j]) + (x2 * b2[j] + x3 * b3[j])
            k += 4
        while k < K:
            x = a[k]
            b = B[k, j0:j1]
            for j in range(n):
                o[j] += x * b[j]
            k += 1


@_jit()
def _mm_kblock(K):
    """K block length: K itself up to _MM_KC, else equal blocks rounded up to 8."""
    if K <= _MM_KC:
        return max(K, 1)
    nkb = (K + _MM_KC - 1) // _MM_KC
    kc = (K + nkb - 1) // nkb
    return (kc + 7) // 8 * 8


@_jit(parallel=True)
def _matmul_par(A, B, out):
    M, K = A.shape
    N = B.shape[1]
    if M < _MM_ROWS_M:
        ncs = (N + _MM_ROWS_NC - 1) // _MM_ROWS_NC
        for c in prange(ncs):
            _mm_rows(A, B, out, c * _MM_ROWS_NC, min(N, (c + 1) * _MM_ROWS_NC))
        return
    kc = _mm_kblock(K)
    nkb = (K + kc - 1) // kc
    Bp = np.empty((nkb, N, kc), np.float32)
    if nkb == 1:
        Ap = A.reshape((1, M, K))
    else:
        Ap = np.empty((nkb, M, kc), np.float32)
    npb = (N + _MM_PACK - 1) // _MM_PACK
    npa = (M + _MM_PACK - 1) // _MM_PACK if nkb > 1 else 0
    for t in prange(npb + npa):
        if t < npb:
            _mm_pack_b(B, Bp, kc, t * _MM_PACK, min(N, (t + 1) * _MM_PACK))
        else:
            r = (t - npb) * _MM_PACK
            _mm_pack_a(A, Ap, kc, r, min(M, r + _MM_PACK))
    nrb = (M + _MM_MB - 1) // _MM_MB
    ncb = (N + _MM_NC - 1) // _MM_NC
    for t in prange(nrb * ncb):
        i0 = (t // ncb) * _MM_MB
        j0 = (t % ncb) * _MM_NC
        _mm_tile(Ap, Bp, K, kc, i0, min(M, i0 + _MM_MB), j0, min(N, j0 + _MM_NC), out)


@_jit()
def _matmul_ser(A, B, out):
    M, K = A.shape
    N = B.shape[1]
    if M < _MM_ROWS_M:
        _mm_rows(A, B, out, 0, N)
        return
    kc = _mm_kblock(K)
    nkb = (K + kc - 1) // kc
    Bp = np.empty((nkb, N, kc), np.float32)
    _mm_pack_b(B, Bp, kc, 0, N)
    if nkb == 1:
        Ap = A.reshape((1, M, K))
    else:
        Ap = np.empty((nkb, M, kc), np.float32)
        _mm_pack_a(A, Ap, kc, 0, M)
    for i0 in range(0, M, _MM_MB):
        for j0 in range(0, N, _MM_NC):
            _mm_tile(Ap, Bp, K, kc, i0, min(M, i0 + _MM_MB), j0, min(N, j0 + _MM_NC), out)


@_jit()
def matmul(A, B, out):
    """out = A @ B accumulated in float32; A (M, K), B (K, N), out (M, N), any sizes.

    ``out`` must not overlap A or B.  Allocates the packed (transposed) copy of B,
    N*K*4 bytes (and of A when K > _MM_KC) per call.
    """
    M, K = A.shape
    N = B.shape[1]
    if B.shape[0] != K or out.shape[0] != M or out.shape[1] != N:
        raise ValueError("matmul: shape mismatch (A (M, K), B (K, N), out (M, N))")
    if M == 0 or N == 0:
        return
    if K == 0:
        out[:] = np.float32(0.0)
        return
    if M * N * K >= _PAR_MIN_MATMUL:
        _matmul_par(A, B, out)
    else:
        _matmul_ser(A, B, out)


# --------------------------------------------------------------------- serial bodies

# The single-threaded bodies, for callers that interleave kernels with multi-threaded BLAS
# (the engine's prefill): a Numba parallel region right after an OpenBLAS call, or the
# reverse, waits ~3-5 ms for the other pool's spinning threads (see the module docstring).
# They skip the public entry points' shape checks: pass what those would accept.
serial = SimpleNamespace(
    rmsnorm=_rmsnorm_ser,
    rmsnorm_heads=_rmsnorm_heads_ser,
    rope=_rope_ser,
    causal_softmax=_causal_softmax_ser,
    silu_mul=_silu_mul_ser,
)


# --------------------------------------------------------------------------- warmup

_PUBLIC = {
    "matvec": matvec,
    "matvec_bias": matvec_bias,
    "matvec_residual": matvec_residual,
    "rmsnorm": rmsnorm,
    "rope": rope,
    "attn_scores": attn_scores,
    "softmax_rows": softmax_rows,
    "attn_mix": attn_mix,
    "causal_softmax": causal_softmax,
    "silu_mul": silu_mul,
    "rmsnorm_heads": rmsnorm_heads,
    "dot": dot,
    "matmul": matmul,
}


def warmup() -> float:
    """Call every kernel once on tiny float32 inputs; return the seconds it took.

    The first call on a machine JIT-compiles everything (and writes Numba's on-disk
    cache, ``__pycache__`` next to this file or ``NUMBA_CACHE_DIR``); later processes
    only load the cache.  The inputs have the same types the engine passes (float32
    C-contiguous arrays of the same ndim, Python int/float scalars), and each public
    entry point compiles its serial and parallel bodies together, so no kernel call in
    a later run compiles anything as long as the engine keeps to those types.
    """
    t0 = time.perf_counter()
    f = np.float32
    W = np.zeros((3, 2), f)
    x = np.zeros(2, f)
    v = np.zeros(3, f)
    o = np.zeros(3, f)
    matvec(W, x, o)
    matvec_bias(W, x, v, o)
    matvec_residual(W, x, o, o)
    h = np.zeros((1, 4), f)
    rmsnorm(h, np.ones(4, f), 1e-6, np.zeros((1, 4), f))
    xh = np.zeros((1, 2, 4), f)  # (T, nh, hd)
    rope(xh, np.ones((1, 2), f), np.zeros((1, 2), f))
    rmsnorm_heads(xh, np.ones(4, f), 1e-6)
    q = np.zeros((2, 4), f)  # (nh, hd)
    kv = np.zeros((1, 3, 4), f)  # (nkv, S, hd)
    sc = np.zeros((2, 3), f)
    attn_scores(q, kv, 1, 0.5, sc)
    softmax_rows(sc, 1)
    attn_mix(sc, kv, 1, q)
    causal_softmax(np.zeros((2, 1, 3), f), 0)
    silu_mul(np.zeros((1, 4), f), np.zeros((1, 2), f))
    dot(x, x)
    matmul(W, np.zeros((2, 5), f), np.zeros((3, 5), f))
    return time.perf_counter() - t0


def specializations() -> dict[str, int]:
    """Number of compiled type specializations per public kernel (1 after warmup;
    a larger number means some call passed other argument types and was recompiled)."""
    return {name: len(k.signatures) for name, k in _PUBLIC.items()}
