"""Two CPU attention kernels (Numba), one head, float32, for checking `aios sim attention`
against real hardware: the same arithmetic in the same inner loops, different memory traffic.

  standard_attention  S = QKᵀ/√d written to an N x Nk buffer in main memory, softmax in place
                      (P), then O = PV: S and P make a round trip through DRAM
  flash_attention     row blocks of Br queries against column blocks of Bc keys with an online
                      softmax (running max m and sum l, the accumulator rescaled): the S tile
                      lives in a Br x Bc scratch that stays in cache; S and P never reach DRAM

Both parallelise over query rows (prange), as the simulator's CPU spec assumes (cores = SMs),
and both are compiled with fastmath, so their dot products vectorize alike.
`causal` masks key j > query i (queries end where the keys end).
"""

from __future__ import annotations

import math

import numpy as np

_KERNELS = None


def _build():
    import numba

    @numba.njit(parallel=True, cache=True, fastmath=True)
    def standard(q, k, v, s, out, causal):
        n, d = q.shape
        nk = k.shape[0]
        scale = np.float32(1.0 / math.sqrt(d))
        off = nk - n
        for i in numba.prange(n):  # S = Q Kᵀ, one row at a time, into DRAM
            last = nk if not causal else off + i + 1
            for j in range(last):
                acc = np.float32(0.0)
                for t in range(d):
                    acc += q[i, t] * k[j, t]
                s[i, j] = acc * scale
        for i in numba.prange(n):  # P = softmax(S), in place
            last = nk if not causal else off + i + 1
            mx = s[i, 0]
            for j in range(1, last):
                if s[i, j] > mx:
                    mx = s[i, j]
            tot = np.float32(0.0)
            for j in range(last):
                p = np.exp(s[i, j] - mx)
                s[i, j] = p
                tot += p
            inv = np.float32(1.0) / tot
            for j in range(last):
                s[i, j] *= inv
        for i in numba.prange(n):  # O = P V
            last = nk if not causal else off + i + 1
            for t in range(d):
                out[i, t] = 0.0
            for j in range(last):
                p = s[i, j]
                for t in range(d):
                    out[i, t] += p * v[j, t]

    @numba.njit(parallel=True, cache=True, fastmath=True)
    def flash(q, k, v, out, br, bc, causal):
        n, d = q.shape
        nk = k.shape[0]
        scale = np.float32(1.0 / math.sqrt(d))
        off = nk - n
        tr = (n + br - 1) // br
        for ib in numba.prange(tr):
            i0 = ib * br
            rows = min(br, n - i0)
            m = np.full(rows, -np.inf, dtype=np.float32)
            l = np.zeros(rows, dtype=np.float32)
            acc = np.zeros((rows, d), dtype=np.float32)
            st = np.empty((rows, bc), dtype=np.float32)
            last_key = nk if not causal else off + i0 + rows
            for j0 in range(0, last_key, bc):
                cols = min(bc, nk - j0)
                for r in range(rows):
                    lim = cols if not causal else min(cols, off + i0 + r + 1 - j0)
                    for c in range(lim):
                        a = np.float32(0.0)
                        for t in range(d):
                            a += q[i0 + r, t] * k[j0 + c, t]
                        st[r, c] = a * scale
                for r in range(rows):
                    lim = cols if not causal else min(cols, off + i0 + r + 1 - j0)
                    if lim <= 0:
                        continue
                    mx = m[r]
                    for c in range(lim):
                        if st[r, c] > mx:
                            mx = st[r, c]
                    corr = np.exp(m[r] - mx)
                    l[r] *= corr
                    for t in range(d):
                        acc[r, t] *= corr
                    for c in range(lim):
                        p = np.exp(st[r, c] - mx)
                        l[r] += p
                        for t in range(d):
                            acc[r, t] += p * v[j0 + c, t]
                    m[r] = mx
            for r in range(rows):
                inv = np.float32(1.0) / l[r]
                for t in range(d):
                    out[i0 + r, t] = acc[r, t] * inv

    return standard, flash


def kernels():
    global _KERNELS
    if _KERNELS is None:
        _KERNELS = _build()
    return _KERNELS


def standard_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, causal: bool = False,
                       s: np.ndarray | None = None) -> np.ndarray:
    """`s`: an (N, Nk) float32 buffer to reuse (timing loops); allocated when None."""
    std, _ = kernels()
    n, nk = q.shape[0], k.shape[0]
    s = np.empty((n, nk), np.float32) if s is None else s
    out = np.empty_like(q)
    std(q, k, v, s, out, causal)
    return out


def flash_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, br: int, bc: int, causal: bool = False) -> np.ndarray:
    _, fl = kernels()
    out = np.empty_like(q)
    fl(q, k, v, out, br, bc, causal)
    return out
