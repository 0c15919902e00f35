"""profilers.bench.simd_kernels (the `aios compare` dot and matmul kernels) against float64
NumPy references. Tolerances as in test_simd_kernels' docstring."""

from __future__ import annotations

import numpy as np
import pytest

from profilers.bench import simd_kernels as ck

from .test_simd_kernels import F32, _assert_dot_close, _dot_tol, _randn, _rng


@pytest.fixture(scope="module", autouse=True)
def _compiled():
    ck.warmup()


# ------------------------------------------------------------------- dot / matmul
#
# Two kinds of checks for the ``aios compare`` kernels:
#
# * random normal inputs against float64, with the file's reduction tolerance
#   (``_dot_tol``: 4 * sqrt(K) * eps32 * sum|terms|, see the module docstring) -- this
#   checks the float32 accuracy claim;
# * *exact* checks on integer-valued inputs with no zeros (+-1, +-2, +-3): every product
#   and every partial sum is an integer below 2**24, hence exact in float32 whatever the
#   order of summation (SIMD lanes, chunks, K blocks), so the result must equal the
#   float64 reference bit for bit.  A dropped, duplicated or misplaced term anywhere
#   (a lost tail element, a tile edge, a K-block remainder) changes it by at least 1.
#   This is what makes the large sizes testable: at n = 1e6 a dropped random-normal
#   term (~1) is far below the float32 tolerance (~sqrt(n) * eps * n ~ 100).


def _nonzero_ints(rng, *shape):
    v = rng.integers(1, 4, size=shape) * rng.choice([-1, 1], size=shape)
    return v.astype(F32)


# sizes around the SIMD width (8 lanes x 4 accumulators = 32), the 16 parallel chunks
# (multiples of 16 too: then the last chunk is full, not a shorter remainder), the
# serial/parallel threshold; powers of two and not
DOT_SIZES = [0, 1, 7, 31, 33, 64, 1000, 1024, 10_007, 65_535, 65_536, 100_003]
DOT_BODIES = ["public", "par", "ser"]


def _call_dot(body, a, b):
    f = {"public": ck.dot, "par": ck._dot_par, "ser": ck._dot_ser}[body]
    return f(a, b)


@pytest.mark.parametrize("body", DOT_BODIES)
@pytest.mark.parametrize("n", DOT_SIZES + [1_000_001])
def test_dot(n, body):
    rng = _rng(n, 11)
    a = _randn(rng, n)
    b = _randn(rng, n, scale=2.0)
    got = _call_dot(body, a, b)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    _assert_dot_close(got, a64 @ b64, n, np.abs(a64) @ np.abs(b64))


@pytest.mark.parametrize("body", DOT_BODIES)
@pytest.mark.parametrize("n", DOT_SIZES + [1_000_003])
def test_dot_exact(n, body):
    """Integer-valued inputs: the float32 result is exact, any lost/extra term fails.
    (|sum| <= 9 n < 2**24 for n <= 1.8e6.)"""
    rng = _rng(n, 12)
    a = _nonzero_ints(rng, n)
    b = _nonzero_ints(rng, n)
    ref = float(a.astype(np.float64) @ b.astype(np.float64))
    assert _call_dot(body, a, b) == ref
    if n:  # the check is sharp: the same sum without the last (tail) term differs
        assert _call_dot(body, a[:-1], b[:-1]) != ref


def test_dot_returns_python_float_and_checks_shapes():
    a = np.arange(5, dtype=F32)
    r = ck.dot(a, a)
    assert isinstance(r, float) and r == 30.0
    with pytest.raises(ValueError):
        ck.dot(a, np.zeros(4, F32))


def test_dot_tolerance_rejects_dropped_term():
    """With random data the tolerance check alone still catches a dropped large term."""
    rng = _rng(13)
    n = 10_007
    a, b = _randn(rng, n), _randn(rng, n)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    ref, mag = a64 @ b64, np.abs(a64) @ np.abs(b64)
    got = ck.dot(a, b)
    _assert_dot_close(got, ref, n, mag)
    i = int(np.argmax(np.abs(a64 * b64)))
    assert abs(a64[i] * b64[i]) > 10 * _dot_tol(n, mag)  # sanity of the claim
    with pytest.raises(AssertionError):
        _assert_dot_close(got - a[i] * b[i], ref, n, mag)


# (M, K, N): M, N around the 4x4 micro-tile (every M % 4 and N % 4), the 16-row switch
# to the unpacked few-rows path (_MM_ROWS_M), the 32-column / 128-row output tiles, the
# 256-column spans of the few-rows path; K around the SIMD width and above _MM_KC =
# 1024 (K blocks, A packed, a K block that is not a multiple of 8)
MM_SHAPES = [(1, 1, 1), (1, 7, 3), (3, 7, 5), (7, 3, 1), (1, 513, 65), (2, 5, 257),
             (15, 64, 129), (16, 5, 7), (17, 127, 129), (18, 33, 3), (19, 1, 66),
             (20, 9, 4), (64, 64, 64), (65, 127, 129), (127, 65, 7), (129, 129, 33),
             (131, 8, 35), (3, 1100, 5), (33, 1100, 17), (22, 2100, 9)]
MM_BODIES = ["public", "par", "ser"]


def _call_mm(body, A, B, out):
    f = {"public": ck.matmul, "par": ck._matmul_par, "ser": ck._matmul_ser}[body]
    f(A, B, out)


@pytest.mark.parametrize("body", MM_BODIES)
@pytest.mark.parametrize("M,K,N", MM_SHAPES)
def test_matmul(M, K, N, body):
    rng = _rng(M, K, N)
    A = _randn(rng, M, K)
    B = _randn(rng, K, N, scale=0.5)
    out = np.full((M, N), np.nan, F32)  # every element must be written
    _call_mm(body, A, B, out)
    A64, B64 = A.astype(np.float64), B.astype(np.float64)
    # K blocks add one more rounding per block (the += into out): K + blocks terms
    _assert_dot_close(out, A64 @ B64, K + 3, np.abs(A64) @ np.abs(B64))


@pytest.mark.parametrize("body", MM_BODIES)
@pytest.mark.parametrize("M,K,N", MM_SHAPES)
def test_matmul_exact(M, K, N, body):
    """Integer-valued A, B: out must equal the float64 product exactly (|sums| <= 9 K)."""
    rng = _rng(M, K, N, 1)
    A = _nonzero_ints(rng, M, K)
    B = _nonzero_ints(rng, K, N)
    out = np.full((M, N), np.nan, F32)
    _call_mm(body, A, B, out)
    np.testing.assert_array_equal(out, A.astype(np.float64) @ B.astype(np.float64))


def test_matmul_checker_rejects_dropped_k_and_edges():
    """The tolerance is sharp enough for the bugs a blocked matmul can have: a dropped
    last k term (vector-loop remainder), an unwritten edge row or column."""
    rng = _rng(14)
    M, K, N = 65, 127, 129
    A, B = _randn(rng, M, K), _randn(rng, K, N)
    A64, B64 = A.astype(np.float64), B.astype(np.float64)
    ref, mag = A64 @ B64, np.abs(A64) @ np.abs(B64)
    out = np.empty((M, N), F32)
    ck.matmul(A, B, out)
    _assert_dot_close(out, ref, K, mag)
    with pytest.raises(AssertionError):  # k = K-1 left out of every dot product
        _assert_dot_close(out - np.outer(A64[:, -1], B64[-1]), ref, K, mag)
    for edge in (np.s_[-1, :], np.s_[:, -1]):  # last row / column never computed
        bad = out.copy()
        bad[edge] = 0.0
        with pytest.raises(AssertionError):
            _assert_dot_close(bad, ref, K, mag)


def test_matmul_degenerate_and_shape_checks():
    out = np.full((3, 4), np.nan, F32)
    ck.matmul(np.zeros((3, 0), F32), np.zeros((0, 4), F32), out)  # K = 0: zeros
    assert (out == 0).all()
    ck.matmul(np.zeros((0, 5), F32), np.zeros((5, 4), F32), np.zeros((0, 4), F32))
    ck.matmul(np.zeros((3, 5), F32), np.zeros((5, 0), F32), np.zeros((3, 0), F32))
    with pytest.raises(ValueError):
        ck.matmul(np.zeros((3, 5), F32), np.zeros((4, 4), F32), np.zeros((3, 4), F32))
    with pytest.raises(ValueError):
        ck.matmul(np.zeros((3, 5), F32), np.zeros((5, 4), F32), np.zeros((4, 3), F32))


def test_matmul_nan_propagates():
    """fast-math without nnan: a NaN in A reaches exactly its row of out."""
    rng = _rng(15)
    A, B = _randn(rng, 20, 9), _randn(rng, 9, 6)
    A[5, 3] = np.nan
    out = np.empty((20, 6), F32)
    ck.matmul(A, B, out)
    assert np.isnan(out[5]).all()
    assert np.isfinite(np.delete(out, 5, axis=0)).all()


def test_compare_kernels_hit_warmup_specializations():
    before = ck.specializations()
    assert before["dot"] >= 1 and before["matmul"] >= 1
    rng = _rng(16)
    a = _randn(rng, 100_000)
    ck.dot(a, a)
    ck.dot(a[:10], a[:10])  # 1-D slices of a C array stay C-contiguous float32
    A = _randn(rng, 64, 48)
    ck.matmul(A, _randn(rng, 48, 33), np.empty((64, 33), F32))
    ck.matmul(A[:3], _randn(rng, 48, 5), np.empty((3, 5), F32))
    assert ck.specializations() == before
