"""A request to the batched engine: its tokens, its sampling, its state and its timestamps.

States: WAITING (queued, no KV held) -> RUNNING (holds KV blocks, computed a chunk at a time)
-> FINISHED (stop token, length limit, or aborted). A running request whose blocks are taken
back under memory pressure is PREEMPTED: it waits again, at the front of the queue, and
recomputes its KV (prompt and the tokens generated so far) when it is admitted again; what it
had generated is kept, so its output is the same as if it had never been preempted.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

from .kv_blocks import BlockTable
from ..sampling import Sampler, SamplingParams


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED = "finished"


@dataclass(eq=False)
class Request:
    id: str
    prompt_ids: list[int]
    max_new_tokens: int
    params: SamplingParams = field(default_factory=SamplingParams)
    stop_ids: tuple[int, ...] = ()
    arrival_s: float = field(default_factory=time.perf_counter)
    status: Status = Status.WAITING
    output_ids: list[int] = field(default_factory=list)
    table: BlockTable = field(default_factory=BlockTable)
    num_computed: int = 0  # leading tokens whose KV is in the table's blocks
    num_cached: int = 0  # of those, tokens taken from the prefix cache (at the last admission)
    finish_reason: str | None = None  # "stop", "length" or "abort"
    preemptions: int = 0
    first_token_s: float | None = None
    token_s: list[float] = field(default_factory=list)  # when each output token was produced
    finished_s: float | None = None
    sampler: Sampler | None = None
    # speculative decoding: this step's drafts, pushed through the model with the last token and
    # kept only as far as the verifier accepts them (between steps, always empty)
    draft_ids: list[int] = field(default_factory=list)

    def __post_init__(self):
        if self.sampler is None:
            self.sampler = Sampler(self.params)

    @property
    def tokens(self) -> list[int]:
        """Prompt and output so far (and this step's drafts): what the KV cache holds, or will, in order."""
        return self.prompt_ids + self.output_ids + self.draft_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids) + len(self.draft_ids)

    @property
    def remaining(self) -> int:
        """Tokens still to push through the model before the next one can be sampled."""
        return self.num_tokens - self.num_computed

    @property
    def in_prefill(self) -> bool:
        return self.remaining > 1

    @property
    def finished(self) -> bool:
        return self.status is Status.FINISHED

    def add_token(self, token: int, now: float) -> None:
        self.output_ids.append(token)
        self.token_s.append(now)
        if self.first_token_s is None:
            self.first_token_s = now
        if token in self.stop_ids:
            self.finish("stop", now)
        elif len(self.output_ids) >= self.max_new_tokens:
            self.finish("length", now)

    def finish(self, reason: str, now: float) -> None:
        self.status, self.finish_reason, self.finished_s = Status.FINISHED, reason, now
