"""The generate loop every engine shares: prefill, sample, then decode one token at a time.

Each forward pass is one profiler step: begin_step, the engine's laps, the sampler's lap,
end_step. Memory is sampled between steps, outside the timed region.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from profilers.memory import MemorySampler
from profilers.ops import SAMPLE
from profilers.probe import Probe, Step

from .base import Engine
from .errors import UserError
from .sampling import Sampler


@dataclass
class Generation:
    prompt_ids: list[int]
    generated_ids: list[int] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    wall_s: float = 0.0
    stopped_at_eos: bool = False


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


def forward_step(engine: Engine, probe: Probe, sampler: Sampler, phase: str, index: int, n_tokens: int,
                 run: Callable[[], object]) -> tuple[int, Step]:
    """One profiled forward pass: `run()` (the engine's prefill or decode), then sampling."""
    probe.begin_step(phase, index, n_tokens, engine.pos)
    logits = run()
    probe.mark_host()
    token = sampler(logits)
    probe.host_lap(-1, SAMPLE)
    return token, probe.end_step()


def generate(
    engine: Engine,
    prompt_ids: list[int],
    max_new_tokens: int,
    sampler: Sampler,
    probe: Probe,
    memory: MemorySampler | None = None,
    on_token: Callable[[int], None] | None = None,
    stop_ids: tuple[int, ...] = (),
    should_stop: Callable[[], bool] | None = None,
    on_step: Callable[[Step], None] | None = None,
) -> Generation:
    """Generate up to `max_new_tokens` tokens after `prompt_ids` (the KV cache is reset).

    `on_step(step)` runs after each forward pass, outside its timed region: a live view reads
    steps there, and a paused view may block there without adding to any measured time.
    `should_stop()` is asked before each decode step."""
    check_request(engine.cfg, prompt_ids, max_new_tokens)
    engine.set_probe(probe)
    engine.reset(len(prompt_ids) + max_new_tokens)
    gen = Generation(list(prompt_ids))
    t0 = time.perf_counter()

    def step(phase: str, index: int, run: Callable):
        token, st = forward_step(engine, probe, sampler, phase, index, len(prompt_ids) if phase == "prefill" else 1, run)
        gen.steps.append(st)
        if memory is not None:
            memory.sample(engine)
        if on_step is not None:
            on_step(st)
        return token

    token = step("prefill", 0, lambda: engine.prefill(prompt_ids))
    for i in range(max_new_tokens):
        gen.generated_ids.append(token)
        if on_token:
            on_token(token)
        if token in stop_ids:
            gen.stopped_at_eos = True
            break
        if i == max_new_tokens - 1 or (should_stop and should_stop()):
            break
        prev = token
        token = step("decode", i + 1, lambda: engine.decode(prev))
    gen.wall_s = time.perf_counter() - t0
    return gen
