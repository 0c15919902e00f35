"""Numba kernels over quantized weights (Q8_0, Q4_0, Q4_1), for the ``simd`` engine.

The bits are GGUF's (see `engines.quant`); only their order in memory changes. When the model
loads, each matrix is repacked from GGUF's row-major blocks into *tiles* of R = 64 rows:

    q  (tiles, blocks, 32, R) int8    Q8_0: the 32 weights of a block, row-minor
       (tiles, blocks, 16, R) uint8   Q4_0/Q4_1: byte j = weight j (low nibble) | weight j+16 (high)
    d  (tiles, blocks, R)     uint16  the fp16 scale of each row's block, as stored
    m  (tiles, blocks, R)     uint16  Q4_1 only: the fp16 minimum

so the bytes are exactly GGUF's (plus zero rows padding the last tile). Why: with the R rows of
a tile side by side, one SIMD register holds 8 rows' weights for the same input element, the
per-block scale multiplies a whole register of rows at once, and no horizontal sum is ever
needed inside the loop. In GGUF's own order each 32-weight block ends in a horizontal sum
before its scale can be applied; measured on the dev VM that order ran at ~1 G weights/s per
core, this one at ~5 (Q8_0).

Decode's matvec dequantizes in registers: the weights are widened to float32 and multiplied into
the float32 input, with a float32 sum per block, then scaled. So a kernel's result is the float32
dot product with the `gguf`-dequantized weights, to float32 rounding (llama.cpp instead
quantizes the input to 8 bits too and multiplies integers: one more rounding).

The 4-bit formats hold q in 0..15 with w = d*(q-8) (Q4_0) or d*q + m (Q4_1), so per block

    sum_j w_j x_j = d * sum_j q_j x_j  -  8d * sum_j x_j        (Q4_0)
                  = d * sum_j q_j x_j  +  m  * sum_j x_j        (Q4_1)

and the block sums of x are taken once per call, not once per row. A row whose length is not a
multiple of 32 was padded with zero weights (`engines.quant.quantize`); the kernels read the
input through a zero-padded copy, so the padding meets zeros.

Prefill dequantizes a few tiles at a time (``dequant_tiles``), transposed, into a float32 buffer
that stays in cache and hands it to BLAS; an embedding lookup dequantizes one row
(``dequant_row``). fp16 scales become float32 with integer operations on their bits, a tile at a
time (Numba has no float16 on the CPU).

Conventions are those of ``engines.simd_kernels``: C-contiguous arrays, ``out`` given by the
caller, a parallel and a serial body chosen by the amount of work.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .quant import format_info
from .simd_kernels import _PAR_MIN_MATVEC, jit

R = 64  # rows per tile
# parallel matvec: the tiles split into this many runs (a run shares its scratch arrays), several
# per thread for balance; a constant, since a kernel reading the thread count cannot be cached
_CHUNKS = 32
Q8_0, Q4_0, Q4_1 = 0, 1, 2  # format codes the kernels take
CODES = {"Q8_0": Q8_0, "Q4_0": Q4_0, "Q4_1": Q4_1}

@jit()
def _scales(h, t, out):
    """out (nb, R) float32 = the fp16 bits h[t] (nb, R) as float32, with integer ops on the bits
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
def _tile_q8(q, d, x, t, out, sacc, tacc, ds):
    """out[t*R : t*R + R] = tile t of a Q8_0 matrix @ x. Four inputs a step: fewer passes over
    sacc (measured 20% faster than one)."""
    nb = q.shape[1]
    _scales(d, t, ds)
    tacc[:] = 0
    for b in range(nb):
        sacc[:] = 0
        for j in range(0, 32, 4):
            i = b * 32 + j
            x0, x1, x2, x3 = x[i], x[i + 1], x[i + 2], x[i + 3]
            for r in range(R):
                sacc[r] += (np.float32(q[t, b, j, r]) * x0 + np.float32(q[t, b, j + 1, r]) * x1
                            + np.float32(q[t, b, j + 2, r]) * x2 + np.float32(q[t, b, j + 3, r]) * x3)
        for r in range(R):
            tacc[r] += ds[b, r] * sacc[r]
    out[t * R:(t + 1) * R] = tacc


@jit()
def _tile_q4(q, d, m, has_min, x, xs, t, out, sacc, tacc, ds, ms):
    """The same for Q4_0 (has_min False; m unused) and Q4_1."""
    nb = q.shape[1]
    _scales(d, t, ds)
    if has_min:
        _scales(m, t, ms)
    tacc[:] = 0
    for b in range(nb):
        sacc[:] = 0
        for j in range(16):
            # byte v = lo + 16 hi, so lo*xl + hi*xh = v*xl + hi*(xh - 16 xl): no mask per byte
            # (measured 1.8x faster than masking the low nibble out)
            xl = x[b * 32 + j]
            xh = x[b * 32 + 16 + j] - np.float32(16.0) * xl
            for r in range(R):
                v = q[t, b, j, r]
                sacc[r] += np.float32(v) * xl + np.float32(v >> 4) * xh
        if has_min:
            for r in range(R):
                tacc[r] += ds[b, r] * sacc[r] + ms[b, r] * xs[b]
        else:
            x8 = np.float32(8.0) * xs[b]
            for r in range(R):
                tacc[r] += ds[b, r] * (sacc[r] - x8)
    out[t * R:(t + 1) * R] = tacc


@jit()
def _tiles(q, d, m, code, x, xs, t0, t1, out):
    """Tiles t0..t1-1, with one set of scratch arrays (allocated here, once per call and thread:
    an allocation per tile inside a parallel loop serialized the threads on the allocator)."""
    nb = q.shape[1]
    sacc = np.empty(R, np.float32)
    tacc = np.empty(R, np.float32)
    ds = np.empty((nb, R), np.float32)
    ms = np.empty((nb, R), np.float32)
    for t in range(t0, t1):
        if code == Q8_0:
            _tile_q8(q, d, x, t, out, sacc, tacc, ds)
        else:
            _tile_q4(q, d, m, code == Q4_1, x, xs, t, out, sacc, tacc, ds, ms)


@jit(parallel=True)
def _qmv_par(q, d, m, code, x, xs, out):
    nt = q.shape[0]
    chunks = min(nt, _CHUNKS)
    per = -(-nt // chunks)
    for c in prange(chunks):
        _tiles(q, d, m, code, x, xs, c * per, min(nt, (c + 1) * per), out)


@jit()
def _qmv_ser(q, d, m, code, x, xs, out):
    _tiles(q, d, m, code, x, xs, 0, q.shape[0], out)


@jit()
def qmatvec(q, d, m, code, x, xpad, out, add, use_add, res):
    """res = W @ x (+ add), W the tiled matrix (q, d, m) in format `code` with x.shape[0] columns.

    Scratch the caller gives: xpad float32 (blocks*32 + blocks): x padded with zeros, then the
    block sums; out float32 (tiles*R,) (the padded rows land there). res (O,) gets the O true
    rows; ``add`` may be ``res`` (a residual)."""
    nt, nb = q.shape[0], q.shape[1]
    n = x.shape[0]
    O = res.shape[0]
    if n > nb * 32 or xpad.shape[0] < nb * 33 or out.shape[0] < nt * R or O > nt * R or (use_add and add.shape[0] != O):
        raise ValueError("qmatvec: shape mismatch")
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
    if nt * R * nb * 32 >= _PAR_MIN_MATVEC:
        _qmv_par(q, d, m, code, xp, xs, out)
    else:
        _qmv_ser(q, d, m, code, xp, xs, out)
    if use_add:
        for o in range(O):
            res[o] = out[o] + add[o]
    else:
        res[:] = out[:O]


@jit()
def _deq_tile(q, d, m, code, t, n, dst, c0, ds, ms):
    """dst[:n, c0 : c0 + R] = tile t's weights, transposed: input j down, the tile's rows across
    (contiguous in the row, so the loop over rows vectorizes)."""
    _scales(d, t, ds)
    if code == Q4_1:
        _scales(m, t, ms)
    for b in range((n + 31) // 32):
        lim = min(32, n - b * 32)
        if code == Q8_0:
            for j in range(lim):
                for r in range(R):
                    dst[b * 32 + j, c0 + r] = ds[b, r] * np.float32(q[t, b, j, r])
        else:
            for r in range(R):
                ms[b, r] = ms[b, r] if code == Q4_1 else np.float32(-8.0) * ds[b, r]
            for j in range(min(lim, 16)):
                for r in range(R):
                    dst[b * 32 + j, c0 + r] = ds[b, r] * np.float32(q[t, b, j, r] & 15) + ms[b, r]
            for j in range(16, lim):
                for r in range(R):
                    dst[b * 32 + j, c0 + r] = ds[b, r] * np.float32(q[t, b, j - 16, r] >> 4) + ms[b, r]


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
    _scales(d, t, ds)
    if code == Q4_1:
        _scales(m, t, ms)
    for b in range((n + 31) // 32):
        lim = min(32, n - b * 32)
        s = ds[b, r]
        if code == Q8_0:
            for j in range(lim):
                dst[0, b * 32 + j] = s * np.float32(q[t, b, j, r])
        else:
            mn = ms[b, r] if code == Q4_1 else np.float32(-8.0) * s
            for j in range(lim):
                v = q[t, b, j % 16, r]
                dst[0, b * 32 + j] = s * np.float32((v >> 4) if j >= 16 else (v & 15)) + mn


def warmup() -> None:
    """Compile every kernel here on tiny inputs, in the types the engine passes."""
    x = np.zeros(40, np.float32)
    xpad = np.zeros(2 * 33, np.float32)
    out = np.zeros(R, np.float32)
    res = np.zeros(3, np.float32)
    d = np.zeros((1, 2, R), np.uint16)
    for code, q in ((Q8_0, np.zeros((1, 2, 32, R), np.int8)), (Q4_0, np.zeros((1, 2, 16, R), np.uint8)),
                    (Q4_1, np.zeros((1, 2, 16, R), np.uint8))):
        qmatvec(q, d, d, code, x, xpad, out, res, False, res)
        qmatvec(q, d, d, code, x, xpad, out, res, True, res)
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

        def tiles(a):  # (nt*R, nb, k) -> (nt, nb, k, R), or (nt*R, nb) -> (nt, nb, R)
            if a.ndim == 2:
                return np.ascontiguousarray(a.reshape(nt, R, nb).transpose(0, 2, 1))
            return np.ascontiguousarray(a.reshape(nt, R, nb, a.shape[2]).transpose(0, 2, 3, 1))

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
