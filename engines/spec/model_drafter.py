"""Drafting with a model: a second engine (another checkpoint, the target's own weights in a
smaller format, or the target's first layers) proposes k tokens one decode at a time, and
keeps its own KV cache in step with the target's text.

Each round its cache is rolled back to the longest prefix it shares with the context (what the
target rejected is forgotten), the rest of the context is pushed through, and k tokens are
drafted. Greedy drafts are the drafter's argmax; sampled drafts are drawn from the drafter's
distribution after the same temperature, top-k and top-p as the target's (`Sampler.distribution`),
and those rows are the q the acceptance rule divides by (`engines.spec.rule`). A drafter whose
vocabulary is larger (padded embedding rows) drafts from its logits over the target's ids only,
so q is a distribution over ids the target has and the rule stays exact.
"""

from __future__ import annotations

import numpy as np

from ..sampling import SamplingParams


class ModelDrafter:
    """Drafts with `engine`; `label` names it in records ("draft:smollm2", "exit:8")."""

    def __init__(self, engine, label: str, params: SamplingParams, target_vocab: int, seed: int = 0,
                 min_p: float = 0.0):
        self.engine, self.name, self.params = engine, label, params
        self.sampler = engine.make_sampler(params)
        self.V = target_vocab
        self.rng = np.random.default_rng([seed, 0x5EED])  # its own stream: the target's is left as it was
        self.deterministic = params.is_greedy  # a greedy draft's q is a point mass on it
        self.min_p = min_p  # stop drafting at a token the drafter itself gives less than this
        self.cached: list[int] = []  # the ids whose keys and values are in the drafter's cache
        self.q: np.ndarray | None = None  # the last round's q rows (sampled drafting)

    def start(self, capacity: int) -> None:
        """A new sequence of up to `capacity` positions (the target's)."""
        self.engine.reset(capacity)
        self.cached = []

    def warmup(self, ids: list[int]) -> float:
        jit = self.engine.warmup()
        self.start(len(ids) + 4)
        self.propose(list(ids), 2)
        return jit

    def propose(self, context: list[int], k: int) -> list[int]:
        if k < 1:
            return []
        e = self.engine
        keep = 0
        limit = min(len(self.cached), len(context) - 1)  # push at least the last token: its logits are needed
        while keep < limit and self.cached[keep] == context[keep]:
            keep += 1
        e.truncate(keep)
        rest = context[keep:]
        room = e.capacity - len(context)  # the drafter decodes k - 1 tokens past the context
        k = min(k, room + 1)
        if k < 1:
            return []
        logits = e.prefill(rest) if len(rest) > 1 else e.decode(rest[0])
        self.cached = list(context)
        drafted: list[int] = []
        rows = []
        while True:
            token, q = self._pick(e.to_host(logits))
            if token is None:
                break
            drafted.append(token)
            rows.append(q)
            if len(drafted) == k:
                break
            logits = e.decode(token)
            self.cached.append(token)
        self.q = np.stack(rows) if rows and not self.deterministic else None
        return drafted

    def distributions(self, context: list[int], drafted: list[int]) -> np.ndarray:
        """The q rows of this round's drafts (sampled drafting)."""
        return self.q[: len(drafted)]

    def _pick(self, logits: np.ndarray) -> tuple[int | None, np.ndarray | None]:
        """The next draft and its q row over the target's ids; (None, None) to stop drafting.

        The probability floor looks at the drafter's most likely token before any draw (as
        llama.cpp's --draft-p-min does): a stop decided from the drawn token would bias the
        output, since the rule's residual assumes every draw of q is proposed."""
        logits = np.asarray(logits, np.float64)
        if not np.isfinite(logits).all():
            return None, None  # a drafter gone to NaN drafts nothing; the target decodes alone
        V = self.V
        row = logits[:V]
        if self.deterministic:
            t = int(np.argmax(row))
            if self.min_p > 0 and 1.0 / np.exp(row - row[t]).sum() < self.min_p:
                return None, None
            return t, None
        q = self.sampler.distribution(row)
        if len(q) < V:  # the target has padded rows the drafter lacks: never drafted
            q = np.concatenate([q, np.zeros(V - len(q))])
        if q.max() < self.min_p:
            return None, None
        return int(self.rng.choice(V, p=q)), q
