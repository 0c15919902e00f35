"""The quantized kernels against float64 NumPy on the `gguf` package's dequantized weights.

The oracle: `gguf.quants.quantize` makes the blocks, `gguf.quants.dequantize` turns them back into
float32 weights W, and float64 NumPy computes the product. Two kernels read the same tiles:

- the float32 one (every machine) must equal W @ x to float32 rounding;
- the integer one (x86-64 with AVX2) quantizes x to Q8_0 first, as llama.cpp does, and must
  equal W @ x^ to float32 rounding, x^ being `gguf`'s own Q8_0 quantize-and-dequantize of x. Its
  int8 input is checked byte for byte against `gguf`'s Q8_0 blocks of x.

The bound, per output row o:

    |kernel_o - (W @ x)_o|  <=  c * n * u * sum_j |W_oj x_j|        u = 2^-24, n = row length

n*u*sum|w x| is the classic worst-case bound of a length-n float32 dot product. c = 4 for Q8_0
(a float32 sum per block pair, then the scaled sum of blocks); c = 64 for the 4-bit formats,
whose float kernels add v*x_j + hi*(x_{j+16} - 16 x_j) (byte v = lo + 16 hi) and subtract
8*sum(x), terms up to ~16x the size of the products they stand for. The integer kernels' block
sums are exact, so only the per-block scaling and the sum over blocks round: c = 4, with |W|
taken as |d q| + |m| for Q4_1 (its d q and m terms are scaled apart). A misread nibble or scale
is off by a whole weight step, orders of magnitude above either bound; so is a wrong input
rounding (one step of x^).

Shapes include rows that are not a multiple of the 64-row tile and row lengths that are not a
multiple of the 32-weight block (aios pads those rows with zero weights when it quantizes).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

gguf = pytest.importorskip("gguf")

from engines.quant import formats as quant  # noqa: E402
from engines.simd import qkernels as QK  # noqa: E402

FORMATS = ("Q8_0", "Q4_0", "Q4_1")
U = 2.0 ** -24
C = {"Q8_0": 4, "Q4_0": 64, "Q4_1": 64}
DOTS = ["float32", pytest.param("int8", marks=pytest.mark.skipif(not QK.HAVE_AVX2, reason="needs x86-64 with AVX2"))]


def make(fmt, O, I, seed):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((O, I)).astype(np.float32) * rng.uniform(0.01, 3)
    x = rng.standard_normal(I).astype(np.float32) * rng.uniform(0.01, 30)
    q = quant.quantize(W, fmt)
    return q, q.dequantize().astype(np.float64), x


def q8_of(x, blocks):
    """x zero-padded to `blocks` blocks, as `gguf`'s Q8_0 blocks (uint8, 34 bytes a block)."""
    xp = np.zeros(blocks * 32, np.float32)
    xp[: x.shape[0]] = x
    return gguf.quants.quantize(xp.reshape(1, -1), gguf.GGMLQuantizationType.Q8_0)


def matvec(T: QK.Tiled, x, add=None, dot="float32"):
    xpad = np.zeros(QK.xpad_size(T.blocks), np.float32)
    out = np.zeros(T.q.shape[0] * QK.R, np.float32)
    res = np.zeros(T.rows, np.float32) if add is None else add.copy()
    if dot == "int8":
        xq = np.zeros(T.blocks * 32, np.int8)
        QK.qmatvec_int(T.q, T.d, T.m, T.code, x, xpad, xq, out, res, add is not None, res)
    else:
        QK.qmatvec(T.q, T.d, T.m, T.code, x, xpad, out, res, add is not None, res)
    return res.astype(np.float64)


def minimums(q, fmt):
    """|m| of each weight's block, (O, I) (Q4_1's minimum; 0 for the others)."""
    O, I = q.shape
    if fmt != "Q4_1":
        return np.zeros((O, I))
    nb = q.blocks.shape[1] // 20
    m = q.blocks.reshape(O, nb, 20)[:, :, 2:4].copy().view(np.float16)[..., 0].astype(np.float64)
    return np.repeat(np.abs(m), 32, axis=1)[:, :I]


def check(fmt, O, I, seed, dot="float32"):
    q, Wd, x = make(fmt, O, I, seed)
    T = QK.Tiled(q.blocks, fmt, I)
    if dot == "int8":  # the oracle's input is gguf's own Q8_0 of x
        xin = gguf.quants.dequantize(q8_of(x, T.blocks), gguf.GGMLQuantizationType.Q8_0)[0, :I].astype(np.float64)
        bound = 4 * I * U * ((np.abs(Wd) + minimums(q, fmt)) @ np.abs(xin)) + 1e-30
    else:
        xin = x.astype(np.float64)
        bound = C[fmt] * I * U * (np.abs(Wd) @ np.abs(xin)) + 1e-30
    ref = Wd @ xin
    err = np.abs(matvec(T, x, dot=dot) - ref)
    assert (err <= bound).all(), f"{fmt} {dot} {O}x{I}: worst err/bound {np.max(err / bound):.3g}"
    # the residual form: res = add + W @ x, add being the output itself
    add = np.random.default_rng(seed + 1).standard_normal(O).astype(np.float32)
    err = np.abs(matvec(T, x, add, dot=dot) - (ref + add))
    assert (err <= bound + 4 * U * np.abs(ref + add)).all()
    if dot == "int8":
        return
    # prefill's dequantized tiles and an embedding row are the weights themselves (to one rounding)
    tiles = np.zeros((I, T.q.shape[0] * QK.R), np.float32)
    QK.dequant_tiles(T.q, T.d, T.m, T.code, 0, I, tiles)
    np.testing.assert_allclose(tiles[:, :O].T, Wd, rtol=2 * U * 8, atol=0)
    assert not tiles[:, O:].any()  # the zero rows that pad the last tile
    row = np.zeros((1, I), np.float32)
    QK.dequant_row(T.q, T.d, T.m, T.code, O - 1, I, row)
    np.testing.assert_allclose(row[0], Wd[-1], rtol=2 * U * 8, atol=0)


@pytest.mark.parametrize("dot", DOTS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("O,I", [(1, 32), (64, 64), (37, 64), (130, 33), (9, 50), (576, 1536), (200, 1000)])
def test_kernels_equal_float64_on_dequantized_weights(fmt, O, I, dot):
    check(fmt, O, I, seed=O * 1000 + I, dot=dot)


@pytest.mark.parametrize("dot", DOTS)
@settings(max_examples=40, deadline=None)
@given(fmt=st.sampled_from(FORMATS), O=st.integers(1, 200), I=st.integers(1, 300), seed=st.integers(0, 2**31))
def test_kernels_any_shape(fmt, O, I, seed, dot):
    check(fmt, O, I, seed, dot)


@pytest.mark.parametrize("dot", DOTS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_block_sums_past_int16(fmt, dot):
    """Same-signed inputs against weights at the top of their range: a 4-bit block's sum of q*xq
    reaches 32*15*127 = 60960, past int16, where the integer kernel's accumulator wraps (and
    Q8_0's reaches 32*127*127). The kernels must still be exact to the bound."""
    rng = np.random.default_rng(7)
    O, I = 70, 96
    # every weight but each block's first at q = 15 (Q4_0: d(q - 8) = 7/8 of the block's -1; Q4_1:
    # the max over a minimum of 0; Q8_0: q = 127), the first at q = 0
    top, first = {"Q4_0": (0.875, -1.0), "Q4_1": (1.0, 0.0), "Q8_0": (1.0, 1.0)}[fmt]
    W = np.full((O, I), top, np.float32) * rng.uniform(0.999, 1.0, (O, I)).astype(np.float32)
    W[:, ::32] = first
    q = quant.quantize(W, fmt)
    T = QK.Tiled(q.blocks, fmt, I)
    x = rng.uniform(0.95, 1.0, I).astype(np.float32)
    if dot == "int8":
        xin = gguf.quants.dequantize(q8_of(x, T.blocks), gguf.GGMLQuantizationType.Q8_0)[0, :I].astype(np.float64)
    else:
        xin = x.astype(np.float64)
    Wd = q.dequantize().astype(np.float64)
    bound = C[fmt] * I * U * ((np.abs(Wd) + minimums(q, fmt)) @ np.abs(xin))
    err = np.abs(matvec(T, x, dot=dot) - Wd @ xin)
    assert (err <= bound).all(), f"worst err/bound {np.max(err / bound):.3g}"


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 200), scale=st.floats(1e-6, 1e4), seed=st.integers(0, 2**31), zeros=st.booleans())
def test_input_quantization_is_gguf_q8_0(n, scale, seed, zeros):
    """The integer kernels' int8 input is `gguf`'s Q8_0 of x, byte for byte: the same rounding
    (half away from zero, from the float32 scale) and the same fp16 scale; an all-zero block has
    scale 0."""
    x = (np.random.default_rng(seed).standard_normal(n) * scale).astype(np.float32)
    if zeros:
        x[: min(n, 40)] = 0
    nb = -(-n // 32)
    xpad = np.zeros(QK.xpad_size(nb), np.float32)
    xq = np.zeros(nb * 32, np.int8)
    QK.quantize_input(x, xpad, xq)
    want = q8_of(x, nb).reshape(nb, 34)
    np.testing.assert_array_equal(xq.reshape(nb, 32), want[:, 2:].view(np.int8))
    np.testing.assert_array_equal(xpad[nb * 32: nb * 33], want[:, :2].copy().view(np.float16)[:, 0].astype(np.float32))
    np.testing.assert_array_equal(xpad[nb * 33: nb * 34], want[:, 2:].view(np.int8).astype(np.int64).sum(1))


@pytest.mark.parametrize("fmt", FORMATS)
def test_tiled_layout_holds_ggufs_bytes(fmt):
    """The repacked matrix holds exactly the file's bytes (no float32 copy of the weights, no wider
    scales) when the rows fill whole tiles, and the bits per weight are the format's."""
    q, _, _ = make(fmt, 128, 96, 3)
    T = QK.Tiled(q.blocks, fmt, 96)
    assert T.nbytes == q.blocks.nbytes
    assert T.nbytes * 8 / (128 * 96) == quant.format_info(fmt).bits_per_weight


@pytest.mark.parametrize("decode", ["_scales", "_scales_bits"])
def test_fp16_scales_decode_like_numpy(decode):
    """Every fp16 bit pattern a scale can hold, zero and subnormals included, decodes as NumPy's
    float16 does (inf and NaN too; the hardware conversion quiets a signalling NaN, so NaNs are
    compared as NaNs, everything else bit for bit, -0 included): with the fp16 instructions, and
    with the integer fallback for machines without them."""
    h = np.arange(65536, dtype=np.uint16)
    nb = 65536 // QK.R
    bits = h.reshape(1, nb, QK.R)
    out = np.zeros((nb, QK.R), np.float32)
    getattr(QK, decode)(bits, 0, out)
    want = h.view(np.float16).astype(np.float32).reshape(nb, QK.R)
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(out), nan)
    np.testing.assert_array_equal(out.view(np.uint32)[~nan], want.view(np.uint32)[~nan])


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
