"""Two AVX2 integer multiply-add instructions, as Numba intrinsics, for the quantized kernels.

Numba's loop vectorizer turns an int8 x int8 dot product into 32-bit multiplies (``vpmulld``),
slower than the float32 path it would replace. x86's own answer, which llama.cpp's kernels use,
is a pair of instructions that multiply narrow integers and add adjacent products:

- ``vpmaddwd``  (``llvm.x86.avx2.pmadd.wd``):    16 int16 x 16 int16 -> 8 int32 sums of pairs;
- ``vpmaddubsw`` (``llvm.x86.avx2.pmadd.ub.sw``): 32 uint8 x 32 int8 -> 16 int16 sums of pairs.

Each step below is one such instruction over a run of a tile's rows (`engines.simd.qkernels`):
it loads the rows' bytes for two neighbouring inputs, interleaves them so that each row's two
weights sit side by side (one shuffle), multiplies and adds into an accumulator array. The steps
are LLVM IR inlined into the calling kernel. Measured on the dev VM (AMD EPYC, Zen 1, one
core, a 4864 x 896 matrix): Q8_0 5.8 -> 10.0 G weights/s, Q4_0 5.8 -> 21 G weights/s, against the
float32-activation kernels.

Only x86-64 with AVX2 has them: ``HAVE_AVX2`` says whether this machine does, and nothing here is
compiled otherwise (a kernel that calls a step is compiled on its first call, and the caller
checks ``HAVE_AVX2`` first). The float32 kernels' steps and the fp16 conversions are generic LLVM
IR, which every machine compiles; ``HAVE_F16`` says whether fp16 conversion is an instruction
here (F16C, AArch64), and the callers keep integer-only code for where it is not.
"""

from __future__ import annotations

import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.extending import intrinsic


def _host_has_avx2() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    if config.CPU_NAME not in (None, "host"):  # compiling for another CPU than this one
        return False
    try:
        import llvmlite.binding as llvm
        feats = llvm.get_host_cpu_features()
    except Exception:  # noqa: BLE001 - no feature list: assume the worst
        return False
    return bool(feats.get("avx2", False) and feats.get("f16c", False))  # every AVX2 CPU has F16C


def _host_has_f16() -> bool:
    """Whether LLVM lowers fp16 <-> float32 to instructions here (F16C on x86, any AArch64), not
    to runtime calls a JIT may lack."""
    m = platform.machine().lower()
    if m in ("arm64", "aarch64"):
        return True
    if m not in ("x86_64", "amd64") or config.CPU_NAME not in (None, "host"):
        return False
    try:
        import llvmlite.binding as llvm
        return bool(llvm.get_host_cpu_features().get("f16c", False))
    except Exception:  # noqa: BLE001
        return False


HAVE_AVX2 = _host_has_avx2()  # the integer kernels (x86-64 with AVX2 and F16C)
HAVE_F16 = _host_has_f16()  # half_to_float8 and round_to_half compile to instructions

_i8, _i16, _i32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)


def _splat(builder, value, lanes: int, as_type):
    """`value` (an integer of the lane width) in every lane, bitcast to `as_type`."""
    vec = ir.VectorType(value.type, lanes)
    v = builder.insert_element(ir.Constant(vec, ir.Undefined), value, ir.Constant(_i32, 0))
    v = builder.shuffle_vector(v, ir.Constant(vec, ir.Undefined), ir.Constant(ir.VectorType(_i32, lanes), [0] * lanes))
    return builder.bitcast(v, as_type)


def _at(context, builder, arrty, arr, offset, vecty):
    """A pointer to `vecty` at element `offset` of the C-contiguous array `arr`."""
    data = context.make_array(arrty)(context, builder, arr).data
    return builder.bitcast(builder.gep(data, [offset]), vecty.as_pointer())


@intrinsic
def madd_pairs_i8(typingctx, q, qoff, x01, acc, aoff):
    """acc[aoff : aoff+8] (int32) += q[qoff+2l] * x0 + q[qoff+2l+1] * x1, l = 0..7.

    q: int8 array (flat), eight rows' weight pairs; x01: int32 holding the int16 pair x0 | x1 << 16.
    The weights are sign-extended to int16, then one ``vpmaddwd``: exact, as |q x| <= 127 * 32767
    fits int32."""
    sig = types.void(q, qoff, x01, acc, aoff)

    def codegen(context, builder, signature, args):
        qa, qo, xv, aa, ao = args
        v16i8, v16i16, v8i32 = ir.VectorType(_i8, 16), ir.VectorType(_i16, 16), ir.VectorType(_i32, 8)
        w = builder.sext(builder.load(_at(context, builder, signature.args[0], qa, qo, v16i8), align=1), v16i16)
        x = _splat(builder, builder.trunc(xv, _i32) if xv.type.width > 32 else xv, 8, v16i16)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8i32, [v16i16, v16i16]),
                                            "llvm.x86.avx2.pmadd.wd")
        ap = _at(context, builder, signature.args[3], aa, ao, v8i32)
        builder.store(builder.add(builder.load(ap, align=4), builder.call(fn, [w, x])), ap, align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def madd_nibbles_u4(typingctx, q, qoff, xl, xh, acc, aoff):
    """acc[aoff : aoff+16] (int16, wrapping) += for l = 0..15, with bytes u, v = q[qoff+2l], q[qoff+2l+1]:
    lo(u) xl0 + lo(v) xl1 + hi(u) xh0 + hi(v) xh1.

    q: uint8 array (flat), sixteen rows' byte pairs, each byte two 4-bit weights (low and high
    nibble); xl, xh: int32 holding an int8 pair in their low 16 bits (x0 | x1 << 8). Two
    ``vpmaddubsw`` (unsigned nibble times signed byte, pairs added: |sum| <= 2 * 15 * 127, so its
    saturation never happens). The int16 accumulator wraps; the caller recovers the true block
    sum, which it knows to fit (see `engines.simd.qkernels`)."""
    sig = types.void(q, qoff, xl, xh, acc, aoff)

    def codegen(context, builder, signature, args):
        qa, qo, xlv, xhv, aa, ao = args
        v32i8, v16i16 = ir.VectorType(_i8, 32), ir.VectorType(_i16, 16)
        v = builder.load(_at(context, builder, signature.args[0], qa, qo, v32i8), align=1)
        lo = builder.and_(v, ir.Constant(v32i8, [15] * 32))
        hi = builder.lshr(v, ir.Constant(v32i8, [4] * 32))
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v16i16, [v32i8, v32i8]),
                                            "llvm.x86.avx2.pmadd.ub.sw")
        s = builder.add(builder.call(fn, [lo, _splat(builder, builder.trunc(xlv, _i16), 16, v32i8)]),
                        builder.call(fn, [hi, _splat(builder, builder.trunc(xhv, _i16), 16, v32i8)]))
        ap = _at(context, builder, signature.args[4], aa, ao, v16i16)
        builder.store(builder.add(builder.load(ap, align=2), s), ap, align=2)
        return context.get_dummy_value()

    return sig, codegen


def _madd_many(n: int, nibbles: bool):
    """The step above for `n` inputs at once: the weights are loaded (and, for 4-bit, split
    into nibbles) once, then multiplied into each input's accumulator. Integer sums, so each
    input's accumulator ends exactly as `n` one-input steps would leave it.

    Arguments: q, qoff (as above); xs, xoff: the inputs' packed pairs, xs[xoff + j] for input j
    (int32: an int16 pair for Q8_0, an int8 pair for 4-bit; for 4-bit, xs holds the low-half
    pairs and xh the high-half ones); acc, aoff, stride: input j's accumulator starts at
    acc[aoff + j * stride]."""

    def typer(typingctx, q, qoff, xs, xh, xoff, acc, aoff, stride):
        sig = types.void(q, qoff, xs, xh, xoff, acc, aoff, stride)

        def codegen(context, builder, signature, args):
            qa, qo, xa, ha, xo, aa, ao, st = args
            i64 = ir.IntType(64)

            def scalar(arrty, arr, k):
                ptr = _at(context, builder, arrty, arr, builder.add(builder.sext(xo, i64) if xo.type.width < 64 else xo,
                                                                     ir.Constant(i64, k)), _i32)
                return builder.load(ptr, align=4)

            def acc_ptr(j, vecty):
                o = builder.add(builder.sext(ao, i64) if ao.type.width < 64 else ao,
                                builder.mul(builder.sext(st, i64) if st.type.width < 64 else st, ir.Constant(i64, j)))
                return _at(context, builder, signature.args[5], aa, o, vecty)

            if nibbles:
                v32i8, v16i16 = ir.VectorType(_i8, 32), ir.VectorType(_i16, 16)
                v = builder.load(_at(context, builder, signature.args[0], qa, qo, v32i8), align=1)
                lo = builder.and_(v, ir.Constant(v32i8, [15] * 32))
                hi = builder.lshr(v, ir.Constant(v32i8, [4] * 32))
                fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v16i16, [v32i8, v32i8]),
                                                    "llvm.x86.avx2.pmadd.ub.sw")
                for j in range(n):
                    xl = _splat(builder, builder.trunc(scalar(signature.args[2], xa, j), _i16), 16, v32i8)
                    xh = _splat(builder, builder.trunc(scalar(signature.args[3], ha, j), _i16), 16, v32i8)
                    s = builder.add(builder.call(fn, [lo, xl]), builder.call(fn, [hi, xh]))
                    ap = acc_ptr(j, v16i16)
                    builder.store(builder.add(builder.load(ap, align=2), s), ap, align=2)
            else:
                v16i8, v16i16, v8i32 = ir.VectorType(_i8, 16), ir.VectorType(_i16, 16), ir.VectorType(_i32, 8)
                w = builder.sext(builder.load(_at(context, builder, signature.args[0], qa, qo, v16i8), align=1), v16i16)
                fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8i32, [v16i16, v16i16]),
                                                    "llvm.x86.avx2.pmadd.wd")
                for j in range(n):
                    x = _splat(builder, scalar(signature.args[2], xa, j), 8, v16i16)
                    ap = acc_ptr(j, v8i32)
                    builder.store(builder.add(builder.load(ap, align=4), builder.call(fn, [w, x])), ap, align=4)
            return context.get_dummy_value()

        return sig, codegen

    typer.__name__ = f"madd_{'nibbles_u4' if nibbles else 'pairs_i8'}_x{n}"
    return intrinsic(typer)


# several inputs over the same weights (a speculative verify, a short prefill): 4, 2 or 1 at a time
madd_pairs_i8_x4, madd_pairs_i8_x2, madd_pairs_i8_x1 = (_madd_many(n, False) for n in (4, 2, 1))
madd_nibbles_u4_x4, madd_nibbles_u4_x2, madd_nibbles_u4_x1 = (_madd_many(n, True) for n in (4, 2, 1))


def _pattern(builder, a, b, lanes: int):
    """[a, b, a, b, ...] (float32), `lanes` long."""
    vec = ir.VectorType(ir.FloatType(), lanes)
    v = builder.insert_element(ir.Constant(vec, ir.Undefined), a, ir.Constant(_i32, 0))
    v = builder.insert_element(v, b, ir.Constant(_i32, 1))
    return builder.shuffle_vector(v, ir.Constant(vec, ir.Undefined), ir.Constant(ir.VectorType(_i32, lanes), [0, 1] * (lanes // 2)))


@intrinsic
def fma_pairs_q8(typingctx, q, qoff, x0, x1, acc, aoff):
    """acc[aoff : aoff+16] (float32) += q[qoff+k] * (x0 if k is even else x1), k = 0..15: eight
    rows' weight pairs (int8) times a float32 input pair, into a pair of sums a row. Generic LLVM
    IR, so every machine has it (the float path of `engines.simd.qkernels`)."""
    sig = types.void(q, qoff, x0, x1, acc, aoff)

    def codegen(context, builder, signature, args):
        qa, qo, a, b, aa, ao = args
        v16i8, v16f = ir.VectorType(_i8, 16), ir.VectorType(ir.FloatType(), 16)
        w = builder.sitofp(builder.load(_at(context, builder, signature.args[0], qa, qo, v16i8), align=1), v16f)
        ap = _at(context, builder, signature.args[4], aa, ao, v16f)
        p = builder.fmul(w, _pattern(builder, a, b, 16), flags=["contract"])
        builder.store(builder.fadd(builder.load(ap, align=4), p, flags=["contract"]), ap, align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def fma_pairs_q4(typingctx, q, qoff, xl0, xl1, xh0, xh1, acc, aoff):
    """acc[aoff : aoff+32] (float32) += for k = 0..31, byte v = q[qoff+k]: lo(v) xl + hi(v) xh,
    (xl, xh) = (xl0, xh0) for even k and (xl1, xh1) for odd: sixteen rows' byte pairs (uint8, two
    4-bit weights a byte) times float32 inputs, into a pair of sums a row. Generic LLVM IR."""
    sig = types.void(q, qoff, xl0, xl1, xh0, xh1, acc, aoff)

    def codegen(context, builder, signature, args):
        qa, qo, a0, a1, b0, b1, aa, ao = args
        v32i8, v32f = ir.VectorType(_i8, 32), ir.VectorType(ir.FloatType(), 32)
        v = builder.load(_at(context, builder, signature.args[0], qa, qo, v32i8), align=1)
        lo = builder.uitofp(builder.and_(v, ir.Constant(v32i8, [15] * 32)), v32f)
        hi = builder.uitofp(builder.lshr(v, ir.Constant(v32i8, [4] * 32)), v32f)
        p = builder.fadd(builder.fmul(lo, _pattern(builder, a0, a1, 32), flags=["contract"]),
                         builder.fmul(hi, _pattern(builder, b0, b1, 32), flags=["contract"]), flags=["contract"])
        ap = _at(context, builder, signature.args[6], aa, ao, v32f)
        builder.store(builder.fadd(builder.load(ap, align=4), p, flags=["contract"]), ap, align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def half_to_float8(typingctx, h, hoff, out, ooff):
    """out[ooff : ooff+8] (float32) = h[hoff : hoff+8] (uint16 holding IEEE fp16 bits) as float32.

    Generic LLVM IR (``fpext half to float``), not an x86 intrinsic: with F16C (x86) it is one
    ``vcvtph2ps``, on ARM ``fcvtl``; elsewhere LLVM calls its runtime's conversion. Exact for every
    fp16 value, subnormals, infinities and NaNs included."""
    sig = types.void(h, hoff, out, ooff)

    def codegen(context, builder, signature, args):
        ha, ho, oa, oo = args
        v8i16, v8f16, v8f32 = ir.VectorType(_i16, 8), ir.VectorType(ir.HalfType(), 8), ir.VectorType(ir.FloatType(), 8)
        bits = builder.load(_at(context, builder, signature.args[0], ha, ho, v8i16), align=2)
        f = builder.fpext(builder.bitcast(bits, v8f16), v8f32)
        builder.store(f, _at(context, builder, signature.args[2], oa, oo, v8f32), align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def round_to_half(typingctx, x):
    """float32 x rounded to the nearest fp16 (ties to even, as NumPy's astype(float16)), as
    float32: ``fptrunc`` then ``fpext``."""
    sig = types.float32(types.float32)

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.fptrunc(args[0], ir.HalfType()), ir.FloatType())

    return sig, codegen

