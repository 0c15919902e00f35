"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input: the message names the problem and, after ' — ', the fix."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} — {fix}" if fix else problem)


class ModelError(UserError):
    """The model source (directory, repo id, preset, config, weights) cannot be used."""


class BackendError(UserError):
    """The requested engine cannot run on this machine."""


class NonFiniteError(UserError):
    """A forward pass produced NaN or Inf logits."""
