"""The inputs of a kernel comparison and the float64 check every result passes before its
time counts."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)


def op_cost(op: str, n: int) -> tuple[float, float]:
    """(FLOPs, minimum bytes) of a float32 dot of length n / an n x n x n matmul."""
    if op == "dot":
        return 2.0 * n, 8.0 * n
    return 2.0 * n**3, 4.0 * 3 * n * n


def check(got, ref64: np.ndarray, abs_terms: np.ndarray, k: int) -> tuple[bool, float]:
    """Is `got` the float32 answer? Bound: 4 * sqrt(k) * eps32 * sum|a_i b_i| per output
    (float32 rounding of k products summed in any order), plus a tiny absolute floor.
    Returns (ok, max relative error)."""
    got = np.asarray(got, dtype=np.float64)
    if got.shape != ref64.shape or not np.all(np.isfinite(got)):
        return False, float("inf")
    tol = 4.0 * math.sqrt(k) * EPS32 * abs_terms + 1e-30
    err = np.abs(got - ref64)
    ok = bool(np.all(err <= tol))
    scale = np.maximum(np.abs(ref64), 1e-30)
    return ok, float(np.max(err / scale))


@dataclass
class Case:
    """Seeded float32 inputs of one op and size, with their float64 answer."""

    op: str
    size: int
    a: np.ndarray
    b: np.ndarray
    ref: np.ndarray
    abs_terms: np.ndarray
    k: int

    @classmethod
    def make(cls, op: str, size: int, seed: int = 0) -> "Case":
        rng = np.random.default_rng([seed, size])
        shape = (size,) if op == "dot" else (size, size)
        a = rng.standard_normal(shape, dtype=np.float32)
        b = rng.standard_normal(shape, dtype=np.float32)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        return cls(op, size, a, b, np.asarray(a64 @ b64), np.asarray(np.abs(a64) @ np.abs(b64)), size)
