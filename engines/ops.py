"""The canonical op table: the contract every engine implements, and the one place op names,
kinds and barriers are defined.

An engine reports each op it executes by calling ``lap(layer, op_id)`` with the op's index in
``OPS`` (an int is the cheapest thing to pass on the hot path); everything downstream (the
profiler, the exporters, the TUI, the docs) maps the index back to a name through this table.

A fused kernel (SDPA or flash attention, a norm fused into a projection, a whole CUDA graph)
is reported as a *composite* op: one row of this table whose ``covers`` names the canonical
ops it stands for. Its time cannot be split among them, so it has a kind of its own
(``fused``); it stands for the barriers it covers (a fused attention still waits on one
softmax per layer), so barrier counts stay right, and it is one more row in every table, so
the tables still add up.

A distributed run's collectives (`engines.dist`) are ops of their own kind, `comm`:
`allreduce` (per layer: a tensor-parallel rank's partial sums added up, a barrier across the
ranks), `send` and `recv` (a pipeline stage's activations) and `broadcast` (the sampled token).
They are lapped where they happen, so a rank's tables say how much of its time was waiting.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Op(NamedTuple):
    name: str
    kind: str  # one of KINDS
    barrier: bool  # every output depends on a reduction over a whole axis
    per_layer: bool  # runs once per decoder layer (else once per forward pass)
    what: str
    covers: tuple[str, ...] = ()  # a composite op: the canonical ops it stands for


CANONICAL: tuple[Op, ...] = (
    Op("embed", "memory", False, False, "row lookup (once, before layer 0)"),
    Op("attn_norm", "reduction", True, True, "RMSNorm over hidden"),
    Op("qkv_proj", "matmul", False, True, "q, k, v projections (+bias on Qwen2)"),
    Op("qk_norm", "reduction", True, True, "Qwen3 only: per-head RMSNorm on q and k"),
    Op("rope", "elementwise", False, True, "rotary position embedding"),
    Op("attn_scores", "matmul", False, True, "q.k^T / sqrt(d) over the KV cache"),
    Op("attn_softmax", "reduction", True, True, "causal softmax over keys"),
    Op("attn_mix", "matmul", False, True, "weights . v"),
    Op("o_proj", "matmul", False, True, "output projection + residual"),
    Op("mlp_norm", "reduction", True, True, "RMSNorm over hidden"),
    Op("gate_up_proj", "matmul", False, True, "gate and up projections"),
    Op("silu_mul", "elementwise", False, True, "silu(gate) * up"),
    Op("down_proj", "matmul", False, True, "down projection + residual"),
    Op("final_norm", "reduction", True, False, "once, after the last layer"),
    Op("lm_head", "matmul", False, False, "hidden -> vocab logits"),
    Op("sample", "reduction", True, False, "softmax / argmax over the vocabulary"),
)

COMPOSITE: tuple[Op, ...] = (
    Op("attention", "fused", True, True, "attn_scores + attn_softmax + attn_mix in one kernel (SDPA, flash attention)",
       ("attn_scores", "attn_softmax", "attn_mix")),
)

# A distributed run's communication (`engines.dist`), each lapped where it happens: the time a
# rank spends in a collective includes its wait for the slowest peer (that wait is the cost).
COMM: tuple[Op, ...] = (
    Op("allreduce", "comm", True, True, "tensor parallel: sum the ranks' partial products (after o_proj and down_proj)"),
    Op("send", "comm", False, False, "pipeline parallel: the activations to the next stage"),
    Op("recv", "comm", False, False, "pipeline parallel: the activations from the previous stage (and the wait for them)"),
    Op("broadcast", "comm", False, False, "the sampled token, from the rank that samples to every rank"),
)

OPS: tuple[Op, ...] = CANONICAL + COMPOSITE + COMM
OP_INDEX: dict[str, int] = {op.name: i for i, op in enumerate(OPS)}
OP_NAMES: tuple[str, ...] = tuple(op.name for op in OPS)
KINDS: tuple[str, ...] = ("matmul", "reduction", "elementwise", "memory", "fused", "comm", "other")

# Integer ids for the hot path: `lap(layer, QKV_PROJ)`.
(
    EMBED,
    ATTN_NORM,
    QKV_PROJ,
    QK_NORM,
    ROPE,
    ATTN_SCORES,
    ATTN_SOFTMAX,
    ATTN_MIX,
    O_PROJ,
    MLP_NORM,
    GATE_UP_PROJ,
    SILU_MUL,
    DOWN_PROJ,
    FINAL_NORM,
    LM_HEAD,
    SAMPLE,
    ATTENTION,
    ALLREDUCE,
    SEND,
    RECV,
    BROADCAST,
) = range(len(OPS))

# Time inside a token that no op claimed (loop overhead, host bookkeeping).
OTHER = "other"


def covered(op: Op) -> tuple[str, ...]:
    """The canonical ops `op` stands for: itself, or what a composite covers."""
    return op.covers or (op.name,)


# Reduction barriers each op stands for (a canonical barrier 1, a composite the barriers it
# covers): the barriers of a pass are its op counts dotted with this.
BARRIERS_PER_OP = np.array([sum(OPS[OP_INDEX[c]].barrier for c in covered(op)) for op in OPS], dtype=np.int64)
# Ops whose time is barrier time: a composite that covers a barrier is one (its outputs wait
# on that reduction).
BARRIER_MASK = BARRIERS_PER_OP > 0
KIND_OF = np.array([KINDS.index(op.kind) for op in OPS])


def noop_lap(layer: int, op: int) -> None:
    """The lap of an engine nobody measures: a plain function that does nothing."""
    return None
