"""Quantized weights: GGUF's block formats used as aios's own (`formats`). The kernels that
multiply them live with their engine (`engines.simd.qkernels`, `engines.torch.qlinear`)."""
