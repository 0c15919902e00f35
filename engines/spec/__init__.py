"""Speculative decoding: a cheap drafter proposes k tokens, the target checks them all in one
forward pass, and the rule of Leviathan et al. (2023) and Chen et al. (2023) keeps the output
exactly the target's (`rule`). One concept a file: `rule` (accept, residual, bonus; greedy and
sampled), `ngram` (prompt lookup: no second model), `generate` (the draft/verify loop over a
batch-1 engine, with KV rollback)."""
