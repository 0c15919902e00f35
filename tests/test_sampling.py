"""The sampler: greedy, seeded draws, the distribution against a float64 reference, and the
torch implementation (which runs where the logits are) picking the NumPy one's tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engines.sampling import Sampler, SamplingParams
from engines.torch.sampling import TorchSampler


def test_sampler_greedy_and_seeded():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=1000)
    assert Sampler(SamplingParams(greedy=True))(logits) == int(np.argmax(logits))
    p = SamplingParams(greedy=False, temperature=0.8, top_k=50, top_p=0.9, seed=7)
    a = [Sampler(p)(logits) for _ in range(3)]
    s1, s2 = Sampler(p), Sampler(p)
    assert [s1(logits) for _ in range(20)] == [s2(logits) for _ in range(20)]
    assert len(set(a)) == 1  # a fresh sampler with the same seed draws the same first token
    assert Sampler(SamplingParams(greedy=False, temperature=1.0, top_k=1))(logits) == int(np.argmax(logits))


def test_sampler_distribution_matches_float64_reference():
    logits = np.log(np.array([0.5, 0.25, 0.15, 0.07, 0.03]))
    n = 20000
    s = Sampler(SamplingParams(greedy=False, temperature=1.0, top_p=0.8, seed=3))
    counts = np.bincount([s(logits) for _ in range(n)], minlength=5) / n
    # top-p 0.8 keeps {0.5, 0.25, 0.15} (smallest prefix with mass >= 0.8), renormalised
    want = np.array([0.5, 0.25, 0.15, 0, 0]) / 0.9
    np.testing.assert_allclose(counts, want, atol=0.015)
    s = Sampler(SamplingParams(greedy=False, temperature=2.0, top_k=2, seed=3))
    counts = np.bincount([s(logits) for _ in range(n)], minlength=5) / n
    w = np.exp(logits[:2] / 2.0)
    np.testing.assert_allclose(counts[:2], w / w.sum(), atol=0.015)
    assert counts[2:].sum() == 0


@pytest.mark.parametrize("params", [
    SamplingParams(greedy=True),
    SamplingParams(greedy=False, temperature=0.7, seed=11),
    SamplingParams(greedy=False, temperature=1.3, top_k=40, seed=12),
    SamplingParams(greedy=False, temperature=0.9, top_p=0.9, seed=13),
    SamplingParams(greedy=False, temperature=1.0, top_k=100, top_p=0.5, seed=14),
], ids=["greedy", "temperature", "top-k", "top-p", "top-k+top-p"])
def test_torch_sampler_picks_the_numpy_samplers_tokens(params):
    """One sampler, two places: the same seed gives the same token stream from logits held in
    NumPy on the host or in torch (here on the CPU; on a GPU the same ops run on the device)."""
    rng = np.random.default_rng(5)
    ours, theirs = Sampler(params), TorchSampler(params)
    for _ in range(200):
        logits = rng.normal(scale=3.0, size=2000).astype(np.float32)
        tok = theirs(torch.from_numpy(logits))
        assert isinstance(tok, torch.Tensor) and tok.dim() == 0  # stays where the logits are
        assert int(tok) == ours(logits)


def test_greedy_is_the_first_of_equal_maxima():
    logits = np.zeros(10, np.float32)
    logits[[3, 7]] = 5.0
    assert Sampler(SamplingParams())(logits) == 3 == int(TorchSampler(SamplingParams())(torch.from_numpy(logits)))


@pytest.mark.parametrize("params", [
    SamplingParams(greedy=False, temperature=1.0, top_k=5, seed=21),
    SamplingParams(greedy=False, temperature=0.5, top_k=3, top_p=0.7, seed=22),
    SamplingParams(greedy=False, temperature=1.0, top_p=0.6, seed=23),
], ids=["top-k", "top-k+top-p", "top-p"])
def test_ties_break_the_same_way_in_both(params):
    """bf16 logits tie often: at the k-th value, and in the top-p ranking, the lower id goes
    first in both implementations, so they still pick the same tokens."""
    rng = np.random.default_rng(9)
    ours, theirs = Sampler(params), TorchSampler(params)
    for _ in range(200):
        logits = rng.integers(0, 4, size=64).astype(np.float32)  # a handful of values, many ties
        assert int(theirs(torch.from_numpy(logits))) == ours(logits)
    # top-k keeps exactly k ids, the lowest among equals
    logits = np.zeros(10, np.float32)
    s = Sampler(SamplingParams(greedy=False, temperature=1.0, top_k=3, seed=0))
    assert {s(logits) for _ in range(300)} == {0, 1, 2}
