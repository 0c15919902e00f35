"""The torch engine (backends `torch` on the CPU and `cuda` on an NVIDIA GPU): `engine` is the
forward pass; `dnnl` the prepacked CPU matmuls, `qlinear` the quantized linears, `sampling` the
sampler that picks on the device."""
