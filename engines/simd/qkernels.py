"""Numba kernels over quantized weights (Q8_0, Q4_0, Q4_1), for the ``simd`` engine.

The bits are GGUF's (see `engines.quant.formats`); only their order in memory changes. When the model
loads, each matrix is repacked from GGUF's row-major blocks into *tiles* of R = 64 rows, with the
bytes of a row's neighbouring weights side by side:

    q  (tiles, blocks, 16, R, 2) int8    Q8_0: q[t, b, p, r, e] = weight 2p+e of row r's block b
       (tiles, blocks,  8, R, 2) uint8   Q4_0/Q4_1: byte j = 2p+e of the block as GGUF stores it,
                                         weight j in its low nibble and weight j+16 in its high
    d  (tiles, blocks, R)        uint16  the fp16 scale of each row's block, as stored
    m  (tiles, blocks, R)        uint16  Q4_1 only: the fp16 minimum

so the bytes are exactly GGUF's (plus zero rows padding the last tile). Why: with the R rows of
a tile side by side, one SIMD register holds several rows' weights for the same inputs, the
per-block scale multiplies a whole register of rows at once, and no horizontal sum is ever
needed inside the loop. In GGUF's own order each 32-weight block ends in a horizontal sum before
its scale can be applied; measured on the dev VM that order ran at ~1 G weights/s per core. The
pairs (e) are what x86's multiply-and-add-pairs instructions take (`engines.simd.intrinsics`).

Two decode matvecs read these tiles:

- **integer** (``qmatvec_int``, x86-64 with AVX2; the engine's default there). The input is
  quantized to Q8_0 as llama.cpp quantizes it for its own dot products (``quantize_input``:
  per 32-element block, xq = round(x / dx) in int8, dx = max|x| / 127 held as fp16). Then each
  block's dot product is an integer sum, exact, and the result is W @ x^ to float32 rounding of
  the per-block scaling, x^ being the Q8_0-dequantized input. Q8_0 uses ``vpmaddwd``; the 4-bit formats ``vpmaddubsw`` on the nibbles, into
  int16 sums that wrap: sum_j q_j xq_j is up to 32*15*127 and does not fit int16, but
  sum_j (q_j - 8) xq_j, which is the one wanted, is at most 32*8*127 = 32512, so it is recovered
  exactly from the wrapped sum by subtracting 8 sum_j xq_j modulo 2^16.
- **float** (``qmatvec``, every machine; the reference, and the engine's choice without AVX2 or
  with ``AIOS_QDOT=float``). The weights are widened to float32 in registers and multiplied into
  the float32 input, a float32 sum per block, then scaled: the float32 dot product with the
  `gguf`-dequantized weights, to float32 rounding. The 4-bit formats use

      sum_j w_j x_j = d * sum_j q_j x_j  -  8d * sum_j x_j        (Q4_0)
                    = d * sum_j q_j x_j  +  m  * sum_j x_j        (Q4_1)

  with the block sums of x taken once per call, not once per row.

Neither ever expands the weights in memory. A row whose length is not a multiple of 32 was padded
with zero weights (`engines.quant.formats.quantize`); the kernels read the input through a zero-padded
copy, so the padding meets zeros.

A short pass of several tokens (a speculative verify, a short prompt) runs ``qmatmul``: each
tile is read once for all the tokens, the integer steps take four inputs a weight load, and
each token's row is the one-input matvec's result bit for bit. A long prefill dequantizes a
few tiles at a time (``dequant_tiles``), transposed, into a float32 buffer that stays in cache
and hands it to BLAS; an embedding lookup dequantizes one row (``dequant_row``). fp16 scales become float32 with integer operations on their bits, a tile at a
time (Numba has no float16 on the CPU).

Conventions are those of ``engines.simd.kernels``: C-contiguous arrays, ``out`` given by the
caller, a parallel and a serial body chosen by the amount of work.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..quant.formats import format_info
from .intrinsics import (HAVE_AVX2, HAVE_F16, fma_pairs_q4, fma_pairs_q8, half_to_float8, madd_nibbles_u4,
                         madd_nibbles_u4_x1, madd_nibbles_u4_x2, madd_nibbles_u4_x4, madd_pairs_i8, madd_pairs_i8_x1,
                         madd_pairs_i8_x2, madd_pairs_i8_x4, round_to_half)
from .kernels import PAR_MIN_MATVEC
from .kernels import jit as _jit


def jit(parallel: bool = False):
    """Every kernel here compiles without fast-math: a float expression then rounds the same
    wherever Numba inlines it, so the several-input matmul (``qmatmul``) equals the one-input
    matvec bit for bit, and a speculative verify sees exactly the logits decode would. The hot
    loops are integer or explicit IR, so nothing measurable is lost."""
    return _jit(parallel=parallel, fastmath=False)

R = 64  # rows per tile
# parallel matvec: the tiles split into this many runs (a run shares its scratch arrays), several
# per thread for balance; a constant, since a kernel reading the thread count cannot be cached
_CHUNKS = 32
Q8_0, Q4_0, Q4_1 = 0, 1, 2  # format codes the kernels take
CODES = {"Q8_0": Q8_0, "Q4_0": Q4_0, "Q4_1": Q4_1}


def xpad_size(blocks: int) -> int:
    """float32 scratch a matvec over `blocks` blocks a row needs: the padded input, then two
    numbers a block."""
    return blocks * 34


@jit()
def _scales_bits(h, t, out):
    """``_scales`` where fp16 is no instruction: integer ops on the bits
    (a vectorized loop, no table, no branch): sign, exponent rebased from 15 to 127, mantissa
    shifted up. Subnormal and zero scales (exponent 0) are then redone as m * 2^-24; an exponent
    of 31 (inf, NaN) becomes inf or NaN as it should."""
    nb = h.shape[1]
    bits = out.view(np.int32)
    for b in range(nb):
        for r in range(R):
            v = np.int32(h[t, b, r])
            e = (v >> 10) & 31
            e32 = np.int32(255) if e == 31 else e + np.int32(112)
            bits[b, r] = ((v & 0x8000) << 16) | (e32 << 23) | ((v & 1023) << 13)
    for b in range(nb):
        for r in range(R):
            v = np.int32(h[t, b, r])
            if (v >> 10) & 31 == 0:
                sub = np.float32(v & 1023) * np.float32(2.0 ** -24)
                out[b, r] = -sub if v & 0x8000 else sub


@jit()
def _scales(h, t, out):
    """out (nb, R) float32 = the fp16 bits h[t] (nb, R) as float32, eight at a time
    (`engines.simd.intrinsics.half_to_float8`: one F16C instruction on x86; measured 13x faster
    than the integer version, whose cost per tile had been a third of a Q8_0 matvec's)."""
    if not HAVE_F16:  # a global, so a constant to Numba: the other branch is never compiled
        _scales_bits(h, t, out)
        return
    nb = h.shape[1]
    hf = h.reshape(-1)
    of = out.reshape(-1)
    base = t * nb * R
    for i in range(0, nb * R, 8):
        half_to_float8(hf, base + i, of, i)


@jit()
def _tile_scales(d, m, code, t, ds, ms):
    """Tile t's scales as float32 into ds (nb, R), and for Q4_1 its minimums into ms."""
    _scales(d, t, ds)
    if code == Q4_1:
        _scales(m, t, ms)


# ------------------------------------------------------------------ float32 input (reference)

@jit()
def _tile_q8(qf, nb, t, x, s2, ds, tacc):
    """tacc (R,) += tile t of a Q8_0 matrix (qf: its bytes, flat) @ x, with two float32 sums a row
    (the even and the odd inputs of its pairs), added at the end of each block."""
    for b in range(nb):
        s2[:] = 0
        base = (t * nb + b) * 32 * R
        for p in range(16):
            x0, x1 = x[b * 32 + 2 * p], x[b * 32 + 2 * p + 1]
            off = base + 2 * p * R
            for lane in range(R // 8):
                fma_pairs_q8(qf, off + lane * 16, x0, x1, s2, lane * 16)
        for r in range(R):
            tacc[r] += ds[b, r] * (s2[2 * r] + s2[2 * r + 1])


@jit()
def _tile_q4(qf, nb, t, has_min, x, xs, s2, ds, ms, tacc):
    """The same for Q4_0 (has_min False; ms unused) and Q4_1."""
    for b in range(nb):
        s2[:] = 0
        base = (t * nb + b) * 16 * R
        for p in range(8):
            i = b * 32 + 2 * p
            off = base + 2 * p * R
            for lane in range(R // 16):
                fma_pairs_q4(qf, off + lane * 32, x[i], x[i + 1], x[i + 16], x[i + 17], s2, lane * 32)
        if has_min:
            for r in range(R):
                tacc[r] += ds[b, r] * (s2[2 * r] + s2[2 * r + 1]) + ms[b, r] * xs[b]
        else:
            x8 = np.float32(8.0) * xs[b]
            for r in range(R):
                tacc[r] += ds[b, r] * ((s2[2 * r] + s2[2 * r + 1]) - x8)


# ------------------------------------------------------------------ int8 input (AVX2)

@jit()
def quantize_input(x, xpad, xq):
    """x (n,) float32 -> Q8_0 blocks, exactly as `gguf.quants` (and llama.cpp) quantize to Q8_0:
    per 32-element block dx = max|x| / 127, xq = round(x / dx) half away from zero (from dx in
    float32), and dx then stored as fp16. xq goes to xq (blocks*32,) int8; in xpad, dx (as
    float32) to xpad[blocks*32 + b] and the block sum of xq to xpad[blocks*33 + b] (exact in
    float32). Elements past n are zero."""
    nb = xq.shape[0] // 32
    n = x.shape[0]
    xp = xpad[: nb * 32]
    xp[:n] = x
    xp[n:] = 0
    for b in range(nb):
        amax = np.float32(0.0)
        for j in range(32):
            amax = max(amax, abs(xp[b * 32 + j]))
        dx = amax / np.float32(127.0)
        inv = np.float32(1.0) / dx if dx > 0 else np.float32(0.0)  # from dx before its fp16 rounding
        s = 0
        for j in range(32):
            v = xp[b * 32 + j] * inv
            iv = np.int32(np.floor(abs(v) + np.float32(0.5)))
            iv = -iv if v < 0 else iv
            xq[b * 32 + j] = np.int8(iv)
            s += iv
        xpad[nb * 32 + b] = round_to_half(dx)  # stored as fp16, as the block_q8_0 it stands for
        xpad[nb * 33 + b] = np.float32(s)


@jit()
def _tile_q8_int(qf, nb, t, xq, dx, iacc, ds, tacc):
    for b in range(nb):
        iacc[:] = 0
        base = (t * nb + b) * 32 * R
        for p in range(16):
            x01 = (np.int32(xq[b * 32 + 2 * p]) & 0xFFFF) | (np.int32(xq[b * 32 + 2 * p + 1]) << 16)
            off = base + p * 2 * R
            for lane in range(R // 8):
                madd_pairs_i8(qf, off + lane * 16, x01, iacc, lane * 8)
        s = dx[b]
        for r in range(R):
            tacc[r] += (ds[b, r] * s) * np.float32(iacc[r])


@jit()
def _tile_q4_int(qf, nb, t, has_min, xq, dx, xs, acc, ds, ms, tacc):
    for b in range(nb):
        acc[:] = 0
        base = (t * nb + b) * 16 * R
        for p in range(8):
            i = b * 32 + 2 * p
            xl = (np.int32(xq[i]) & 0xFF) | ((np.int32(xq[i + 1]) & 0xFF) << 8)
            xh = (np.int32(xq[i + 16]) & 0xFF) | ((np.int32(xq[i + 17]) & 0xFF) << 8)
            off = base + p * 2 * R
            for lane in range(R // 16):
                madd_nibbles_u4(qf, off + lane * 32, xl, xh, acc, lane * 16)
        s = dx[b]
        sq = np.int32(xs[b])  # sum of the block's xq
        x8 = np.int16(8 * sq)
        if has_min:  # w = d q + m: d dx (D + 8 sum xq) + m dx sum xq
            for r in range(R):
                D = np.float32(np.int16(acc[r] - x8))
                tacc[r] += (ds[b, r] * s) * (D + np.float32(8 * sq)) + (ms[b, r] * s) * np.float32(sq)
        else:  # w = d (q - 8): d dx D
            for r in range(R):
                tacc[r] += (ds[b, r] * s) * np.float32(np.int16(acc[r] - x8))


# ------------------------------------------------------------------ the matvec, either input

@jit()
def _tiles(q, d, m, code, x, xq, dx, xs, int8_input, t0, t1, out):
    """out[t0*R : t1*R] = tiles t0..t1-1 @ the input: float32 x (xs: its block sums), or, with
    int8_input, its Q8_0 blocks xq and their scales dx (xs: the block sums of xq). One set of
    scratch arrays (allocated here, once per call and thread: an allocation per tile inside a
    parallel loop serialized the threads on the allocator)."""
    nb = q.shape[1]
    qf = q.reshape(-1)
    # a block's sums a row, in one buffer (a call takes one input's path): float32 input, the
    # even- and the odd-input sums; int8 input, Q8_0's int32 sum or the 4-bit formats' wrapping int16
    s2 = np.empty(2 * R, np.float32)
    iacc = s2.view(np.int32)[:R]
    acc = s2.view(np.int16)[:R]
    tacc = np.empty(R, np.float32)
    ds = np.empty((nb, R), np.float32)
    ms = np.empty((nb, R), np.float32)
    for t in range(t0, t1):
        _tile_scales(d, m, code, t, ds, ms)
        tacc[:] = 0
        # HAVE_AVX2 is a global, so a constant to Numba: without AVX2 the int8 steps are never
        # compiled (Numba compiles every branch it cannot rule out)
        if int8_input and HAVE_AVX2:
            if code == Q8_0:
                _tile_q8_int(qf, nb, t, xq, dx, iacc, ds, tacc)
            else:
                _tile_q4_int(qf, nb, t, code == Q4_1, xq, dx, xs, acc, ds, ms, tacc)
        elif code == Q8_0:
            _tile_q8(qf, nb, t, x, s2, ds, tacc)
        else:
            _tile_q4(qf, nb, t, code == Q4_1, x, xs, s2, ds, ms, tacc)
        out[t * R:(t + 1) * R] = tacc


@jit(parallel=True)
def _qmv_par(q, d, m, code, x, xq, dx, xs, int8_input, out):
    nt = q.shape[0]
    chunks = min(nt, _CHUNKS)
    per = -(-nt // chunks)
    for c in prange(chunks):
        _tiles(q, d, m, code, x, xq, dx, xs, int8_input, c * per, min(nt, (c + 1) * per), out)


@jit()
def _qmv_ser(q, d, m, code, x, xq, dx, xs, int8_input, out):
    _tiles(q, d, m, code, x, xq, dx, xs, int8_input, 0, q.shape[0], out)


@jit()
def _check(q, x, xpad, out, add, use_add, res):
    nt, nb = q.shape[0], q.shape[1]
    O = res.shape[0]
    if x.shape[0] > nb * 32 or xpad.shape[0] < nb * 34 or out.shape[0] < nt * R or O > nt * R \
            or (use_add and add.shape[0] != O):
        raise ValueError("qmatvec: shape mismatch")


@jit()
def _qmv(q, d, m, code, x, xq, dx, xs, int8_input, out, add, use_add, res):
    """res = the O true rows of out = W @ the input (see ``_tiles``), + add."""
    nt, nb = q.shape[0], q.shape[1]
    if nt * R * nb * 32 >= PAR_MIN_MATVEC:
        _qmv_par(q, d, m, code, x, xq, dx, xs, int8_input, out)
    else:
        _qmv_ser(q, d, m, code, x, xq, dx, xs, int8_input, out)
    O = res.shape[0]
    if use_add:
        for o in range(O):
            res[o] = out[o] + add[o]
    else:
        res[:] = out[:O]


@jit()
def qmatvec(q, d, m, code, x, xpad, out, add, use_add, res):
    """res = W @ x (+ add), W the tiled matrix (q, d, m) in format `code` with x.shape[0] columns;
    float32 input (see the module docstring).

    Scratch the caller gives: xpad float32 (``xpad_size(blocks)``); out float32 (tiles*R,) (the
    padded rows land there). res (O,) gets the O true rows; ``add`` may be ``res`` (a residual)."""
    _check(q, x, xpad, out, add, use_add, res)
    nb = q.shape[1]
    n = x.shape[0]
    xp = xpad[: nb * 32]
    xs = xpad[nb * 32: nb * 33]
    xp[:n] = x
    xp[n:] = 0
    if code != Q8_0:
        for b in range(nb):
            s = np.float32(0.0)
            for j in range(32):
                s += xp[b * 32 + j]
            xs[b] = s
    no_xq = xp[:0].view(np.int8)  # no int8 input (an empty view: nothing allocated)
    _qmv(q, d, m, code, xp, no_xq, xs, xs, False, out, add, use_add, res)


@jit()
def qmatvec_int(q, d, m, code, x, xpad, xq, out, add, use_add, res):
    """res = W @ x^ (+ add), x^ the int8-quantized input (see the module docstring); AVX2 only.
    Scratch as for ``qmatvec``, plus xq int8 (blocks*32,)."""
    if not HAVE_AVX2:  # a constant to Numba: the int8 steps are not compiled without AVX2
        raise ValueError("qmatvec_int needs AVX2: use qmatvec")
    _check(q, x, xpad, out, add, use_add, res)
    nb = q.shape[1]
    if xq.shape[0] < nb * 32:
        raise ValueError("qmatvec: shape mismatch")
    xqb = xq[: nb * 32]
    quantize_input(x, xpad, xqb)
    dx = xpad[nb * 32: nb * 33]
    xs = xpad[nb * 33: nb * 34]
    _qmv(q, d, m, code, xpad[: nb * 32], xqb, dx, xs, True, out, add, use_add, res)


# ------------------------------------------------------------------ several inputs, weights read once

@jit()
def _group_q8_int(qf, nb, t, PA, T, i0, n, DX, acc, ds, TACC):
    """TACC[:n] = tile t of a Q8_0 matrix @ inputs i0..i0+n-1 (n = 4, 2 or 1), the weights loaded
    once for the n; PA (blocks*16, T) int32: each input's int16 pairs, inputs side by side.
    Each input's sums run in ``_tile_q8_int``'s order."""
    TACC[:n] = 0
    for b in range(nb):
        acc[: n * R] = 0
        base = (t * nb + b) * 32 * R
        for p in range(16):
            off = base + p * 2 * R
            xo = (b * 16 + p) * T + i0
            for lane in range(R // 8):
                if n == 4:
                    madd_pairs_i8_x4(qf, off + lane * 16, PA, PA, xo, acc, lane * 8, R)
                elif n == 2:
                    madd_pairs_i8_x2(qf, off + lane * 16, PA, PA, xo, acc, lane * 8, R)
                else:
                    madd_pairs_i8_x1(qf, off + lane * 16, PA, PA, xo, acc, lane * 8, R)
        for j in range(n):
            s = DX[i0 + j, b]
            for r in range(R):
                TACC[j, r] += (ds[b, r] * s) * np.float32(acc[j * R + r])


@jit()
def _group_q4_int(qf, nb, t, has_min, PL, PH, T, i0, n, DX, XS, acc, ds, ms, TACC):
    """The same for Q4_0 and Q4_1 (``_tile_q4_int``'s sums); PL, PH (blocks*8, T) int32: each
    input's int8 pairs from a block's low and high halves."""
    TACC[:n] = 0
    for b in range(nb):
        acc[: n * R] = 0
        base = (t * nb + b) * 16 * R
        for p in range(8):
            off = base + p * 2 * R
            xo = (b * 8 + p) * T + i0
            for lane in range(R // 16):
                if n == 4:
                    madd_nibbles_u4_x4(qf, off + lane * 32, PL, PH, xo, acc, lane * 16, R)
                elif n == 2:
                    madd_nibbles_u4_x2(qf, off + lane * 32, PL, PH, xo, acc, lane * 16, R)
                else:
                    madd_nibbles_u4_x1(qf, off + lane * 32, PL, PH, xo, acc, lane * 16, R)
        for j in range(n):
            s = DX[i0 + j, b]
            sq = np.int32(XS[i0 + j, b])
            x8 = np.int16(8 * sq)
            if has_min:
                for r in range(R):
                    D = np.float32(np.int16(acc[j * R + r] - x8))
                    TACC[j, r] += (ds[b, r] * s) * (D + np.float32(8 * sq)) + (ms[b, r] * s) * np.float32(sq)
            else:
                for r in range(R):
                    TACC[j, r] += (ds[b, r] * s) * np.float32(np.int16(acc[j * R + r] - x8))


@jit()
def _tiles_rows(q, d, m, code, X, XQ, DX, XS, PA, PH, int8_input, t0, t1, OUT):
    """OUT[i, t0*R : t1*R] = tiles t0..t1-1 @ input i, for every row i of X (or, int8, of its
    Q8_0 blocks: scales DX, block sums XS, packed pairs PA and PH): each tile's scales are
    widened once and its bytes stay in cache while every input passes over them, the integer
    path four inputs a load. Row i's sums run in the order ``_tiles`` runs them for that input
    alone, so each row equals a one-input matvec bit for bit."""
    nb = q.shape[1]
    T = OUT.shape[0]
    qf = q.reshape(-1)
    s2 = np.empty(2 * R, np.float32)
    acc4 = np.empty(4 * R, np.int32)
    acc16 = acc4.view(np.int16)
    TACC = np.empty((4, R), np.float32)
    ds = np.empty((nb, R), np.float32)
    ms = np.empty((nb, R), np.float32)
    for t in range(t0, t1):
        _tile_scales(d, m, code, t, ds, ms)
        if int8_input and HAVE_AVX2:
            i0 = 0
            while i0 < T:
                n = 4 if T - i0 >= 4 else (2 if T - i0 >= 2 else 1)
                if code == Q8_0:
                    _group_q8_int(qf, nb, t, PA, T, i0, n, DX, acc4, ds, TACC)
                else:
                    _group_q4_int(qf, nb, t, code == Q4_1, PA, PH, T, i0, n, DX, XS, acc16, ds, ms, TACC)
                for j in range(n):
                    OUT[i0 + j, t * R:(t + 1) * R] = TACC[j]
                i0 += n
        else:
            tacc = TACC[0]
            for i in range(T):
                tacc[:] = 0
                if code == Q8_0:
                    _tile_q8(qf, nb, t, X[i], s2, ds, tacc)
                else:
                    _tile_q4(qf, nb, t, code == Q4_1, X[i], XS[i], s2, ds, ms, tacc)
                OUT[i, t * R:(t + 1) * R] = tacc


@jit(parallel=True)
def _qmm_par(q, d, m, code, X, XQ, DX, XS, PA, PH, int8_input, OUT):
    nt = q.shape[0]
    chunks = min(nt, _CHUNKS)
    per = -(-nt // chunks)
    for c in prange(chunks):
        _tiles_rows(q, d, m, code, X, XQ, DX, XS, PA, PH, int8_input, c * per, min(nt, (c + 1) * per), OUT)


@jit()
def qmatmul(q, d, m, code, X, int8_input, res):
    """res (T, O) = X (T, cols) @ W.T for the tiled matrix W: the weights read from memory once
    for all T inputs (a speculative verify, a short prefill), each row the one-input matvec's
    result bit for bit (``qmatvec``, or ``qmatvec_int`` with int8_input, AVX2 only).
    Allocates its scratch: it is called once a matrix a pass, not once a token."""
    nt, nb = q.shape[0], q.shape[1]
    T, n = X.shape[0], X.shape[1]
    O = res.shape[1]
    if n > nb * 32 or O > nt * R or res.shape[0] != T:
        raise ValueError("qmatmul: shape mismatch")
    if int8_input and not HAVE_AVX2:
        raise ValueError("qmatmul: int8 input needs AVX2")
    XP = np.empty((T, nb * 34), np.float32)  # per row: the padded input, then two numbers a block
    XQ = np.empty((T, nb * 32), np.int8)
    for i in range(T):
        if int8_input:
            quantize_input(X[i], XP[i], XQ[i])
        else:
            XP[i, :n] = X[i]
            XP[i, n:nb * 32] = 0
            if code != Q8_0:
                for b in range(nb):
                    s = np.float32(0.0)
                    for j in range(32):
                        s += XP[i, b * 32 + j]
                    XP[i, nb * 32 + b] = s
    OUT = np.empty((T, nt * R), np.float32)
    if int8_input:
        # each input's Q8_0 blocks packed as the integer steps take them, inputs side by side
        PA = np.empty(nb * 16 * T, np.int32)
        PH = np.empty(nb * 8 * T, np.int32)
        for i in range(T):
            xq = XQ[i]
            for b in range(nb):
                for p in range(16):
                    k = b * 32 + 2 * p
                    if code == Q8_0:
                        PA[(b * 16 + p) * T + i] = (np.int32(xq[k]) & 0xFFFF) | (np.int32(xq[k + 1]) << 16)
                for p in range(8):
                    k = b * 32 + 2 * p
                    if code != Q8_0:
                        PA[(b * 8 + p) * T + i] = (np.int32(xq[k]) & 0xFF) | ((np.int32(xq[k + 1]) & 0xFF) << 8)
                        PH[(b * 8 + p) * T + i] = (np.int32(xq[k + 16]) & 0xFF) | ((np.int32(xq[k + 17]) & 0xFF) << 8)
        DX = np.ascontiguousarray(XP[:, nb * 32: nb * 33])
        XS = np.ascontiguousarray(XP[:, nb * 33: nb * 34])
        _qmm_par(q, d, m, code, XP[:, : nb * 32], XQ, DX, XS, PA, PH, True, OUT)
    else:
        none = np.empty(0, np.int32)
        _qmm_par(q, d, m, code, XP[:, : nb * 32], XQ, XP[:, nb * 32: nb * 33], XP[:, nb * 32: nb * 33], none, none,
                 False, OUT)
    res[:, :] = OUT[:, :O]


@jit()
def _deq_tile(q, d, m, code, t, n, dst, c0, ds, ms):
    """dst[:n, c0 : c0 + R] = tile t's weights, transposed: input j down, the tile's rows across
    (contiguous in the row, so the loop over rows vectorizes)."""
    _tile_scales(d, m, code, t, ds, ms)
    for b in range((n + 31) // 32):
        lim = min(32, n - b * 32)
        if code == Q8_0:
            for j in range(lim):
                for r in range(R):
                    dst[b * 32 + j, c0 + r] = ds[b, r] * np.float32(q[t, b, j >> 1, r, j & 1])
        else:
            for r in range(R):
                ms[b, r] = ms[b, r] if code == Q4_1 else np.float32(-8.0) * ds[b, r]
            for j in range(min(lim, 16)):
                for r in range(R):
                    dst[b * 32 + j, c0 + r] = ds[b, r] * np.float32(q[t, b, j >> 1, r, j & 1] & 15) + ms[b, r]
            for j in range(16, lim):
                for r in range(R):
                    dst[b * 32 + j, c0 + r] = ds[b, r] * np.float32(q[t, b, (j - 16) >> 1, r, j & 1] >> 4) + ms[b, r]


@jit(parallel=True)
def dequant_tiles(q, d, m, code, t0, n, dst):
    """dst (n, k*R) = the weights of tiles t0 .. t0+k-1 transposed (W[rows].T, a prefill tile of
    rows, ready for x @ dst), float32."""
    nb = q.shape[1]
    for i in prange(dst.shape[1] // R):
        _deq_tile(q, d, m, code, t0 + i, n, dst, i * R, np.empty((nb, R), np.float32), np.empty((nb, R), np.float32))


@jit()
def dequant_row(q, d, m, code, row, n, dst):
    """dst (1, n) = the weights of one row (an embedding lookup)."""
    t, r = row // R, row % R
    nb = q.shape[1]
    ds = np.empty((nb, R), np.float32)
    ms = np.empty((nb, R), np.float32)
    _tile_scales(d, m, code, t, ds, ms)
    for b in range((n + 31) // 32):
        lim = min(32, n - b * 32)
        s = ds[b, r]
        if code == Q8_0:
            for j in range(lim):
                dst[0, b * 32 + j] = s * np.float32(q[t, b, j >> 1, r, j & 1])
        else:
            mn = ms[b, r] if code == Q4_1 else np.float32(-8.0) * s
            for j in range(lim):
                v = q[t, b, (j % 16) >> 1, r, j & 1]
                dst[0, b * 32 + j] = s * np.float32((v >> 4) if j >= 16 else (v & 15)) + mn


def warmup() -> None:
    """Compile every kernel here on tiny inputs, in the types the engine passes (the integer ones
    only where they run)."""
    x = np.zeros(40, np.float32)
    xpad = np.zeros(xpad_size(2), np.float32)
    xq = np.zeros(2 * 32, np.int8)
    out = np.zeros(R, np.float32)
    res = np.zeros(3, np.float32)
    d = np.zeros((1, 2, R), np.uint16)
    for code, q in ((Q8_0, np.zeros((1, 2, 16, R, 2), np.int8)), (Q4_0, np.zeros((1, 2, 8, R, 2), np.uint8)),
                    (Q4_1, np.zeros((1, 2, 8, R, 2), np.uint8))):
        for use_add in (False, True):
            qmatvec(q, d, d, code, x, xpad, out, res, use_add, res)
            if HAVE_AVX2:
                qmatvec_int(q, d, d, code, x, xpad, xq, out, res, use_add, res)
        for int8_input in ((False, True) if HAVE_AVX2 else (False,)):
            qmatmul(q, d, d, code, np.zeros((2, 40), np.float32), int8_input, np.zeros((2, 3), np.float32))
        dequant_tiles(q, d, d, code, 0, 40, np.zeros((40, R), np.float32))
        dequant_row(q, d, d, code, 1, 40, np.zeros((1, 40), np.float32))


# ------------------------------------------------------------------------- the tiled layout

class Tiled:
    """A quantized matrix in the kernels' tiled layout (see the module docstring)."""

    __slots__ = ("fmt", "code", "q", "d", "m", "rows", "cols")

    def __init__(self, blocks: np.ndarray, fmt: str, cols: int):
        """`blocks`: uint8 (O, row bytes), GGUF's rows of `fmt` blocks, for a matrix of `cols` columns."""
        O, row_bytes = blocks.shape
        bb = format_info(fmt).block_bytes
        nb = row_bytes // bb
        if nb * bb != row_bytes or nb * 32 < cols:
            raise ValueError(f"{fmt}: {row_bytes} bytes a row is not whole blocks for {cols} columns")
        self.fmt, self.code, self.rows, self.cols = fmt, CODES[fmt], O, cols
        nt = -(-O // R)
        b = np.zeros((nt * R, nb, bb), np.uint8)  # zero rows pad the last tile
        b[:O] = blocks.reshape(O, nb, bb)

        def tiles(a):  # (nt*R, nb) -> (nt, nb, R); (nt*R, nb, 2k) bytes -> (nt, nb, k, R, 2)
            if a.ndim == 2:
                return np.ascontiguousarray(a.reshape(nt, R, nb).transpose(0, 2, 1))
            return np.ascontiguousarray(a.reshape(nt, R, nb, a.shape[2] // 2, 2).transpose(0, 2, 3, 1, 4))

        self.d = tiles(np.ascontiguousarray(b[:, :, 0:2]).view(np.uint16)[..., 0])
        if fmt == "Q8_0":
            self.q = tiles(np.ascontiguousarray(b[:, :, 2:]).view(np.int8))
            self.m = self.d[:0]  # unused
        elif fmt == "Q4_0":
            self.q = tiles(np.ascontiguousarray(b[:, :, 2:]))
            self.m = self.d[:0]
        else:
            self.m = tiles(np.ascontiguousarray(b[:, :, 2:4]).view(np.uint16)[..., 0])
            self.q = tiles(np.ascontiguousarray(b[:, :, 4:]))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.cols)

    @property
    def nbytes(self) -> int:
        """Bytes as held: GGUF's bytes, plus the zero rows padding the last tile."""
        return int(self.q.nbytes + self.d.nbytes + self.m.nbytes)

    @property
    def blocks(self) -> int:
        return self.q.shape[1]
