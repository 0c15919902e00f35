"""The scalar kernels: pure Python loops, one number at a time."""

from __future__ import annotations

from operator import mul


def scalar_dot(a: list, b: list) -> float:
    acc = 0.0
    for x, y in zip(a, b):
        acc += x * y
    return acc


def scalar_matmul_rows(A: list, Bt: list, rows: range) -> list:
    """Rows `rows` of A @ B, with B given transposed (so each output is a dot of two lists)."""
    return [[sum(map(mul, A[i], col)) for col in Bt] for i in rows]
