"""Speculative generation on a batch-1 engine, pull-style like `engines.generate.Generation`:
each `step()` is one pass, so a caller that measures wraps each from outside.

After the prefill, the passes alternate: a `draft` pass (the drafter proposes up to k tokens;
it emits none) and a `verify` pass (the target pushes the last emitted token and the k drafts
through in one prefill over the cache, every position's logits kept where they were
computed; `engines.spec.rule` decides, and the pass emits the accepted drafts and one token
more). The KV cache then rolls back to the last accepted token (`Engine.truncate`). A draft of
nothing makes the verify pass a plain one-token decode.

Greedy output is token for token the output of `Generation`; sampled output is distributed as
the target's (the rule's proof), though not the same ids for the same seed: the random stream
is consumed differently.
"""

from __future__ import annotations

import numpy as np

from ..errors import NonFiniteError, UserError
from ..generate import Generation, sample_next
from ..ops import SAMPLE
from ..sampling import Sampler
from .rule import verify_greedy, verify_sampled


class SpeculativeGeneration(Generation):
    """Up to `max_new_tokens` tokens after `prompt_ids`, drafted `k` at a time by `drafter`
    (anything with `propose(context, k) -> list[int]` and `deterministic = True`; a drafter
    with its own distribution also has `distributions(context, drafted) -> (k, V)`)."""

    def __init__(self, engine, prompt_ids: list[int], max_new_tokens: int, sampler: Sampler, drafter, k: int,
                 stop_ids: tuple[int, ...] = ()):
        if k < 1:
            raise UserError(f"--spec-k must be 1 or more, got {k}", "pass --spec-k 4, say")
        super().__init__(engine, prompt_ids, max_new_tokens, sampler, stop_ids)
        self.drafter, self.k = drafter, k
        self.drafted: list[int] | None = None  # this round's proposal, between its draft and verify passes
        # per round: how many drafts were proposed and how many of them the target kept
        self.proposed: list[int] = []
        self.accepted: list[int] = []

    def next_pass(self) -> tuple[str, int, int]:
        """(phase, token index, tokens pushed) of the pass `step()` runs next."""
        if not self.generated_ids:
            return "prefill", 0, len(self.prompt_ids)
        if self.drafted is None:
            return "draft", len(self.generated_ids), 0
        return ("verify" if self.drafted else "decode"), len(self.generated_ids), 1 + len(self.drafted)

    def step(self) -> list[int]:
        """Run the next pass; the tokens it emitted (none for a draft pass)."""
        engine = self.engine
        if not self.generated_ids:
            return self._emit([sample_next(engine, self.sampler, engine.prefill(self.prompt_ids))])
        if self.drafted is None:
            room = self.max_new_tokens - len(self.generated_ids) - 1  # a round emits up to k + 1
            context = self.prompt_ids + self.generated_ids
            self.drafted = self.drafter.propose(context, min(self.k, room)) if room > 0 else []
            return []
        drafted, self.drafted = self.drafted, None
        if not drafted:
            return self._emit([sample_next(engine, self.sampler, engine.decode(self.generated_ids[-1]))])
        past = engine.pos
        rows = engine.prefill([self.generated_ids[-1], *drafted], all_logits=True, on_device=True)  # (k+1, V)
        if self.sampler.params.is_greedy:
            out = verify_greedy(self._argmax(rows), drafted)
        else:
            host = engine.to_host(rows)
            self._check_finite(host)
            p = np.stack([self.sampler.distribution(r) for r in host])
            q = self._draft_distributions(drafted, p.shape[1])
            out = verify_sampled(p, q, drafted, self.sampler.rng)
        engine.lap(-1, SAMPLE)
        self.proposed.append(len(drafted))
        self.accepted.append(len(out) - 1)
        engine.truncate(past + len(out))  # the last emitted token and the accepted drafts stay
        return self._emit(out)

    def _emit(self, tokens: list[int]) -> list[int]:
        kept = []
        for t in tokens:
            if self.done:
                break
            kept.append(t)
            self.generated_ids.append(t)
            if t in self.stop_ids:
                self.stopped_at_eos = True
        return kept

    def _argmax(self, rows) -> list[int]:
        """Each row's argmax (the first of equal maxima), and a NaN/Inf check on the picked
        logits, in one transfer for a device tensor."""
        if isinstance(rows, np.ndarray):
            picks = np.argmax(rows, axis=-1)
            self._check_finite(rows[np.arange(rows.shape[0]), picks])
            return picks.tolist()
        import torch

        picks = torch.argmax(rows, dim=-1)
        chosen = rows.gather(1, picks.reshape(-1, 1))[:, 0]
        pairs = torch.stack((picks.to(torch.float64), chosen.to(torch.float64)), dim=1).tolist()
        self._check_finite(np.array([c for _, c in pairs]))
        return [int(t) for t, _ in pairs]

    def _draft_distributions(self, drafted: list[int], V: int) -> np.ndarray:
        if getattr(self.drafter, "deterministic", False):
            q = np.zeros((len(drafted), V))
            q[np.arange(len(drafted)), drafted] = 1.0
            return q
        return self.drafter.distributions(self.prompt_ids + self.generated_ids, drafted)

    def _check_finite(self, values: np.ndarray) -> None:
        if not np.isfinite(values).all():
            raise NonFiniteError(f"the model produced NaN or Inf logits at position {self.engine.pos}",
                                 "try --dtype float32")

    # --- what the rounds did -------------------------------------------------------------------
    def acceptance(self) -> dict:
        """Drafts proposed and accepted, tokens per verify pass, and how many rounds accepted
        0..k drafts (rounds with nothing drafted are plain decodes, not counted)."""
        rounds, proposed, accepted = len(self.proposed), sum(self.proposed), sum(self.accepted)
        hist = np.bincount(self.accepted, minlength=self.k + 1).tolist() if rounds else [0] * (self.k + 1)
        return {"verify_steps": rounds, "drafted_tokens": proposed, "accepted_tokens": accepted,
                "acceptance_rate": accepted / proposed if proposed else None,
                "tokens_per_verify_step": (accepted + rounds) / rounds if rounds else None,
                "accepted_length_histogram": hist}
