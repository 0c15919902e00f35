"""The canonical op list: the one place op names, kinds and barriers are defined.

Engines, the profiler, the exporters, the TUI and the docs all use these names. An engine
reports each op it executes by its index in ``OPS`` (an int is the cheapest thing to pass on
the hot path); everything downstream maps the index back to a name through this table.
"""

from __future__ import annotations

from typing import NamedTuple


class Op(NamedTuple):
    name: str
    kind: str  # memory | reduction | matmul | elementwise | other
    barrier: bool  # every output depends on a reduction over a whole axis
    per_layer: bool  # runs once per decoder layer (else once per forward pass)
    what: str


OPS: tuple[Op, ...] = (
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

OP_INDEX: dict[str, int] = {op.name: i for i, op in enumerate(OPS)}
OP_NAMES: tuple[str, ...] = tuple(op.name for op in OPS)
KINDS: tuple[str, ...] = ("matmul", "reduction", "elementwise", "memory", "other")

# Integer ids for the hot path: `probe.lap(layer, QKV_PROJ)`.
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
) = range(len(OPS))

# Time inside a token that no op claimed (loop overhead, host bookkeeping).
OTHER = "other"
