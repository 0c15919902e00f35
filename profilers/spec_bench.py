"""`aios bench spec`'s measurement: the same prompts with and without speculative decoding,
interleaved repetition by repetition, on one target engine, so each speculative figure has a
baseline taken minutes, not hours, apart on the same noisy machine.

The workloads are fixed here, so numbers from different days compare: two where prompt lookup
can shine (editing code and editing text, where the answer repeats most of the prompt) and one
where it cannot (an open question, whose answer the prompt does not contain). None asks the
model to repeat itself; each asks for an edit, or an answer.

Timing: a generation's decode tok/s is the tokens after the first over the wall time of every
pass after the prompt's (drafts included), as `aios run` reports it; the prefill is left out of
both sides. A row's ratio is the median over repetitions of (speculative / baseline) tok/s, each
pair from the same repetition.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

WORKLOADS = {
    "code": ("code editing: add a docstring to a short function (the answer repeats the function)",
             "Add a docstring to this function and return the whole function.\n\n"
             "def area(width, height):\n"
             "    if width < 0 or height < 0:\n"
             "        raise ValueError(\"negative size\")\n"
             "    return width * height\n\n"
             "The function with a docstring:\n\n"
             "def area(width, height):"),
    "text": ("text editing: fix the spelling of a paragraph (the answer repeats the paragraph)",
             "Fix the spelling mistakes in this paragraph and write it out again.\n\n"
             "Paragraph: The quick brown fox jumpd over the lazy dog. It was a sunny day and the fox was very "
             "happpy. The dog did not care and went back to sleeep under the big oak tree.\n\n"
             "Corrected paragraph:"),
    "open": ("an open question (nothing in the prompt to look up)",
             "Question: Why do leaves change colour in autumn? Answer in a short paragraph.\nAnswer:"),
}


@dataclass(frozen=True)
class SpecCase:
    drafter: str  # a --speculate value
    k: int  # with draft_max: the first round's k, then adaptive
    draft_max: int | None = None

    @property
    def label(self) -> str:
        return str(self.k) if self.draft_max is None else f"{self.k}→{self.draft_max}"


@dataclass
class Series:
    """One configuration's repetitions on one workload."""
    tok_s: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    acceptance: list[float | None] = field(default_factory=list)
    per_verify: list[float | None] = field(default_factory=list)
    same_ids: list[bool] = field(default_factory=list)


def decode_rate(gen) -> tuple[float, list[int]]:
    """Run `gen` (a Generation or SpeculativeGeneration) to the end: (decode tok/s, the ids)."""
    gen.step()  # the prefill: not timed on either side
    first = len(gen.generated_ids)
    t0 = time.perf_counter()
    while not gen.done:
        gen.step()
    wall = time.perf_counter() - t0
    n = len(gen.generated_ids) - first
    return (n / wall if wall > 0 else float("nan")), list(gen.generated_ids)


def run_workloads(engine, drafters: dict, prompts: dict[str, list[int]], cases: list[SpecCase], n_new: int,
                  repetitions: int, sampling, on_rep=None) -> tuple[dict, dict]:
    """For each repetition, each workload: the baseline, then every case, in that order. Returns
    ({workload: baseline tok/s list}, {(workload, case): Series}). `drafters` maps each case's
    --speculate value to a built drafter."""
    from engines.generate import Generation
    from engines.spec.generate import SpeculativeGeneration

    base: dict[str, list[float]] = {w: [] for w in prompts}
    out = {(w, c): Series() for w in prompts for c in cases}
    for rep in range(repetitions):
        for w, ids in prompts.items():
            if on_rep:
                on_rep(rep, w)
            b, ref = decode_rate(Generation(engine, ids, n_new, engine.make_sampler(sampling)))
            base[w].append(b)
            for c in cases:
                g = SpeculativeGeneration(engine, ids, n_new, engine.make_sampler(sampling), drafters[c.drafter], c.k,
                                          draft_max=c.draft_max)
                s, got = decode_rate(g)
                acc = g.acceptance()
                ser = out[w, c]
                ser.tok_s.append(s)
                ser.ratios.append(s / b)
                ser.acceptance.append(acc["acceptance_rate"])
                ser.per_verify.append(acc["tokens_per_verify_step"])
                ser.same_ids.append(got == ref)
    return base, out


def med(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
