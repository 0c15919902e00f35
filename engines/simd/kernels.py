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

Only what the engine runs lives here, so its warm-up compiles nothing else; the ``dot``
and ``matmul`` kernels of ``aios compare`` are in ``profilers.bench.simd_kernels`` (its
few-row matmul calls attn_mix's per-head body, :func:`weighted_row_sum`).

``out`` of ``attn_scores`` and ``p`` of ``attn_mix`` may have more than ``n`` columns
(a preallocated ``(nh, S_max)`` buffer): only the first ``n`` are read/written, so the
engine can pass the whole buffer instead of a (non-contiguous) view.

Parallelism.  A ``parallel=True`` call costs ~2-3 us of thread-pool fork/join on top of
the ~0.3-1 us Numba dispatch (tens of us when the pool has gone to sleep between
calls), which is more than the whole work of e.g. a one-token rmsnorm.  So each kernel
with a parallel body also has a serial body, and the public entry point (itself a
serial ``njit`` function) picks one by the amount of work (``PAR_MIN_MATVEC`` and the
``_PAR_MIN_*`` below, crossovers measured back-to-back on the 2-core dev box).  Both
bodies are compiled together the first time the entry point is compiled, so
:func:`warmup` on tiny inputs compiles (or loads from cache) everything.

Where the two bodies are the same loop, it is written once, with ``prange`` (a plain ``range``
when Numba compiles without ``parallel``), and :func:`_par_and_ser` makes ``_x_par`` and ``_x_ser``
of ``_x_body``: each from its own copy of the Python function under its own name, because Numba
keys its on-disk cache by the function (file, qualified name) and the argument types, not by the
dispatcher's options -- two dispatchers over one function would share one cache entry, and the
serial one would load the parallel build from it and fork threads after all.  rope,
rmsnorm_heads, causal_softmax and silu_mul keep a serial loop of their own (nested loops, no
column chunks) beside the parallel one's single flattened ``prange``.

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
from types import FunctionType, SimpleNamespace

import numpy as np
from numba import njit, prange

__all__ = [
    "matvec",
    "matvec_bias",
    "matvec_residual",
    "matmul_rows",
    "rmsnorm",
    "rope",
    "attn_scores",
    "softmax_rows",
    "attn_mix",
    "causal_softmax",
    "silu_mul",
    "rmsnorm_heads",
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
PAR_MIN_MATVEC = 96 * 1024  # O*I multiply-adds; Qwen decode shapes are all >= 800K (qkernels' too)
_PAR_MIN_ROWS = 16 * 1024  # T*H elements for rmsnorm / rope / rmsnorm_heads
_PAR_MIN_ATTN = 96 * 1024  # nh*n*hd multiply-adds for attn_scores / attn_mix
_PAR_MIN_EXP = 4 * 1024  # exp() calls for softmax / silu (libm expf, not vectorized)

# Column chunk for parallel silu_mul (so a single decode row still splits over cores).
_SILU_CHUNK = 1024


def jit(parallel: bool = False, fastmath: bool = True):
    """The decorator of every kernel (here and in ``profilers.bench.simd_kernels``): cached on
    disk, fast-math without nnan/ninf (``fastmath=False``: nor reassociation or fused multiply-adds,
    for kernels whose results must not depend on where they were inlined), GIL released."""
    return njit(cache=True, fastmath=_FASTMATH if fastmath else _FASTMATH - {"reassoc", "contract"}, parallel=parallel,
                nogil=True)


def _par_and_ser(body):
    """(``_x_par``, ``_x_ser``): the parallel and the serial kernel of ``_x_body``, a loop written
    with ``prange``, each compiled from its own copy of the function under its own name (one
    cache entry each; see the module docstring)."""
    base = body.__name__.removesuffix("_body")

    def named(suffix: str):
        f = FunctionType(body.__code__, body.__globals__, base + suffix, body.__defaults__, body.__closure__)
        f.__qualname__ = base + suffix
        f.__doc__ = body.__doc__
        return f

    return jit(parallel=True)(named("_par")), jit()(named("_ser"))


# --------------------------------------------------------------------------- matvec


@jit()
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
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = np.float32(0.0)
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


@jit()
def _mv_row(W, x, o, add, use_add, out):
    wo = W[o]
    acc = np.float32(0.0)
    for i in range(W.shape[1]):
        acc += wo[i] * x[i]
    if use_add:
        acc += add[o]
    out[o] = acc


def _mv_body(W, x, add, use_add, out):
    O = W.shape[0]
    nb = O // _ROWS
    for b in prange(nb):
        _mv_block(W, x, b * _ROWS, add, use_add, out)
    for o in range(nb * _ROWS, O):
        _mv_row(W, x, o, add, use_add, out)


_mv_par, _mv_ser = _par_and_ser(_mv_body)


@jit()
def _mv(W, x, add, use_add, out):
    O, I = W.shape
    if x.shape[0] != I or out.shape[0] != O or (use_add and add.shape[0] != O):
        raise ValueError("matvec: shape mismatch (W (O, I), x (I,), out (O,))")
    if O * I >= PAR_MIN_MATVEC:
        _mv_par(W, x, add, use_add, out)
    else:
        _mv_ser(W, x, add, use_add, out)


def _mm_rows_body(W, X, out):
    O = W.shape[0]
    nb = O // _ROWS
    for b in prange(nb):
        for t in range(X.shape[0]):  # the block's rows stay in cache while every input passes
            _mv_block(W, X[t], b * _ROWS, out[t], False, out[t])
    for t in range(X.shape[0]):
        for o in range(nb * _ROWS, O):
            _mv_row(W, X[t], o, out[t], False, out[t])


_mm_rows_par, _mm_rows_ser = _par_and_ser(_mm_rows_body)


@jit()
def matmul_rows(W, X, out):
    """out[t] = W @ X[t] for a few inputs (a speculative verify, a short prompt): matvec's blocks,
    each block of W read from memory once for all T inputs. W (O, I), X (T, I), out (T, O)."""
    O, I = W.shape
    T = X.shape[0]
    if X.shape[1] != I or out.shape[0] != T or out.shape[1] != O:
        raise ValueError("matmul_rows: shape mismatch (W (O, I), X (T, I), out (T, O))")
    if O * I >= PAR_MIN_MATVEC:
        _mm_rows_par(W, X, out)
    else:
        _mm_rows_ser(W, X, out)


@jit()
def matvec(W, x, out):
    """out[o] = sum_i W[o, i] * x[i]; W (O, I), x (I,), out (O,)."""
    _mv(W, x, out, False, out)


@jit()
def matvec_bias(W, x, b, out):
    """out = W @ x + b."""
    _mv(W, x, b, True, out)


@jit()
def matvec_residual(W, x, resid, out):
    """out = resid + W @ x.  ``resid`` may be the same array as ``out``."""
    _mv(W, x, resid, True, out)


# -------------------------------------------------------------------------- rmsnorm


@jit()
def _rms_scale(xr, eps):
    H = xr.shape[0]
    ss = np.float32(0.0)
    for j in range(H):
        v = xr[j]
        ss += v * v
    return np.float32(1.0) / np.sqrt(ss / np.float32(H) + eps)


@jit()
def _rmsnorm_row(xr, w, eps, outr):
    inv = _rms_scale(xr, eps)  # before any write: outr may be xr
    for j in range(xr.shape[0]):
        outr[j] = (xr[j] * inv) * w[j]


def _rmsnorm_body(x, w, eps, out):
    for t in prange(x.shape[0]):
        _rmsnorm_row(x[t], w, eps, out[t])


_rmsnorm_par, _rmsnorm_ser = _par_and_ser(_rmsnorm_body)


@jit()
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


@jit(parallel=True)
def _rmsnorm_heads_par(x, w, eps):
    T, nh, _ = x.shape
    for k in prange(T * nh):
        r = x[k // nh, k % nh]
        _rmsnorm_row(r, w, eps, r)


@jit()
def _rmsnorm_heads_ser(x, w, eps):
    T, nh, _ = x.shape
    for t in range(T):
        for h in range(nh):
            r = x[t, h]
            _rmsnorm_row(r, w, eps, r)


@jit()
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


@jit()
def _rope_row(xr, c, s):
    half = c.shape[0]
    for j in range(half):
        x1 = xr[j]
        x2 = xr[j + half]
        xr[j] = x1 * c[j] - x2 * s[j]
        xr[j + half] = x2 * c[j] + x1 * s[j]


@jit(parallel=True)
def _rope_par(x, cos, sin):
    T, nh, _ = x.shape
    for k in prange(T * nh):
        t = k // nh
        _rope_row(x[t, k % nh], cos[t], sin[t])


@jit()
def _rope_ser(x, cos, sin):
    T, nh, _ = x.shape
    for t in range(T):
        c = cos[t]
        s = sin[t]
        for h in range(nh):
            _rope_row(x[t, h], c, s)


@jit()
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


@jit()
def _scores_head(qh, kc, n, scale, oh):
    hd = qh.shape[0]
    for t in range(n):
        kt = kc[t]
        acc = np.float32(0.0)
        for d in range(hd):
            acc += qh[d] * kt[d]
        oh[t] = acc * scale


def _attn_scores_body(q, k_cache, n, scale, out):
    nh = q.shape[0]
    g = nh // k_cache.shape[0]
    for h in prange(nh):
        _scores_head(q[h], k_cache[h // g], n, scale, out[h])


_attn_scores_par, _attn_scores_ser = _par_and_ser(_attn_scores_body)


@jit()
def _gqa_ok(nh, hd, cache, n, scores):
    """Whether nh heads of width hd can read the first n positions of cache (nkv, S, hd), nh a
    multiple of nkv (GQA), with scores (nh, >=n) the attention weights."""
    nkv, S, hdc = cache.shape
    return (hdc == hd and nkv > 0 and nh % nkv == 0 and 0 <= n <= S
            and scores.shape[0] == nh and scores.shape[1] >= n)


@jit()
def attn_scores(q, k_cache, n, scale, out):
    """out[h, t] = scale * q[h] . k_cache[h // (nh // nkv), t] for t < n (GQA).

    q (nh, hd), k_cache (nkv, S, hd) with the first n positions valid, out (nh, >=n).
    """
    nh, hd = q.shape
    if not _gqa_ok(nh, hd, k_cache, n, out):
        raise ValueError("attn_scores: q (nh, hd), k_cache (nkv, S, hd) with nh % nkv == 0, 0 <= n <= S, out (nh, >=n)")
    sc = np.float32(scale)
    if nh > 1 and nh * n * hd >= _PAR_MIN_ATTN:
        _attn_scores_par(q, k_cache, n, sc, out)
    else:
        _attn_scores_ser(q, k_cache, n, sc, out)


@jit()
def weighted_row_sum(w, rows, n, j0, out):
    """out = sum_{t<n} w[t] * rows[t, j0 : j0 + m], m = out.shape[0]: a vector-matrix product that
    reads rows in place, vectorized along out (one head of attn_mix: the probabilities times the
    value rows; the few-row matmul of ``profilers.bench.simd_kernels``: a row of A times B's rows).

    Four rows per pass: one read-modify-write of out (in L1) per four rows.  (A cached kernel of
    another module that calls this one keeps the build it was cached with: Numba's cache does not
    see an edit here from there, so clear that module's cache after changing this function.)
    """
    m = out.shape[0]
    for j in range(m):
        out[j] = np.float32(0.0)
    t = 0
    while t + 4 <= n:
        w0 = w[t]
        w1 = w[t + 1]
        w2 = w[t + 2]
        w3 = w[t + 3]
        r0 = rows[t, j0 : j0 + m]
        r1 = rows[t + 1, j0 : j0 + m]
        r2 = rows[t + 2, j0 : j0 + m]
        r3 = rows[t + 3, j0 : j0 + m]
        for j in range(m):
            out[j] += (w0 * r0[j] + w1 * r1[j]) + (w2 * r2[j] + w3 * r3[j])
        t += 4
    while t < n:
        wt = w[t]
        rt = rows[t, j0 : j0 + m]
        for j in range(m):
            out[j] += wt * rt[j]
        t += 1


def _attn_mix_body(p, v_cache, n, out):
    nh = out.shape[0]
    g = nh // v_cache.shape[0]
    for h in prange(nh):
        weighted_row_sum(p[h], v_cache[h // g], n, 0, out[h])


_attn_mix_par, _attn_mix_ser = _par_and_ser(_attn_mix_body)


@jit()
def attn_mix(p, v_cache, n, out):
    """out[h] = sum_{t<n} p[h, t] * v_cache[h // (nh // nkv), t] (GQA).

    p (nh, >=n), v_cache (nkv, S, hd), out (nh, hd).
    """
    nh, hd = out.shape
    if not _gqa_ok(nh, hd, v_cache, n, p):
        raise ValueError("attn_mix: out (nh, hd), v_cache (nkv, S, hd) with nh % nkv == 0, 0 <= n <= S, p (nh, >=n)")
    if nh > 1 and nh * n * hd >= _PAR_MIN_ATTN:
        _attn_mix_par(p, v_cache, n, out)
    else:
        _attn_mix_ser(p, v_cache, n, out)


# -------------------------------------------------------------------------- softmax


@jit()
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


def _softmax_rows_body(x, n):
    for i in prange(x.shape[0]):
        _softmax_row(x[i], n)


_softmax_rows_par, _softmax_rows_ser = _par_and_ser(_softmax_rows_body)


@jit()
def softmax_rows(x, n):
    """In-place softmax over the first n columns of each row of x (R, C)."""
    R, C = x.shape
    if n < 0 or n > C:
        raise ValueError("softmax_rows: need 0 <= n <= x.shape[1]")
    if R > 1 and R * n >= _PAR_MIN_EXP:
        _softmax_rows_par(x, n)
    else:
        _softmax_rows_ser(x, n)


@jit()
def _causal_row(r, valid):
    _softmax_row(r, valid)
    for j in range(valid, r.shape[0]):
        r[j] = np.float32(0.0)


@jit(parallel=True)
def _causal_softmax_par(s, past):
    nh, T, S = s.shape
    for k in prange(nh * T):
        i = k % T
        _causal_row(s[k // T, i], min(past + i + 1, S))


@jit()
def _causal_softmax_ser(s, past):
    nh, T, S = s.shape
    for h in range(nh):
        for i in range(T):
            _causal_row(s[h, i], min(past + i + 1, S))


@jit()
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


@jit()
def _silu_mul_span(g, u, o):
    for j in range(o.shape[0]):
        gj = g[j]
        o[j] = gj / (np.float32(1.0) + np.exp(-gj)) * u[j]


@jit(parallel=True)
def _silu_mul_par(gu, out):
    T, I = out.shape
    nc = (I + _SILU_CHUNK - 1) // _SILU_CHUNK
    for k in prange(T * nc):
        t = k // nc
        c0 = (k % nc) * _SILU_CHUNK
        c1 = min(c0 + _SILU_CHUNK, I)
        row = gu[t]
        _silu_mul_span(row[c0:c1], row[I + c0 : I + c1], out[t, c0:c1])


@jit()
def _silu_mul_ser(gu, out):
    T, I = out.shape
    for t in range(T):
        row = gu[t]
        _silu_mul_span(row[:I], row[I:], out[t])


@jit()
def silu_mul(gu, out):
    """out = silu(gate) * up with gu (T, 2I) = [gate | up] and out (T, I)."""
    T, I = out.shape
    if gu.shape[0] != T or gu.shape[1] != 2 * I:
        raise ValueError("silu_mul: gu (T, 2I), out (T, I)")
    if T * I >= _PAR_MIN_EXP:
        _silu_mul_par(gu, out)
    else:
        _silu_mul_ser(gu, out)


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
    "matmul_rows": matmul_rows,
    "rmsnorm": rmsnorm,
    "rope": rope,
    "attn_scores": attn_scores,
    "softmax_rows": softmax_rows,
    "attn_mix": attn_mix,
    "causal_softmax": causal_softmax,
    "silu_mul": silu_mul,
    "rmsnorm_heads": rmsnorm_heads,
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
    matmul_rows(W, np.zeros((2, 2), f), np.zeros((2, 3), f))
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
    return time.perf_counter() - t0


def specializations() -> dict[str, int]:
    """Number of compiled type specializations per public kernel (1 after warmup;
    a larger number means some call passed other argument types and was recompiled)."""
    return {name: len(k.signatures) for name, k in _PUBLIC.items()}
