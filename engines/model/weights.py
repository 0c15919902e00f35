"""The weight layout, defined once: which Hugging Face tensors each engine reads, fused how.

A decoder layer's weights are one `LayerWeights` record with the q|k|v and gate|up
projections already fused along their output rows (one matrix each, so each projection is one
GEMV/GEMM). The loading code builds the records in their stored form (`TensorRef`: the bytes as
the checkpoint holds them); each engine then only converts the representation with
`LayerWeights.map` (Python lists, contiguous float32 arrays, tensors on a device), so every
engine reads the same fields under the same names.

This is where quantized weights plug in: a record may hold any tensor type, and the bytes an op
reads are counted from each tensor's own storage (`op_weight_bytes`), never from one itemsize
per engine. Shapes use the legend in `engines.model.config`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Generic, Iterator, TypeVar

import numpy as np

from .config import ModelConfig
from ..ops import ATTN_NORM, DOWN_PROJ, EMBED, FINAL_NORM, GATE_UP_PROJ, LM_HEAD, MLP_NORM, O_PROJ, OPS, QK_NORM, QKV_PROJ
from .safetensors_mmap import TensorRef

T = TypeVar("T")
U = TypeVar("U")

EMBED_NAME = "model.embed_tokens.weight"
FINAL_NORM_NAME = "model.norm.weight"
LM_HEAD_NAME = "lm_head.weight"


def layer_prefix(i: int) -> str:
    return f"model.layers.{i}."


@dataclass
class LayerWeights(Generic[T]):
    """One decoder layer's weights. None marks a tensor the architecture does not have."""

    attn_norm: T  # (H,)
    qkv: T  # (q + 2kv, H): q_proj | k_proj | v_proj
    qkv_bias: T | None  # (q + 2kv,): Qwen2/2.5 only
    q_norm: T | None  # (hd,): Qwen3 only
    k_norm: T | None  # (hd,)
    o_proj: T  # (H, q)
    mlp_norm: T  # (H,)
    gate_up: T  # (2I, H): gate_proj | up_proj
    down: T  # (H, I)

    def map(self, convert: Callable[[T, str], U]) -> "LayerWeights[U]":
        """The same record with every tensor converted by convert(tensor, role) (None stays None;
        role as `weights.role`: linear or vector)."""
        return LayerWeights(**{f.name: None if (t := getattr(self, f.name)) is None else convert(t, role(f.name))
                               for f in dataclasses.fields(self)})

    def tensors(self) -> Iterator[T]:
        for f in dataclasses.fields(self):
            t = getattr(self, f.name)
            if t is not None:
                yield t


def layer_sources(cfg: ModelConfig) -> dict[str, tuple[tuple[str, tuple[int, ...]], ...]]:
    """field of LayerWeights -> the HF tensors (name after the layer prefix, shape) fused into it,
    in order along dim 0. The one place the checkpoint's names and the fusions are written."""
    H, I, q, kv, hd = cfg.hidden_size, cfg.intermediate_size, cfg.q_dim, cfg.kv_dim, cfg.head_dim
    a = "self_attn."
    src = {
        "attn_norm": (("input_layernorm.weight", (H,)),),
        "qkv": ((a + "q_proj.weight", (q, H)), (a + "k_proj.weight", (kv, H)), (a + "v_proj.weight", (kv, H))),
        "qkv_bias": ((a + "q_proj.bias", (q,)), (a + "k_proj.bias", (kv,)), (a + "v_proj.bias", (kv,))),
        "q_norm": ((a + "q_norm.weight", (hd,)),),
        "k_norm": ((a + "k_norm.weight", (hd,)),),
        "o_proj": ((a + "o_proj.weight", (H, q)),),
        "mlp_norm": (("post_attention_layernorm.weight", (H,)),),
        "gate_up": (("mlp.gate_proj.weight", (I, H)), ("mlp.up_proj.weight", (I, H))),
        "down": (("mlp.down_proj.weight", (H, I)),),
    }
    if not cfg.attention_bias:
        del src["qkv_bias"]
    if not cfg.qk_norm:
        del src["q_norm"], src["k_norm"]
    return src


def model_sources(cfg: ModelConfig) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The tensors outside the layers: embedding, final norm and (untied) lm_head."""
    out = {"embed": (EMBED_NAME, (cfg.vocab_size, cfg.hidden_size)), "final_norm": (FINAL_NORM_NAME, (cfg.hidden_size,))}
    if not cfg.tie_word_embeddings:
        out["lm_head"] = (LM_HEAD_NAME, (cfg.vocab_size, cfg.hidden_size))
    return out


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor the forward pass reads, by its HF name, with its shape."""
    shapes = {EMBED_NAME: (cfg.vocab_size, cfg.hidden_size)}
    per_layer = [t for parts in layer_sources(cfg).values() for t in parts]
    for i in range(cfg.num_layers):
        p = layer_prefix(i)
        shapes.update((p + name, shape) for name, shape in per_layer)
    shapes.update(dict(model_sources(cfg).values()))
    return shapes


def to_float32(t: TensorRef) -> np.ndarray:
    """Widen any stored dtype to a C-contiguous float32 array (bf16: shift the bits up; a GGUF
    block format: the `gguf` package dequantizes). A float32 tensor comes back as is: a view of
    the mapped file, no copy."""
    a = t.array
    if t.quantized:
        from ..quant.formats import QTensor

        return QTensor(t.dtype, a, t.cols).dequantize()
    if t.dtype == "bfloat16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    if t.dtype == "float32":
        return np.ascontiguousarray(a)
    return a.astype(np.float32)


def _fuse(parts: list[TensorRef]) -> TensorRef:
    """Concatenate along dim 0 in the stored dtype (float32 if the parts differ). Quantized rows
    are whole blocks, so rows of one format concatenate as bytes."""
    if len(parts) == 1:
        return parts[0]
    if len({(p.dtype, p.cols) for p in parts}) == 1:
        return TensorRef(np.concatenate([p.array for p in parts]), parts[0].dtype, parts[0].cols)
    return TensorRef(np.concatenate([to_float32(p) for p in parts]), "float32")


# The role of each weight, which decides what `--quant` does to it (`engines.quant.formats.plan`).
VECTOR_FIELDS = frozenset({"attn_norm", "qkv_bias", "q_norm", "k_norm", "mlp_norm"})


def role(field_name: str) -> str:
    """linear | embed | lm_head | vector, for a LayerWeights field or embed/final_norm/lm_head."""
    if field_name in VECTOR_FIELDS or field_name == "final_norm":
        return "vector"
    return field_name if field_name in ("embed", "lm_head") else "linear"


class ModelWeights:
    """A checkpoint's tensors in their stored form, as the engines read them. Layers are fused
    when asked for, one at a time, so an engine converting layer by layer never holds more than
    one layer's fused copy besides its own."""

    def __init__(self, cfg: ModelConfig, tensor: Callable[[str], TensorRef], stored_dtype: str):
        self.tied = cfg.tie_word_embeddings
        self._sources = layer_sources(cfg)
        self.tensor = tensor  # HF name -> TensorRef
        self.stored_dtype = stored_dtype

    def layer(self, i: int, cut: Callable[[str, int, TensorRef], TensorRef] | None = None) -> LayerWeights[TensorRef]:
        """Layer i's record. `cut(field, part, tensor)`, when given, takes each stored part before
        the parts fuse (a tensor-parallel rank's share, `engines.model.shards.stored_cut`), so a
        rank copies only its rows and columns out of the mapped file."""
        p = layer_prefix(i)
        fields = {f.name: None for f in dataclasses.fields(LayerWeights)}
        for field_name, parts in self._sources.items():
            refs = [self.tensor(p + name) for name, _ in parts]
            if cut is not None:
                refs = [cut(field_name, k, t) for k, t in enumerate(refs)]
            fields[field_name] = _fuse(refs)
        return LayerWeights(**fields)

    @property
    def embed(self) -> TensorRef:  # (V, H)
        return self.tensor(EMBED_NAME)

    @property
    def final_norm(self) -> TensorRef:  # (H,)
        return self.tensor(FINAL_NORM_NAME)

    @property
    def lm_head(self) -> TensorRef | None:  # (V, H); None when tied: the embedding is the lm_head
        return None if self.tied else self.tensor(LM_HEAD_NAME)


# Which fields of LayerWeights each per-layer op reads.
_OP_FIELDS = {
    ATTN_NORM: ("attn_norm",),
    QKV_PROJ: ("qkv", "qkv_bias"),
    QK_NORM: ("q_norm", "k_norm"),
    O_PROJ: ("o_proj",),
    MLP_NORM: ("mlp_norm",),
    GATE_UP_PROJ: ("gate_up",),
    DOWN_PROJ: ("down",),
}


def op_weight_bytes(layers: list[LayerWeights], embed, final_norm, lm_head, vocab_size: int,
                    nbytes: Callable[[object], int]) -> np.ndarray:
    """Weight bytes one execution of each op reads, from each tensor's storage (`nbytes`):
    shape (L + 1, len(OPS)); row i is layer i, the last row (index -1, as the ops outside the
    layers are lapped) holds embed (per token: one row), final_norm and lm_head."""
    tab = np.zeros((len(layers) + 1, len(OPS)), np.float64)
    for i, lw in enumerate(layers):
        for op, fields in _OP_FIELDS.items():
            tab[i, op] = sum(nbytes(t) for f in fields if (t := getattr(lw, f)) is not None)
    tab[-1, EMBED] = nbytes(embed) / vocab_size
    tab[-1, FINAL_NORM] = nbytes(final_norm)
    tab[-1, LM_HEAD] = nbytes(lm_head)
    return tab


def resident_bytes(layers: list[LayerWeights], embed, final_norm, lm_head, nbytes: Callable[[object], int]) -> int:
    """Bytes of every weight an engine holds (a tied lm_head counted once)."""
    total = sum(nbytes(t) for lw in layers for t in lw.tensors()) + nbytes(embed) + nbytes(final_norm)
    return total + (0 if lm_head is embed else nbytes(lm_head))
