"""The quantized kernels against float64 NumPy on the `gguf` package's dequantized weights.

The oracle: `gguf.quants.quantize` makes the blocks, `gguf.quants.dequantize` turns them back into
float32 weights W, and float64 NumPy computes W @ x. The kernels must equal that to float32
rounding. The bound, per output row o:

    |kernel_o - (W @ x)_o|  <=  c * n * u * sum_j |W_oj x_j|        u = 2^-24, n = row length

n*u*sum|w x| is the classic worst-case bound of a length-n float32 dot product. c = 4 for Q8_0
(a float32 sum per block, then the scaled sum of blocks); c = 64 for the 4-bit formats, whose
kernels add v*x_j + hi*(x_{j+16} - 16 x_j) (byte v = lo + 16 hi) and subtract 8*sum(x), terms up
to ~16x the size of the products they stand for. A misread nibble or scale is off by a whole
weight step, orders of magnitude above either bound.

Shapes include rows that are not a multiple of the 64-row tile and row lengths that are not a
multiple of the 32-weight block (aios pads those rows with zero weights when it quantizes).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

gguf = pytest.importorskip("gguf")

from engines import quant  # noqa: E402
from engines import simd_qkernels as QK  # noqa: E402

FORMATS = ("Q8_0", "Q4_0", "Q4_1")
U = 2.0 ** -24
C = {"Q8_0": 4, "Q4_0": 64, "Q4_1": 64}


def make(fmt, O, I, seed):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((O, I)).astype(np.float32) * rng.uniform(0.01, 3)
    x = rng.standard_normal(I).astype(np.float32)
    q = quant.quantize(W, fmt)
    return q, q.dequantize().astype(np.float64), x


def matvec(T: QK.Tiled, x, add=None):
    xpad = np.zeros(T.blocks * 33, np.float32)
    out = np.zeros(T.q.shape[0] * QK.R, np.float32)
    res = np.zeros(T.rows, np.float32) if add is None else add.copy()
    QK.qmatvec(T.q, T.d, T.m, T.code, x, xpad, out, res, add is not None, res)
    return res.astype(np.float64)


def check(fmt, O, I, seed):
    q, Wd, x = make(fmt, O, I, seed)
    T = QK.Tiled(q.blocks, fmt, I)
    ref = Wd @ x.astype(np.float64)
    bound = C[fmt] * I * U * (np.abs(Wd) @ np.abs(x.astype(np.float64))) + 1e-30
    err = np.abs(matvec(T, x) - ref)
    assert (err <= bound).all(), f"{fmt} {O}x{I}: worst err/bound {np.max(err / bound):.3g}"
    # the residual form: res = add + W @ x, add being the output itself
    add = np.random.default_rng(seed + 1).standard_normal(O).astype(np.float32)
    err = np.abs(matvec(T, x, add) - (ref + add))
    assert (err <= bound + 4 * U * np.abs(ref + add)).all()
    # prefill's dequantized tiles and an embedding row are the weights themselves (to one rounding)
    tiles = np.zeros((I, T.q.shape[0] * QK.R), np.float32)
    QK.dequant_tiles(T.q, T.d, T.m, T.code, 0, I, tiles)
    np.testing.assert_allclose(tiles[:, :O].T, Wd, rtol=2 * U * 8, atol=0)
    assert not tiles[:, O:].any()  # the zero rows that pad the last tile
    row = np.zeros((1, I), np.float32)
    QK.dequant_row(T.q, T.d, T.m, T.code, O - 1, I, row)
    np.testing.assert_allclose(row[0], Wd[-1], rtol=2 * U * 8, atol=0)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("O,I", [(1, 32), (64, 64), (37, 64), (130, 33), (9, 50), (576, 1536), (200, 1000)])
def test_kernels_equal_float64_on_dequantized_weights(fmt, O, I):
    check(fmt, O, I, seed=O * 1000 + I)


@settings(max_examples=40, deadline=None)
@given(fmt=st.sampled_from(FORMATS), O=st.integers(1, 200), I=st.integers(1, 300), seed=st.integers(0, 2**31))
def test_kernels_any_shape(fmt, O, I, seed):
    check(fmt, O, I, seed)


@pytest.mark.parametrize("fmt", FORMATS)
def test_tiled_layout_holds_ggufs_bytes(fmt):
    """The repacked matrix holds exactly the file's bytes (no float32 copy of the weights, no wider
    scales) when the rows fill whole tiles, and the bits per weight are the format's."""
    q, _, _ = make(fmt, 128, 96, 3)
    T = QK.Tiled(q.blocks, fmt, 96)
    assert T.nbytes == q.blocks.nbytes
    assert T.nbytes * 8 / (128 * 96) == quant.format_info(fmt).bits_per_weight


def test_fp16_scales_decode_like_numpy():
    """Every fp16 bit pattern a scale can hold, zero and subnormals included, decodes as NumPy's
    float16 does (inf and NaN too)."""
    h = np.arange(65536, dtype=np.uint16)
    nb = 65536 // QK.R
    bits = h.reshape(1, nb, QK.R)
    out = np.zeros((nb, QK.R), np.float32)
    QK._scales(bits, 0, out)
    want = h.view(np.float16).astype(np.float32).reshape(nb, QK.R)
    np.testing.assert_array_equal(out, want)


def test_quantize_pads_rows_with_zero_weights():
    W = np.arange(2 * 40, dtype=np.float32).reshape(2, 40) / 10
    q = quant.quantize(W, "Q8_0")
    assert q.shape == (2, 40) and q.blocks.shape == (2, 2 * 34)
    full = gguf.quants.dequantize(q.blocks, gguf.GGMLQuantizationType.Q8_0)
    assert not full[:, 40:].any()
    np.testing.assert_allclose(q.dequantize(), W, atol=np.abs(W).max() / 127)


def test_plan_keeps_norms_and_sets_the_head_to_q8():
    assert quant.plan("linear", "q4_0") == "Q4_0"
    assert quant.plan("lm_head", "q4_0") == "Q8_0" and quant.plan("embed", "q4_1") == "Q8_0"
    assert quant.plan("vector", "q8_0") is None and quant.plan("linear", None) is None
