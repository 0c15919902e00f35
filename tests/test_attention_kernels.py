"""The CPU attention kernels `aios sim attention` is checked against: both equal float64
NumPy attention (softmax(QKᵀ/√d) V), with and without a causal mask, on sizes that are not
multiples of the tiles."""

from __future__ import annotations

import numpy as np
import pytest

from profilers.sim.kernels import flash_attention, standard_attention


def reference(q, k, v, causal):
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    s = q @ k.T / np.sqrt(q.shape[1])
    if causal:
        n, nk = s.shape
        s = np.where(np.arange(nk)[None, :] <= (nk - n) + np.arange(n)[:, None], s, -np.inf)
    p = np.exp(s - s.max(axis=1, keepdims=True))
    return (p / p.sum(axis=1, keepdims=True)) @ v


@pytest.mark.parametrize("n,nk,d,br,bc", [(37, 37, 16, 8, 12), (64, 64, 32, 16, 16), (1, 300, 64, 1, 64),
                                          (129, 200, 8, 32, 50), (5, 5, 3, 4, 4)])
@pytest.mark.parametrize("causal", [False, True])
def test_kernels_equal_float64_attention(n, nk, d, br, bc, causal):
    rng = np.random.default_rng(n * 1000 + nk + d)
    q, k, v = (rng.standard_normal((m, d)).astype(np.float32) for m in (n, nk, nk))
    want = reference(q, k, v, causal)
    # float32 through a softmax and a sum of up to Nk terms: a few ulps of the values' scale
    tol = 2e-6 * np.sqrt(nk) * np.abs(v).max() + 1e-6
    np.testing.assert_allclose(standard_attention(q, k, v, causal), want, atol=tol, rtol=0)
    np.testing.assert_allclose(flash_attention(q, k, v, br, bc, causal), want, atol=tol, rtol=0)
