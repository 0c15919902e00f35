"""Simulators: `attention` (attention's loop nests over tiles in one SM's SRAM, HBM bytes, a
roofline time) and `kernels` (standard and flash attention in Numba, the CPU kernels its
predictions are measured against)."""
