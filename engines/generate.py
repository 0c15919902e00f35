"""Generation, one forward pass at a time: prefill, then decode one token at a time.

`Generation` is pull-style: nothing runs until the caller asks for the next pass with
`step()` (or iterates), so a caller that measures wraps each pass from outside, a live view
pauses by not pulling, and a batched engine can offer the same shape. It knows nothing of
measurement: the only thing it adds to the engine's laps is the `sample` op's.
"""

from __future__ import annotations

from typing import Iterator

from .errors import NonFiniteError, UserError
from .ops import SAMPLE
from .sampling import Sampler


def check_request(cfg, ids: list[int], max_new_tokens: int) -> None:
    """Everything about a generation request that can be refused before any work."""
    if max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be positive, got {max_new_tokens}", "pass 1 or more")
    check_prompt(ids, cfg.vocab_size)
    limit = cfg.max_position_embeddings
    if len(ids) + max_new_tokens > limit:
        raise UserError(
            f"{len(ids)} prompt + {max_new_tokens} new tokens exceed the model's context of {limit}",
            "shorten the prompt or lower --max-new-tokens",
        )


def check_prompt(ids: list[int], vocab_size: int) -> None:
    if not ids:
        raise UserError("the prompt is empty", "pass --prompt TEXT or --prompt-ids 1,2,3")
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise UserError(
            f"prompt id {bad[0]} is outside the vocabulary (0..{vocab_size - 1})",
            "pass ids below the model's vocab_size",
        )


def sample_next(engine, sampler: Sampler, logits) -> int:
    """Pick the next token where the logits are, lapped as the `sample` op; only the id (and
    its logit, to see that it is finite) crosses to the host. A NaN or Inf logit is always the
    one picked (greedy's argmax and the sampler point at it), so checking that one value is
    enough: no pass over the vocabulary on the hot path."""
    token = sampler(logits)
    engine.lap(-1, SAMPLE)
    token, finite = engine.read_token(token, logits)
    if not finite:
        where = engine.nonfinite_weight()
        raise NonFiniteError(
            f"the model produced NaN or Inf logits at position {engine.pos}"
            + (f": {where} holds NaN or Inf" if where else " (every weight is finite: the activations overflowed)"),
            "fix or re-download the checkpoint" if where else "try --dtype float32")
    return token


class Generation:
    """Up to `max_new_tokens` tokens after `prompt_ids`, on an engine whose KV cache it resets.

    Each `step()` is one forward pass and returns the token it produced: the first is the
    prefill over the prompt, the others decode the previous token. `done` turns true after
    `max_new_tokens` tokens or a token in `stop_ids`."""

    def __init__(self, engine, prompt_ids: list[int], max_new_tokens: int, sampler: Sampler,
                 stop_ids: tuple[int, ...] = ()):
        check_request(engine.cfg, prompt_ids, max_new_tokens)
        self.engine = engine
        self.prompt_ids = list(prompt_ids)
        self.max_new_tokens = max_new_tokens
        self.sampler = sampler
        self.stop_ids = stop_ids
        self.generated_ids: list[int] = []
        self.stopped_at_eos = False
        engine.reset(len(prompt_ids) + max_new_tokens)

    @property
    def done(self) -> bool:
        return self.stopped_at_eos or len(self.generated_ids) >= self.max_new_tokens

    def next_pass(self) -> tuple[str, int, int]:
        """(phase, token index, tokens pushed) of the pass `step()` runs next."""
        if not self.generated_ids:
            return "prefill", 0, len(self.prompt_ids)
        return "decode", len(self.generated_ids), 1

    def step(self) -> int:
        engine = self.engine
        if self.generated_ids:
            logits = engine.decode(self.generated_ids[-1])
        else:
            logits = engine.prefill(self.prompt_ids)
        token = sample_next(engine, self.sampler, logits)
        self.generated_ids.append(token)
        if token in self.stop_ids:
            self.stopped_at_eos = True
        return token

    def __iter__(self) -> Iterator[int]:
        while not self.done:
            yield self.step()
