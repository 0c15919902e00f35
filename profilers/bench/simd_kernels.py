"""Numba kernels for `aios compare dot|matmul` (float32, CPU): a dot product and a blocked
matrix multiply, written the way the engine's kernels are (`engines.simd.kernels`: the same JIT
flags, serial and parallel bodies picked by the amount of work). The engine never calls them,
so they live here and only `aios compare` compiles them.

    dot(a, b) -> float                  sum a * b in float32,  a, b (n,)
    matmul(A, B, out)                   out = A @ B   A (M, K), B (K, N), out (M, N), any sizes
                                        (allocates its packed copy of B per call)

All array arguments must be float32 and C-contiguous (see `engines.simd.kernels`).

The few-row matmul calls the engine's `engines.simd.kernels.weighted_row_sum`. Numba caches a
kernel with its callees built in and checks only this file's date, so after an edit of that
function delete this folder's ``__pycache__/simd_kernels.*.nb[ic]`` (or set a fresh
``NUMBA_CACHE_DIR``), or matmul keeps running the old build.
"""

from __future__ import annotations

import time

import numpy as np
from numba import prange

from engines.simd.kernels import jit, weighted_row_sum

__all__ = ["dot", "matmul", "warmup", "specializations"]

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


# ----------------------------------------------------------------------------- dot


@jit()
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


@jit(parallel=True)
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


@jit()
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
# is packed too.  Edges (M or N not a multiple of 4) use 1x4 and 4x1 strips (one kernel,
# _mm_strip, with A and B in either role) and 1x1 kernels with the same k loop, so any
# size is handled without padding.
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


@jit()
def _mm_4x4(Ap, Bp, blk, i, j, kc, first, out):
    c00 = c01 = c02 = c03 = np.float32(0.0)
    c10 = c11 = c12 = c13 = np.float32(0.0)
    c20 = c21 = c22 = c23 = np.float32(0.0)
    c30 = c31 = c32 = c33 = np.float32(0.0)
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


@jit()
def _mm_strip(one, four, blk, r, s, kc, first, out4):
    """out4[u] = one[blk, r] . four[blk, s + u] for u < 4 (plus out4[u] unless first): a 1x4
    strip of out (one = Ap, four = Bp, out4 = out[i, j:j+4]) or a 4x1 strip (one = Bp, four = Ap,
    out4 = out[i:i+4, j]: x * y and y * x round alike)."""
    c0 = c1 = c2 = c3 = np.float32(0.0)
    for k in range(kc):
        x = one[blk, r, k]
        c0 += x * four[blk, s, k]
        c1 += x * four[blk, s + 1, k]
        c2 += x * four[blk, s + 2, k]
        c3 += x * four[blk, s + 3, k]
    if not first:
        c0 += out4[0]
        c1 += out4[1]
        c2 += out4[2]
        c3 += out4[3]
    out4[0] = c0
    out4[1] = c1
    out4[2] = c2
    out4[3] = c3


@jit()
def _mm_1x1(Ap, Bp, blk, i, j, kc, first, out):
    c = np.float32(0.0)
    for k in range(kc):
        c += Ap[blk, i, k] * Bp[blk, j, k]
    if not first:
        c += out[i, j]
    out[i, j] = c


@jit()
def _mm_tile(Ap, Bp, K, kc, i0, i1, j0, j1, out):
    """out[i0:i1, j0:j1] = A[i0:i1] @ B[:, j0:j1] from the packed operands."""
    for blk in range(Bp.shape[0]):
        kb = min(kc, K - blk * kc)
        first = blk == 0
        i = i0
        while i < i1:
            four_rows = i + 4 <= i1  # else the 1-row edge
            j = j0
            while j + 4 <= j1:
                if four_rows:
                    _mm_4x4(Ap, Bp, blk, i, j, kb, first, out)
                else:
                    _mm_strip(Ap, Bp, blk, i, j, kb, first, out[i, j : j + 4])
                j += 4
            while j < j1:
                if four_rows:
                    _mm_strip(Bp, Ap, blk, j, i, kb, first, out[i : i + 4, j])
                else:
                    _mm_1x1(Ap, Bp, blk, i, j, kb, first, out)
                j += 1
            i += 4 if four_rows else 1


@jit()
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


@jit()
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


@jit()
def _mm_rows(A, B, out, j0, j1):
    """out[:, j0:j1] = A @ B[:, j0:j1] for few rows (M < _MM_ROWS_M), without packing: row by
    row, the engine's attention mix (`engines.simd.kernels.weighted_row_sum`, vectorized along j,
    four rows of B per pass over the L1-resident output span). Reads B in place, so a 1 x K x N
    product costs one pass over B instead of a transpose of it."""
    for i in range(A.shape[0]):
        weighted_row_sum(A[i], B, A.shape[1], j0, out[i, j0:j1])


@jit()
def _mm_kblock(K):
    """K block length: K itself up to _MM_KC, else equal blocks rounded up to 8."""
    if K <= _MM_KC:
        return max(K, 1)
    nkb = (K + _MM_KC - 1) // _MM_KC
    kc = (K + nkb - 1) // nkb
    return (kc + 7) // 8 * 8


@jit(parallel=True)
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


@jit()
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


@jit()
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


_PUBLIC = {"dot": dot, "matmul": matmul}


def warmup() -> float:
    """Compile (or load from Numba's cache) both kernels on tiny float32 inputs of the types
    `aios compare` passes; return the seconds it took."""
    t0 = time.perf_counter()
    x = np.zeros(2, np.float32)
    dot(x, x)
    matmul(np.zeros((3, 2), np.float32), np.zeros((2, 5), np.float32), np.zeros((3, 5), np.float32))
    return time.perf_counter() - t0


def specializations() -> dict[str, int]:
    """Compiled type specializations per kernel (1 after warmup)."""
    return {name: len(k.signatures) for name, k in _PUBLIC.items()}
