"""The drafters `--speculate` names, built from their spelling. One place for the names, so the
CLI's checks and its help read the same table."""

from __future__ import annotations

from ..errors import UserError

# --speculate value -> what it is; the ones not built yet are refused with one line
DRAFTERS = {"ngram": "prompt lookup: the tokens that followed the last n tokens' latest earlier match"}
PLANNED = ("draft:MODEL", "self:q4_0", "self:q8_0", "exit:L")


def check_speculate(spec: str | None, k: int) -> None:
    """Raise UserError now, before anything loads, for a --speculate or --spec-k aios cannot run."""
    if spec is None:
        return
    if spec not in DRAFTERS:
        planned = any(spec.startswith(p.split(":")[0] + ":") for p in PLANNED)
        raise UserError(f"--speculate {spec!r} " + ("is not built yet" if planned else "is not a drafter"),
                        f"use --speculate {' or '.join(DRAFTERS)}")
    if not 1 <= k <= 64:
        raise UserError(f"--spec-k must be between 1 and 64, got {k}", "pass --spec-k 4, say")


def make_drafter(spec: str):
    check_speculate(spec, 1)
    from .ngram import PromptLookup

    return PromptLookup()
