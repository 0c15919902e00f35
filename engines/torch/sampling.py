"""The sampler's steps (see `engines.sampling`) in torch, on the device that holds the logits.

The uniform draw still comes from the host's NumPy stream, as a Python float: passing it to a
kernel costs no sync, and it keeps the token stream the same as the NumPy implementation's
for the same seed. The pick returns a 0-d tensor on the device; only `int()` of it (the token
id, 8 bytes) crosses to the host. No step reads a device value on the host: the prefix kept
by top-p is a mask, not a slice.
"""

from __future__ import annotations

import torch

from ..sampling import Sampler


class TorchSampler(Sampler):
    def argmax(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.argmax(logits)  # the first of equal maxima, as np.argmax

    def pick(self, logits: torch.Tensor, r: float) -> torch.Tensor:
        p = self.params
        x = logits.to(torch.float64) / p.temperature
        V = x.shape[0]
        ids = torch.arange(V, device=x.device)
        keep = torch.ones(V, dtype=torch.bool, device=x.device)
        if 0 < p.top_k < V:
            kth = torch.topk(x, p.top_k, sorted=False).values.min()  # the k-th largest value, 0-d
            above = x > kth
            ties = x == kth
            keep = above | (ties & (torch.cumsum(ties, 0) <= p.top_k - above.sum()))
        probs = torch.softmax(torch.where(keep, x, float("-inf")), dim=0)
        order = ids
        if p.top_p < 1.0:
            order = torch.sort(-probs, stable=True).indices
            ranked = probs[order]
            before = torch.cat((ranked.new_zeros(1), torch.cumsum(ranked, 0)[:-1]))  # mass of the more likely ids
            probs = torch.zeros_like(probs).index_put_((order,), torch.where(before < p.top_p, ranked, 0.0))
        in_order = probs[order]
        cdf = torch.cumsum(in_order, 0)
        j = torch.searchsorted(cdf, (cdf[-1] * r).reshape(1), right=True)
        last = torch.where(in_order > 0, ids, -1).max().reshape(1)
        # index_select, not order[tensor]: indexing with a 0-d tensor reads it on the host (a sync)
        token = order.index_select(0, torch.minimum(j, last).clamp(min=0)).squeeze(0)
        # a NaN or Inf logit: hand it on (argmax points at it), so the caller sees it
        return torch.where(torch.isfinite(x.max()), token, torch.argmax(x))
