"""The acceptance rule of speculative sampling (Leviathan et al., 2023, "Fast Inference from
Transformers via Speculative Decoding"; Chen et al., 2023, "Accelerating Large Language Model
Decoding with Speculative Sampling"), as pure functions of probability vectors.

A drafter proposed tokens x_1..x_k, drawing x_i from its distribution q_i; the target's one
pass gives p_1..p_{k+1} (p_i the target's distribution for the position of x_i, p_{k+1} for
the position after x_k). In order, x_i is accepted with probability min(1, p_i(x_i) / q_i(x_i));
at the first rejection the token emitted instead is drawn from the residual
norm(max(0, p_i - q_i)) and the round ends; if all k are accepted, a bonus token is drawn from
p_{k+1}. Each emitted token is then distributed exactly as p_i: the accepted mass is
min(q_i, p_i) and the residual supplies p_i - min(q_i, p_i). A deterministic drafter (prompt
lookup) is q_i = a point mass on x_i. Greedy is the limit where p_i is a point mass on the
target's argmax: accept while the draft equals it, then emit the argmax.
"""

from __future__ import annotations

import numpy as np


def accept_probability(p: np.ndarray, q: np.ndarray, x: int) -> float:
    """The chance the drafted token x is kept: min(1, p(x) / q(x)); q(x) > 0, x came from q."""
    return min(1.0, float(p[x]) / float(q[x]))


def residual(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """What a rejection draws from: max(0, p - q), normalised. Where p <= q everywhere (p == q),
    rejection has probability 0; p is returned so the function is total."""
    r = np.maximum(p - q, 0.0)
    s = r.sum()
    return r / s if s > 0 else p


def draw(probs: np.ndarray, u: float) -> int:
    """The token at uniform u in [0, 1) of a distribution (inverse CDF, ids in order)."""
    cdf = np.cumsum(probs)
    return int(min(np.searchsorted(cdf, u * cdf[-1], side="right"), np.flatnonzero(probs)[-1]))


def verify_sampled(p: np.ndarray, q: np.ndarray, drafted: list[int], rng) -> list[int]:
    """The tokens a round emits: the accepted prefix of `drafted`, then one more (the residual's
    draw at the first rejection, or the bonus from p[k]). p (k+1, V), q (k, V) float64
    probabilities; rng: a NumPy Generator (two uniforms at most per drafted token)."""
    out = []
    for i, x in enumerate(drafted):
        if rng.random() < accept_probability(p[i], q[i], x):
            out.append(int(x))
            continue
        out.append(draw(residual(p[i], q[i]), rng.random()))
        return out
    out.append(draw(p[len(drafted)], rng.random()))
    return out


def verify_greedy(argmax: list[int], drafted: list[int]) -> list[int]:
    """Greedy: argmax[i] is the target's pick at the position of drafted[i] (argmax[k] after the
    last): the drafts the target agrees with, then its own pick where it first disagrees (or
    the bonus). The same ids as decoding one token at a time."""
    out = []
    for a, x in zip(argmax, drafted):
        out.append(int(a))
        if a != x:
            return out
    out.append(int(argmax[len(drafted)]))
    return out
