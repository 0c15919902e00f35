"""One sampler for every engine: greedy, temperature, top-k, top-p, seeded.

Engines hand back logits as a NumPy vector; sampling happens here, in float64, so two
engines that produce the same logits pick the same token for the same seed.
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

    def describe(self) -> str:
        if self.greedy or self.temperature <= 0:
            return "greedy"
        parts = [f"temperature={self.temperature:g}"]
        if self.top_k:
            parts.append(f"top_k={self.top_k}")
        if self.top_p < 1.0:
            parts.append(f"top_p={self.top_p:g}")
        parts.append(f"seed={self.seed}")
        return ", ".join(parts)


class Sampler:
    def __init__(self, params: SamplingParams):
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def __call__(self, logits: np.ndarray) -> int:
        p = self.params
        if p.greedy or p.temperature <= 0:
            return int(np.argmax(logits))
        x = np.asarray(logits, dtype=np.float64) / p.temperature
        ids = np.arange(x.shape[0])
        if 0 < p.top_k < x.shape[0]:
            ids = np.argpartition(-x, p.top_k - 1)[: p.top_k]
            x = x[ids]
        # softmax, max-subtracted
        x = np.exp(x - x.max())
        probs = x / x.sum()
        if p.top_p < 1.0:
            order = np.argsort(-probs, kind="stable")
            sorted_p = probs[order]
            cum = np.cumsum(sorted_p)
            keep = int(np.searchsorted(cum, p.top_p)) + 1  # smallest prefix with mass >= top_p
            order = order[:keep]
            ids, probs = ids[order], sorted_p[:keep] / sorted_p[:keep].sum()
        else:
            order = np.argsort(ids, kind="stable")  # a fixed order makes draws reproducible
            ids, probs = ids[order], probs[order]
        r = self.rng.random()
        k = int(np.searchsorted(np.cumsum(probs), r * probs.sum(), side="right"))
        return int(ids[min(k, len(ids) - 1)])
