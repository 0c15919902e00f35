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
from .drafters import check_draft_min
from .rule import verify_greedy, verify_sampled


class SpeculativeGeneration(Generation):
    """Up to `max_new_tokens` tokens after `prompt_ids`, drafted `k` at a time by `drafter`
    (anything with `propose(context, k) -> list[int]` and `deterministic = True`; a drafter
    with its own distribution also has `distributions(context, drafted) -> (k, V)`)."""

    def __init__(self, engine, prompt_ids: list[int], max_new_tokens: int, sampler: Sampler, drafter, k: int,
                 stop_ids: tuple[int, ...] = (), draft_max: int | None = None, draft_min: int = 0):
        if k < 1:
            raise UserError(f"--spec-k must be 1 or more, got {k}", "pass --spec-k 4, say")
        check_draft_min(draft_min, not sampler.params.is_greedy, getattr(drafter, "deterministic", False))
        super().__init__(engine, prompt_ids, max_new_tokens, sampler, stop_ids)
        self.drafter = drafter
        # k: fixed, or with draft_max adaptive (see `adapt`); k_max is the histogram's width
        self.k = min(k, draft_max) if draft_max else k
        self.k_max = draft_max or k
        self.adaptive = draft_max is not None
        self.draft_min = draft_min
        self.drafted: list[int] | None = None  # this round's proposal, between its draft and verify passes
        # per round: how many drafts were proposed, how many of them the target kept, and k
        self.proposed: list[int] = []
        self.accepted: list[int] = []
        self.ks: list[int] = []
        self.dropped = 0  # drafts shorter than draft_min, not verified
        self.engines = [engine] + ([drafter.engine] if hasattr(drafter, "engine") else [])
        if hasattr(drafter, "start"):
            drafter.start(engine.capacity)

    def next_pass(self) -> tuple[str, int, int]:
        """(phase, token index, tokens pushed) of the pass `step()` runs next."""
        if not self.generated_ids:
            return "prefill", 0, len(self.prompt_ids)
        if self.drafted is None:
            return "draft", len(self.generated_ids), 0
        return ("verify" if self.drafted else "decode"), len(self.generated_ids), 1 + len(self.drafted)

    def pass_engine(self) -> str:
        """Which engine the next pass runs on: "draft" or "target" where the drafter is a model of
        its own, "" (the run's one engine) for prompt lookup."""
        if len(self.engines) == 1:
            return ""
        return "draft" if self.generated_ids and self.drafted is None else "target"

    def adapt(self, accepted: int, proposed: int) -> None:
        """Adaptive k (with draft_max), the schedule HF transformers calls "heuristic": a round that
        kept every draft grows k by 2 (up to draft_max), any rejection shrinks it by 1 (down to 1).
        Rounds that drafted less than k (prompt lookup found a short match) leave it."""
        if not self.adaptive or proposed < self.k and accepted == proposed:
            return
        self.k = min(self.k_max, self.k + 2) if accepted == proposed else max(1, self.k - 1)

    def step(self) -> list[int]:
        """Run the next pass; the tokens it emitted (none for a draft pass)."""
        engine = self.engine
        if not self.generated_ids:
            return self._emit([sample_next(engine, self.sampler, engine.prefill(self.prompt_ids))])
        if self.drafted is None:
            room = self.max_new_tokens - len(self.generated_ids) - 1  # a round emits up to k + 1
            context = self.prompt_ids + self.generated_ids
            self.drafted = self.drafter.propose(context, min(self.k, room)) if room > 0 else []
            if 0 < len(self.drafted) < self.draft_min:
                self.dropped += 1
                self.drafted = []
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
        self.ks.append(self.k)
        self.adapt(len(out) - 1, len(drafted))
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
        hist = np.bincount(self.accepted, minlength=self.k_max + 1).tolist() if rounds else [0] * (self.k_max + 1)
        # acceptance by draft position: of the rounds that drafted a token at position i, how many kept it
        at = [(sum(1 for p, a in zip(self.proposed, self.accepted) if p > i and a > i),
               sum(1 for p in self.proposed if p > i)) for i in range(self.k_max)]
        return {"verify_steps": rounds, "drafted_tokens": proposed, "accepted_tokens": accepted,
                "acceptance_rate": accepted / proposed if proposed else None,
                "tokens_per_verify_step": (accepted + rounds) / rounds if rounds else None,
                "accepted_length_histogram": hist,
                "acceptance_by_position": [kept / n if n else None for kept, n in at],
                "k_mean": float(np.mean(self.ks)) if self.ks else None, "adaptive_k": self.adaptive,
                "dropped_drafts": self.dropped}
