"""One sampler for every engine: greedy, temperature, top-k, top-p, seeded.

The random stream is one NumPy generator on the host, whatever the engine: each non-greedy
token consumes one uniform draw `r`. The pick itself runs where the logits are (here in NumPy
for the CPU engines; `engines.torch_sampling` does the same steps on the device), so only the
token id crosses to the host. Both implementations follow the same steps in float64:

    x = logits / temperature
    keep = the top_k ids (all ids when top_k is off), in ascending id order
    p = softmax(x[keep])
    top_p < 1: order keep by p descending (ties: lower id first) and keep the smallest prefix
               whose mass reaches top_p, renormalised
    token = keep[first j with cumsum(p)[j] > r * sum(p)]

so two engines that produce the same logits pick the same token for the same seed (up to
float rounding at a boundary), and greedy is a plain argmax (the first of equal maxima).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    greedy: bool = True
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off
    seed: int = 0

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature <= 0

    def describe(self) -> str:
        if self.is_greedy:
            return "greedy"
        parts = [f"temperature={self.temperature:g}"]
        if self.top_k:
            parts.append(f"top_k={self.top_k}")
        if self.top_p < 1.0:
            parts.append(f"top_p={self.top_p:g}")
        parts.append(f"seed={self.seed}")
        return ", ".join(parts)


class Sampler:
    """Picks the next token from a logits vector (V,). Calling it returns the token id: an int
    here, a 0-d tensor on the device for the torch implementation (`int()` of it syncs)."""

    def __init__(self, params: SamplingParams):
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def __call__(self, logits):
        if self.params.is_greedy:
            return self.argmax(logits)
        return self.pick(logits, float(self.rng.random()))

    def argmax(self, logits) -> int:
        return int(np.argmax(logits))

    def pick(self, logits, r: float) -> int:
        p = self.params
        x = np.asarray(logits, dtype=np.float64) / p.temperature
        V = x.shape[0]
        keep = np.sort(np.argpartition(-x, p.top_k - 1)[: p.top_k]) if 0 < p.top_k < V else np.arange(V)
        e = np.exp(x[keep] - x[keep].max())
        probs = e / e.sum()
        if p.top_p < 1.0:
            order = np.argsort(-probs, kind="stable")
            keep, probs = keep[order], probs[order]
            before = np.concatenate(([0.0], np.cumsum(probs)[:-1]))  # mass of the more likely tokens
            probs = np.where(before < p.top_p, probs, 0.0)  # the smallest prefix reaching top_p
        cdf = np.cumsum(probs)
        j = int(np.searchsorted(cdf, r * cdf[-1], side="right"))
        last = int(np.flatnonzero(probs)[-1])
        return int(keep[min(j, last)])
