"""The sampler's steps (see `engines.sampling`) in torch, on the device that holds the logits.

The uniform draw still comes from the host's NumPy stream, as a Python float: passing it to a
kernel costs no sync, and it keeps the token stream the same as the NumPy implementation's
for the same seed. The pick returns a 0-d tensor on the device; only `int()` of it (the token
id, 8 bytes) crosses to the host. No step reads a device value on the host: the prefix kept
by top-p is a mask, not a slice.
"""

from __future__ import annotations

import torch

from .sampling import Sampler


class TorchSampler(Sampler):
    def argmax(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.argmax(logits)  # the first of equal maxima, as np.argmax

    def pick(self, logits: torch.Tensor, r: float) -> torch.Tensor:
        p = self.params
        x = logits.to(torch.float64) / p.temperature
        V = x.shape[0]
        if 0 < p.top_k < V:
            keep = torch.topk(x, p.top_k, sorted=False).indices.sort().values
        else:
            keep = torch.arange(V, device=x.device)
        probs = torch.softmax(x[keep], dim=0)
        if p.top_p < 1.0:
            order = torch.sort(-probs, stable=True).indices
            keep, probs = keep[order], probs[order]
            before = torch.cumsum(probs, 0).roll(1)
            before[0] = 0.0  # mass of the more likely tokens
            probs = torch.where(before < p.top_p, probs, torch.zeros_like(probs))
        cdf = torch.cumsum(probs, 0)
        j = torch.searchsorted(cdf, (cdf[-1] * r).reshape(1), right=True)[0]
        last = torch.where(probs > 0, torch.arange(probs.shape[0], device=x.device), -1).max()
        return keep[torch.minimum(j, last)]
