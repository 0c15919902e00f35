"""Kernel micro-benchmarks behind `aios compare`: a timing harness, reference kernels, the
float64 correctness check and the backends' runs. One concept per module."""
