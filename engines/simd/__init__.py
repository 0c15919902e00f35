"""The simd engine: NumPy + Numba. `engine` is the forward pass; `kernels` the float32 kernels,
`qkernels` the quantized matvecs, `intrinsics` the AVX2 and fp16 steps they use."""
