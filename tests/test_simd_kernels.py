"""engines.simd.kernels against float64 NumPy references.

Every kernel is checked through its public entry point *and* through both of its
bodies (``_*_par`` / ``_*_ser``), so the serial and the parallel code paths are tested
whichever one the work threshold picks.  Shapes deliberately include sizes that are not
powers of two and not multiples of the 8-row matvec block or of the silu column chunk.

Tolerances.  Inputs are float32 and the reference is computed in float64 from the very
same float32 values, so the reference is exact to ~1e-16 and the whole difference is
the kernel's float32 rounding.  A length-K float32 reduction commits ~K roundings of
relative size <= u = 2**-24 each; they behave like a random walk, so the error of a dot
product is ~ sqrt(K) * u * sum_k |a_k b_k| (the sum of magnitudes bounds every partial
sum).  We allow 8x that, i.e. 4 * sqrt(K) * eps32 * sum|a b| with eps32 = 2**-23
(``_dot_tol``): for K = 896 that is 1.4e-5 relative to sum|a b|, for K = 4864 3.4e-5 --
the "rtol ~ 1e-5 * sqrt(K)/30" regime.  An indexing bug (wrong row / head, a missing
tail row, a dropped term) errs by the size of a whole result or term, ~sqrt(K) to K
times larger than that; ``test_tolerance_rejects_wrong_rows`` checks that the checker
really rejects such results.  Elementwise kernels (silu, rope, softmax, normalization)
get a few-ulp relative tolerance, documented per test.
"""

from __future__ import annotations

import numpy as np
import pytest

from engines.simd import kernels as sk

F32 = np.float32
EPS32 = float(np.finfo(np.float32).eps)  # 2**-23 (one ulp at 1.0); 2x the unit roundoff


def _rng(*key):
    return np.random.default_rng([1234, *key])


def _randn(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(F32)


def _dot_tol(K, mag):
    """Allowed |error| of float32 length-K reductions whose sum of |terms| is ``mag``."""
    return 4.0 * np.sqrt(max(K, 1)) * EPS32 * mag + 1e-30


def _assert_dot_close(got, ref, K, mag):
    got = np.asarray(got, np.float64)
    tol = _dot_tol(K, mag)
    bad = np.abs(got - ref) > tol
    assert not bad.any(), (
        f"{bad.sum()} / {bad.size} elements off; worst |err| "
        f"{np.max(np.abs(got - ref)):.3g} vs tol {np.max(tol):.3g}"
    )


@pytest.fixture(scope="module", autouse=True)
def _compiled():
    sk.warmup()  # compile (or load) everything once, outside the per-test timing


# --------------------------------------------------------------------------- matvec

MV_SHAPES = [(1, 1), (1, 5), (3, 5), (7, 896), (8, 1), (9, 5), (129, 896),
             (1001, 896), (1001, 5), (130, 4864), (17, 4864)]
MV_BODIES = ["public", "par", "ser"]


def _call_mv(body, kind, W, x, add, out):
    if body == "public":
        if kind == "plain":
            sk.matvec(W, x, out)
        elif kind == "bias":
            sk.matvec_bias(W, x, add, out)
        else:
            sk.matvec_residual(W, x, add, out)
    else:
        f = sk._mv_par if body == "par" else sk._mv_ser
        f(W, x, out if kind == "plain" else add, kind != "plain", out)


@pytest.mark.parametrize("body", MV_BODIES)
@pytest.mark.parametrize("kind", ["plain", "bias", "resid"])
@pytest.mark.parametrize("O,I", MV_SHAPES)
def test_matvec(O, I, kind, body):
    rng = _rng(O, I)
    W = _randn(rng, O, I)
    x = _randn(rng, I)
    add = _randn(rng, O, scale=3.0)
    out = np.full(O, np.nan, F32)  # every element must be written
    _call_mv(body, kind, W, x, add, out)
    W64, x64 = W.astype(np.float64), x.astype(np.float64)
    ref = W64 @ x64
    mag = np.abs(W64) @ np.abs(x64)
    if kind != "plain":
        ref = ref + add
        mag = mag + np.abs(add)
    _assert_dot_close(out, ref, I + 1, mag)


@pytest.mark.parametrize("body", MV_BODIES)
@pytest.mark.parametrize("O,I", [(7, 5), (129, 896), (1001, 896)])
def test_matvec_residual_in_place(O, I, body):
    """resid is out: out = out + W @ x (the residual add of a decoder layer)."""
    rng = _rng(O, I, 7)
    W = _randn(rng, O, I)
    x = _randn(rng, I)
    h = _randn(rng, O, scale=3.0)
    ref = h.astype(np.float64) + W.astype(np.float64) @ x.astype(np.float64)
    mag = np.abs(h) + np.abs(W.astype(np.float64)) @ np.abs(x.astype(np.float64))
    _call_mv(body, "resid", W, x, h, h)
    _assert_dot_close(h, ref, I + 1, mag)


def test_matvec_shape_mismatch_raises():
    W = np.zeros((4, 3), F32)
    with pytest.raises(ValueError):
        sk.matvec(W, np.zeros(4, F32), np.zeros(4, F32))
    with pytest.raises(ValueError):
        sk.matvec(W, np.zeros(3, F32), np.zeros(3, F32))
    with pytest.raises(ValueError):
        sk.matvec_bias(W, np.zeros(3, F32), np.zeros(3, F32), np.zeros(4, F32))


def test_tolerance_rejects_wrong_rows():
    """The tolerance is tight enough to catch indexing bugs: a result computed with the
    rows shifted by one, or with the last (tail) row missing, must fail the check."""
    rng = _rng(99)
    O, I = 1001, 896
    W = _randn(rng, O, I)
    x = _randn(rng, I)
    W64, x64 = W.astype(np.float64), x.astype(np.float64)
    ref, mag = W64 @ x64, np.abs(W64) @ np.abs(x64)
    out = np.empty(O, F32)
    sk.matvec(W, x, out)
    _assert_dot_close(out, ref, I, mag)
    with pytest.raises(AssertionError):
        _assert_dot_close(np.roll(out, 1), ref, I, mag)
    tail_missing = out.copy()
    tail_missing[-1] = 0.0
    with pytest.raises(AssertionError):
        _assert_dot_close(tail_missing, ref, I, mag)
    # dropping a single term W[o, i] * x[i] (the largest of row 5) must fail too
    i = int(np.argmax(np.abs(W64[5] * x64)))
    dropped = out.copy()
    dropped[5] -= W[5, i] * x[i]
    assert abs(W64[5, i] * x64[i]) > 100 * _dot_tol(I, mag[5])  # sanity of the claim
    with pytest.raises(AssertionError):
        _assert_dot_close(dropped, ref, I, mag)


# -------------------------------------------------------------------------- rmsnorm


def _rmsnorm_ref(x, w, eps):
    x = x.astype(np.float64)
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w.astype(np.float64)


# Relative tolerance for normalization: sum of squares (K float32 roundings, all terms
# positive so the relative error is <= ~sqrt(K)*eps in practice), then sqrt/div/2 muls
# (a few ulps).  1e-5 covers H up to ~5000 with margin; a wrong row or missing eps fails.
NORM_RTOL = 1e-5


@pytest.mark.parametrize("body", ["public", "par", "ser"])
@pytest.mark.parametrize("T,H", [(1, 1), (1, 5), (1, 896), (3, 129), (64, 896), (5, 1001)])
def test_rmsnorm(T, H, body):
    rng = _rng(T, H)
    x = _randn(rng, T, H, scale=2.0)
    x[0, 0] = 40.0  # an outlier, like Qwen's massive activations
    w = _randn(rng, H)
    eps = 1e-6
    out = np.full((T, H), np.nan, F32)
    if body == "public":
        sk.rmsnorm(x, w, eps, out)
    else:
        (sk._rmsnorm_par if body == "par" else sk._rmsnorm_ser)(x, w, F32(eps), out)
    ref = _rmsnorm_ref(x, w, eps)
    np.testing.assert_allclose(out, ref, rtol=NORM_RTOL, atol=1e-6 * np.abs(w).max())


def test_rmsnorm_eps_matters_and_in_place():
    """Tiny rows are dominated by eps (checks eps is added inside the sqrt), and out may be x."""
    rng = _rng(5)
    x = _randn(rng, 2, 896, scale=1e-4)
    w = _randn(rng, 896)
    ref = _rmsnorm_ref(x, w, 1e-6)
    sk.rmsnorm(x, w, 1e-6, x)
    np.testing.assert_allclose(x, ref, rtol=NORM_RTOL, atol=1e-7)


@pytest.mark.parametrize("body", ["public", "par", "ser"])
@pytest.mark.parametrize("T,nh,hd", [(1, 1, 2), (1, 16, 128), (3, 7, 64), (40, 8, 128)])
def test_rmsnorm_heads(T, nh, hd, body):
    rng = _rng(T, nh, hd)
    x = _randn(rng, T, nh, hd, scale=3.0)
    w = _randn(rng, hd)
    eps = 1e-6
    ref = _rmsnorm_ref(x, w, eps)
    if body == "public":
        sk.rmsnorm_heads(x, w, eps)
    else:
        (sk._rmsnorm_heads_par if body == "par" else sk._rmsnorm_heads_ser)(x, w, F32(eps))
    np.testing.assert_allclose(x, ref, rtol=NORM_RTOL, atol=1e-6 * np.abs(w).max())


# ----------------------------------------------------------------------------- rope


def _rope_ref(x, cos, sin):
    x = x.astype(np.float64)
    c = np.concatenate([cos, cos], axis=-1).astype(np.float64)[:, None, :]
    s = np.concatenate([sin, sin], axis=-1).astype(np.float64)[:, None, :]
    half = x.shape[-1] // 2
    rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)  # HF rotate_half
    return x * c + rot * s


@pytest.mark.parametrize("body", ["public", "par", "ser"])
@pytest.mark.parametrize("T,nh,hd", [(1, 1, 2), (1, 14, 64), (5, 2, 6), (33, 14, 64), (3, 7, 128)])
def test_rope(T, nh, hd, body):
    rng = _rng(T, nh, hd)
    x = _randn(rng, T, nh, hd)
    pos = np.arange(T) + 11
    inv_freq = 1.0 / (1e6 ** (np.arange(0, hd, 2) / hd))
    ang = np.outer(pos, inv_freq)
    cos, sin = np.cos(ang).astype(F32), np.sin(ang).astype(F32)
    ref = _rope_ref(x, cos, sin)
    if body == "public":
        sk.rope(x, cos, sin)
    else:
        (sk._rope_par if body == "par" else sk._rope_ser)(x, cos, sin)
    # two products and a sum per element: |err| <= ~2 ulp of (|x1 c| + |x2 s|)
    np.testing.assert_allclose(x, ref, rtol=0, atol=4 * EPS32 * np.abs(ref).max() + 1e-7)


def test_rope_position_zero_is_identity():
    x = _randn(_rng(3), 1, 3, 8)
    y = x.copy()
    sk.rope(y, np.ones((1, 4), F32), np.zeros((1, 4), F32))
    np.testing.assert_array_equal(y, x)


# ------------------------------------------------------------------------ attention

# (nh, nkv) -> GQA group sizes 1, 2, 7 (7 = Qwen2.5-0.5B's 14 query / 2 kv heads)
GQA = [(2, 2), (4, 2), (14, 2), (7, 1)]


@pytest.mark.parametrize("body", ["public", "par", "ser"])
@pytest.mark.parametrize("nh,nkv", GQA)
@pytest.mark.parametrize("n,S,hd", [(1, 1, 64), (5, 9, 64), (100, 131, 64), (37, 40, 6)])
def test_attn_scores(nh, nkv, n, S, hd, body):
    rng = _rng(nh, nkv, n, S, hd)
    q = _randn(rng, nh, hd)
    k = _randn(rng, nkv, S, hd)
    k[:, n:] = np.nan  # positions >= n are not valid and must not be read
    scale = 1.0 / np.sqrt(hd)
    out = np.full((nh, S + 3), -7.0, F32)  # wider than n: only [:, :n] is written
    if body == "public":
        sk.attn_scores(q, k, n, scale, out)
    else:
        f = sk._attn_scores_par if body == "par" else sk._attn_scores_ser
        f(q, k, n, F32(scale), out)
    g = nh // nkv
    kk = np.repeat(k[:, :n].astype(np.float64), g, axis=0)  # (nh, n, hd)
    q64 = q.astype(np.float64)
    ref = scale * np.einsum("hd,htd->ht", q64, kk)
    mag = scale * np.einsum("hd,htd->ht", np.abs(q64), np.abs(kk))
    _assert_dot_close(out[:, :n], ref, hd + 1, mag)
    assert (out[:, n:] == -7.0).all()


@pytest.mark.parametrize("body", ["public", "par", "ser"])
@pytest.mark.parametrize("nh,nkv", GQA)
@pytest.mark.parametrize("n,S,hd", [(1, 1, 64), (3, 9, 64), (7, 7, 5), (101, 131, 64), (250, 256, 128)])
def test_attn_mix(nh, nkv, n, S, hd, body):
    rng = _rng(nh, nkv, n, S, hd, 1)
    logits = rng.standard_normal((nh, S + 2))
    p = np.exp(logits)
    p[:, :n] /= p[:, :n].sum(axis=1, keepdims=True)
    p[:, n:] = np.nan  # columns >= n must not be read
    p = p.astype(F32)
    v = _randn(rng, nkv, S, hd)
    v[:, n:] = np.nan
    out = np.full((nh, hd), np.nan, F32)
    if body == "public":
        sk.attn_mix(p, v, n, out)
    else:
        (sk._attn_mix_par if body == "par" else sk._attn_mix_ser)(p, v, n, out)
    g = nh // nkv
    vv = np.repeat(v[:, :n].astype(np.float64), g, axis=0)  # (nh, n, hd)
    p64 = p[:, :n].astype(np.float64)
    ref = np.einsum("ht,htd->hd", p64, vv)
    mag = np.einsum("ht,htd->hd", np.abs(p64), np.abs(vv))
    _assert_dot_close(out, ref, n, mag)


def test_attn_gqa_mismatch_raises():
    with pytest.raises(ValueError):  # 3 query heads cannot share 2 kv heads
        sk.attn_scores(np.zeros((3, 4), F32), np.zeros((2, 5, 4), F32), 2, 1.0, np.zeros((3, 5), F32))
    with pytest.raises(ValueError):  # n beyond the cache
        sk.attn_mix(np.zeros((2, 9), F32), np.zeros((1, 5, 4), F32), 6, np.zeros((2, 4), F32))


# -------------------------------------------------------------------------- softmax

# softmax: exp has a few-ulp error, the sum n roundings (all positive terms:
# relative error <= ~sqrt(n) eps in practice), the final scaling 1 ulp.
def _softmax_tol(n):
    return 4 * np.sqrt(max(n, 1)) * EPS32 + 8 * EPS32


def _softmax_ref(x):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("body", ["public", "par", "ser"])
@pytest.mark.parametrize("R,C,n", [(1, 1, 1), (3, 10, 7), (14, 1001, 1001), (14, 300, 129), (2, 5, 0)])
def test_softmax_rows(R, C, n, body):
    rng = _rng(R, C, n)
    x = _randn(rng, R, C, scale=5.0)
    x[0, 0] = 100.0  # exp(100) overflows float32 (above 88.7): only the max subtraction saves it
    orig = x.copy()
    if body == "public":
        sk.softmax_rows(x, n)
    else:
        (sk._softmax_rows_par if body == "par" else sk._softmax_rows_ser)(x, n)
    if n:
        ref = _softmax_ref(orig[:, :n])
        np.testing.assert_allclose(x[:, :n], ref, rtol=_softmax_tol(n), atol=1e-30)
    np.testing.assert_array_equal(x[:, n:], orig[:, n:])  # untouched


def _causal_ref(s, past):
    nh, T, S = s.shape
    out = np.zeros(s.shape)
    for i in range(T):
        valid = min(past + i + 1, S)
        out[:, i, :valid] = _softmax_ref(s[:, i, :valid])
    return out


@pytest.mark.parametrize("body", ["public", "par", "ser"])
@pytest.mark.parametrize("nh,T,past,extra", [(1, 1, 0, 0), (14, 1, 5, 0), (14, 7, 0, 0),
                                             (2, 5, 3, 0), (3, 9, 4, 2), (14, 64, 0, 0)])
def test_causal_softmax(nh, T, past, extra, body):
    S = past + T + extra
    rng = _rng(nh, T, past, extra)
    s = _randn(rng, nh, T, S, scale=4.0)
    ref = _causal_ref(s, past)
    if body == "public":
        sk.causal_softmax(s, past)
    else:
        (sk._causal_softmax_par if body == "par" else sk._causal_softmax_ser)(s, past)
    np.testing.assert_allclose(s, ref, rtol=_softmax_tol(S), atol=1e-30)
    # masked entries are exactly zero, rows sum to one
    for i in range(T):
        assert (s[:, i, past + i + 1:] == 0).all()
    np.testing.assert_allclose(s.sum(-1), 1.0, rtol=_softmax_tol(S))


# ------------------------------------------------------------------------------ mlp


def _silu_mul_ref(gu):
    g, u = np.split(gu.astype(np.float64), 2, axis=-1)
    return g / (1.0 + np.exp(-g)) * u


@pytest.mark.parametrize("body", ["public", "par", "ser"])
@pytest.mark.parametrize("T,I", [(1, 1), (1, 5), (1, 4864), (3, 1025), (7, 129), (16, 2049)])
def test_silu_mul(T, I, body):
    rng = _rng(T, I)
    gu = _randn(rng, T, 2 * I, scale=3.0)
    gu[0, 0] = -100.0  # exp(100) overflows float32 -> silu must give -0, not nan
    gu[-1, I - 1] = 100.0
    out = np.full((T, I), np.nan, F32)
    if body == "public":
        sk.silu_mul(gu, out)
    else:
        (sk._silu_mul_par if body == "par" else sk._silu_mul_ser)(gu, out)
    # exp, add, div, mul: a handful of ulps relative to the result
    np.testing.assert_allclose(out, _silu_mul_ref(gu), rtol=8 * EPS32, atol=1e-30)
    assert np.isfinite(out).all()


# --------------------------------------------------------------------------- warmup


def test_warmup_compiles_each_kernel_once():
    import time

    t0 = time.perf_counter()
    t = sk.warmup()
    assert 0.0 < t <= time.perf_counter() - t0  # the seconds it took, measured inside
    before = sk.specializations()
    assert set(before) == set(sk.__all__) - {"warmup", "specializations"}
    assert all(v >= 1 for v in before.values()), before
    # engine-like calls (C-contiguous float32 arrays, Python int/float scalars) must
    # hit the specializations warmup compiled instead of compiling new ones
    rng = _rng(0)
    W, x, out = _randn(rng, 1152, 896), _randn(rng, 896), np.empty(1152, F32)
    sk.matvec(W, x, out)
    sk.matvec_residual(W, x, out, out)
    sk.matvec_bias(W, x, out, out)
    h = _randn(rng, 1, 896)
    sk.rmsnorm(h, _randn(rng, 896), 1e-6, h)
    q = _randn(rng, 1, 14, 64)
    sk.rope(q, _randn(rng, 1, 32), _randn(rng, 1, 32))
    sk.rmsnorm_heads(q, _randn(rng, 64), 1e-6)
    kc = _randn(rng, 2, 128, 64)
    sc = np.empty((14, 128), F32)
    sk.attn_scores(q[0], kc, 100, 0.125, sc)
    sk.softmax_rows(sc, 100)
    sk.attn_mix(sc, kc, 100, q[0])
    sk.causal_softmax(_randn(rng, 14, 3, 8), 5)
    sk.silu_mul(_randn(rng, 1, 9728), np.empty((1, 4864), F32))
    assert sk.specializations() == before
