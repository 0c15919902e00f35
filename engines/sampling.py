"""One sampler for every engine: greedy, temperature, top-k, top-p, seeded.

The random stream is one NumPy generator on the host, whatever the engine: each non-greedy
token consumes one uniform draw `r`. The pick itself runs where the logits are (here in NumPy
for the CPU engines; `engines.torch.sampling` does the same steps on the device), so only the
token id crosses to the host. Both implementations follow the same steps in float64:

    x = logits / temperature, over all V ids
    top_k: keep the k largest (ties at the k-th value: the lower ids), the rest get p = 0
    p = softmax(x) over the kept ids
    top_p < 1: order the ids by p descending (ties: lower id first) and keep the smallest
               prefix whose mass reaches top_p; otherwise the order is the ids' own
    token = the first id, in that order, where cumsum(p) > r * sum(p)

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
        x = np.asarray(logits, dtype=np.float64) / self.params.temperature
        if not np.isfinite(x.max()):
            return int(np.argmax(x))  # a NaN or Inf logit: hand it on, so the caller sees it
        probs, order = self._distribution(x)
        cdf = np.cumsum(probs[order])
        j = int(np.searchsorted(cdf, r * cdf[-1], side="right"))
        last = int(np.flatnonzero(probs[order])[-1])
        return int(order[min(j, last)])

    def distribution(self, logits) -> np.ndarray:
        """The probabilities (V,) float64 the sampler draws from: temperature, top-k and top-p
        applied (what a speculative verifier compares against). Greedy: all mass on the
        argmax."""
        x = np.asarray(logits, dtype=np.float64)
        if not self.params.is_greedy:
            x = x / self.params.temperature
        if self.params.is_greedy or not np.isfinite(x.max()):
            out = np.zeros(x.shape[0])
            out[int(np.argmax(x))] = 1.0
            return out
        probs = self._distribution(x)[0]
        return probs / probs.sum()

    def _distribution(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probs, the order the draw walks the ids in), from finite float64 logits already
        divided by the temperature."""
        p = self.params
        top = x.max()
        V = x.shape[0]
        keep = np.ones(V, bool)
        if 0 < p.top_k < V:
            kth = np.partition(x, V - p.top_k)[V - p.top_k]  # the k-th largest value
            ties = x == kth
            keep = (x > kth) | (ties & (np.cumsum(ties) <= p.top_k - np.count_nonzero(x > kth)))
        e = np.where(keep, np.exp(x - top), 0.0)  # the top-k always hold the maximum
        probs = e / e.sum()
        order = np.arange(V)
        if p.top_p < 1.0:
            order = np.argsort(-probs, kind="stable")
            ranked = probs[order]
            before = np.concatenate(([0.0], np.cumsum(ranked)[:-1]))  # mass of the more likely ids
            probs = np.zeros(V)
            probs[order] = np.where(before < p.top_p, ranked, 0.0)  # the smallest prefix reaching top_p
        return probs, order  # the mass top-p kept: the draw scales by its sum
