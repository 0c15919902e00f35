"""GGUF files -> Checkpoint, read with the `gguf` package's own reader (`gguf.GGUFReader`).

What is read from the file:
  * the architecture (`general.architecture`: llama, qwen2, qwen3) and the hyper-parameters from
    its `<arch>.*` metadata;
  * the tokenizer from `tokenizer.ggml.*` (`engines.model.gguf_tokenizer`);
  * the tensors, memory-mapped: F32, F16 and BF16 as floats, block formats (Q8_0, Q4_0, Q4_1,
    K-quants, ...) as their raw bytes, kept quantized where an engine has a kernel for the format
    and dequantized by the `gguf` package otherwise.

llama.cpp's names map onto the Hugging Face names the engines read (`engines.model.weights`), and GGUF's
dimensions, which run innermost first, onto row-major shapes.

The llama trap: llama.cpp's converter permutes the rows of a llama model's q and k projections
(HF's rotate-half RoPE pairs (j, j + hd/2); llama.cpp's interleaved pairs (2j, 2j + 1)), and
Hugging Face's GGUF loader undoes it. So does this one, row by row, which works on quantized rows
too (a block never spans two rows). Qwen2 and Qwen3 files are not permuted (llama.cpp runs them
with NEOX-style RoPE, which is HF's).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from .checkpoint import Checkpoint
from .config import ModelConfig, validate
from ..errors import ModelError
from .safetensors_mmap import TensorRef
from .weights import EMBED_NAME, FINAL_NORM_NAME, LM_HEAD_NAME, ModelWeights, expected_shapes

ARCHES = ("llama", "qwen2", "qwen3")
FLOAT_TYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
# block formats the gguf package dequantizes, and which aios therefore loads
BLOCK_TYPES = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
_FIX = "re-download or re-convert the GGUF file"

# llama.cpp's tensor names (after "blk.N.") -> the HF names after "model.layers.N."
LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
MODEL_NAMES = {"token_embd.weight": EMBED_NAME, "output_norm.weight": FINAL_NORM_NAME, "output.weight": LM_HEAD_NAME}


def hf_name(name: str) -> str | None:
    """llama.cpp's name of a tensor -> the HF name, or None for a tensor aios does not read
    (rope_freqs, say)."""
    if name in MODEL_NAMES:
        return MODEL_NAMES[name]
    parts = name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in LAYER_NAMES:
        return f"model.layers.{int(parts[1])}.{LAYER_NAMES[parts[2]]}"
    return None


def unpermute_rows(n_rows: int, n_head: int) -> np.ndarray:
    """The row order that undoes llama.cpp's q/k permutation: hf_rows = gguf_rows[order].

    The converter writes, per head of hd rows, the rows (0, hd/2, 1, hd/2 + 1, ...): it reshapes to
    (n_head, 2, hd/2) and swaps the last two axes. `order` is the inverse of that shuffle."""
    hd = n_rows // n_head
    written = np.arange(n_rows).reshape(n_head, 2, hd // 2).swapaxes(1, 2).reshape(n_rows)
    return np.argsort(written)


def _value(fields: dict, key: str):
    f = fields.get(key)
    if f is None:
        return None
    try:
        return f.contents()
    except Exception as e:  # a hostile field: say which
        raise ModelError(f"GGUF metadata {key} cannot be read ({type(e).__name__})", _FIX) from None


def _number(fields: dict, key: str, source: str, default=None, integer: bool = True):
    v = _value(fields, key)
    if v is None:
        if default is None:
            raise ModelError(f"{source}: GGUF metadata {key} is missing", _FIX)
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or abs(v) > 2**62:
        raise ModelError(f"{source}: GGUF metadata {key} must be a number, got {v!r:.60}", _FIX)
    if integer and int(v) != v:
        raise ModelError(f"{source}: GGUF metadata {key} must be an integer, got {v!r}", _FIX)
    return int(v) if integer else float(v)


def config_from_gguf(fields: dict, tensors: dict[str, TensorRef], source: str, name: str,
                     tensor_names: frozenset = frozenset()) -> ModelConfig:
    """The forward pass's configuration from a GGUF file's metadata (and, where GGUF says it
    only through tensors, from them: biases, q/k norms, a tied lm_head)."""
    arch = _value(fields, "general.architecture")
    if arch not in ARCHES:
        raise ModelError(f"{source}: unsupported architecture {str(arch)[:40]!r}",
                         f"aios runs {', '.join(ARCHES)} GGUF files")
    a = arch + "."
    scaling = _value(fields, a + "rope.scaling.type")
    if scaling not in (None, "none"):
        raise ModelError(f"{source}: unsupported RoPE scaling {str(scaling)[:40]!r}", "aios implements plain RoPE")
    for key in ("rope.scaling.factor", "rope.scale_linear"):  # llama.cpp reads a factor without a type as linear
        factor = _value(fields, a + key) if scaling is None else None
        if factor not in (None, 0, 1, 0.0, 1.0):
            raise ModelError(f"{source}: unsupported RoPE scaling ({a + key} = {str(factor)[:20]})", "aios implements plain RoPE")
    if "rope_freqs.weight" in tensor_names:
        raise ModelError(f"{source}: the file carries rope_freqs (Llama 3.1-style RoPE frequency scaling)",
                         "aios implements plain RoPE")
    if _value(fields, a + "expert_count") not in (None, 0):
        raise ModelError(f"{source}: mixture-of-experts models are not supported", "aios runs dense models")
    if _value(fields, a + "attention.sliding_window") not in (None, 0):
        raise ModelError(f"{source}: sliding-window attention is not supported", "aios runs full causal attention")
    H = _number(fields, a + "embedding_length", source)
    nh = _number(fields, a + "attention.head_count", source)
    if H <= 0 or nh <= 0:
        raise ModelError(f"{source}: embedding_length and head_count must be positive", _FIX)
    head_dim = _number(fields, a + "attention.key_length", source, H // nh)
    rot = _number(fields, a + "rope.dimension_count", source, head_dim)
    if rot != head_dim:
        raise ModelError(f"{source}: RoPE over {rot} of {head_dim} head dims (partial rotary) is not supported",
                         "aios rotates whole heads")
    if EMBED_NAME not in tensors:
        raise ModelError(f"{source}: tensor token_embd.weight is missing", _FIX)
    vocab = _number(fields, a + "vocab_size", source, tensors[EMBED_NAME].shape[0])
    eos = _value(fields, "tokenizer.ggml.eos_token_id")
    cfg = ModelConfig(
        arch=arch,
        vocab_size=vocab,
        hidden_size=H,
        intermediate_size=_number(fields, a + "feed_forward_length", source),
        num_layers=_number(fields, a + "block_count", source),
        num_heads=nh,
        num_kv_heads=_number(fields, a + "attention.head_count_kv", source, nh),
        head_dim=head_dim,
        rope_theta=_number(fields, a + "rope.freq_base", source, 10000.0, integer=False),
        rms_norm_eps=_number(fields, a + "attention.layer_norm_rms_epsilon", source, 1e-6, integer=False),
        tie_word_embeddings=LM_HEAD_NAME not in tensors,
        attention_bias="model.layers.0.self_attn.q_proj.bias" in tensors,
        qk_norm="model.layers.0.self_attn.q_norm.weight" in tensors,
        max_position_embeddings=_number(fields, a + "context_length", source, 4096),
        eos_token_ids=(eos,) if isinstance(eos, int) and not isinstance(eos, bool) else (),
        torch_dtype="float32",
        name=name,
    )
    if cfg.rope_theta <= 0 or cfg.rms_norm_eps <= 0:
        raise ModelError(f"{source}: rope.freq_base and layer_norm_rms_epsilon must be positive", _FIX)
    validate(cfg, source, _FIX)
    return cfg


def _tensor_ref(t, source: str) -> TensorRef:
    kind = t.tensor_type.name
    ne = [int(n) for n in t.shape]  # innermost first
    shape = tuple(reversed(ne))
    if kind in FLOAT_TYPES:
        a = t.data
        if kind == "BF16":
            a = a.view(np.uint16)
        return TensorRef(a.reshape(shape), FLOAT_TYPES[kind])
    if kind not in BLOCK_TYPES:
        raise ModelError(f"{source}: tensor {t.name} has unsupported type {kind}",
                         f"aios reads {', '.join(FLOAT_TYPES)} and {', '.join(BLOCK_TYPES)}")
    if len(shape) != 2:
        raise ModelError(f"{source}: tensor {t.name} is a {len(shape)}-d {kind} tensor", "aios reads quantized matrices only")
    return TensorRef(t.data.reshape(shape[0], -1), kind, cols=shape[1])


def _permuted(ref: TensorRef, n_head: int) -> TensorRef:
    order = unpermute_rows(ref.shape[0], n_head)
    return TensorRef(np.ascontiguousarray(ref.array[order]), ref.dtype, ref.cols)


def gguf_reader(path: str):
    """`gguf.GGUFReader` over a plain ndarray view of its memory map: the reader slices the map
    once per metadata item, and a slice of an `np.memmap` costs ~10 us of bookkeeping that a
    plain view does not (SmolLM2's 98,000 vocabulary strings: 6.8 s to open, 3.3 s like this).
    The view keeps the map alive and maps the same pages."""
    import gguf

    class Reader(gguf.GGUFReader):
        @property
        def data(self):
            return self._data

        @data.setter
        def data(self, value):
            self._data = value.view(np.ndarray)

    return Reader(path, "r")


def open_gguf(path: Path, source: str, name: str | None = None, kind: str = "gguf"):
    """A GGUF file -> Checkpoint. Raises ModelError, one line, for what cannot be used."""
    t0 = time.perf_counter()
    src = path.name
    try:
        reader = gguf_reader(str(path))
    except Exception as e:  # noqa: BLE001 -- the reader raises bare ValueError/struct/IndexError/... on bad bytes
        why = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        size = os.path.getsize(path)
        raise ModelError(f"{src} is not a readable GGUF file ({size} bytes: {why})", _FIX) from None
    fields = reader.fields
    tensors: dict[str, TensorRef] = {}
    for t in reader.tensors:
        hn = hf_name(t.name)
        if hn is not None:
            tensors[hn] = _tensor_ref(t, src)
    names = frozenset(t.name for t in reader.tensors)
    cfg = config_from_gguf(fields, tensors, src, name or path.stem, names)
    # the blocks the file holds, before anything is built per claimed layer (a block_count of 10^9)
    blocks = {int(n.split(".")[1]) for n in names if n.startswith("blk.") and n.split(".")[1].isdigit()}
    if cfg.num_layers != len(blocks) or blocks != set(range(len(blocks))):
        raise ModelError(f"{src}: the metadata says {cfg.num_layers} layers, the file holds {len(blocks)} blocks "
                         f"(blk.{min(blocks, default=0)}..blk.{max(blocks, default=-1)})", _FIX)
    shapes = expected_shapes(cfg)
    for hn, shape in shapes.items():
        if hn not in tensors:
            raise ModelError(f"{src}: tensor for {hn} is missing (the metadata says {cfg.num_layers} layers)", _FIX)
        if tensors[hn].shape != shape:
            raise ModelError(f"{src}: {hn} has shape {list(tensors[hn].shape)}, the metadata implies {list(shape)}", _FIX)
    v_len = _number(fields, cfg.arch + ".attention.value_length", src, cfg.head_dim)
    if v_len != cfg.head_dim:
        raise ModelError(f"{src}: attention.value_length ({v_len}) differs from key_length ({cfg.head_dim}); "
                         "aios runs equal key and value heads", _FIX)
    if cfg.arch == "llama":  # undo llama.cpp's q/k row permutation (module docstring)
        for i in range(cfg.num_layers):
            for proj, heads in (("q_proj", cfg.num_heads), ("k_proj", cfg.num_kv_heads)):
                for part in ("weight", "bias"):
                    key = f"model.layers.{i}.self_attn.{proj}.{part}"
                    if key in tensors:
                        tensors[key] = _permuted(tensors[key], heads)
    from .gguf_tokenizer import gguf_metadata, tokenizer_from_gguf

    # a tokenizer aios cannot build does not stop the model: --prompt-ids still runs it
    meta = gguf_metadata(reader, src)  # a field that cannot be decoded at all: the file is damaged
    tok, problem = None, None
    try:
        tok = tokenizer_from_gguf(meta, src)
    except ModelError as e:
        problem = e.problem
    if tok is not None and tok.get_vocab_size(with_added_tokens=True) > cfg.vocab_size:
        tok, problem = None, (f"{src}: the tokenizer has {tok.get_vocab_size(with_added_tokens=True)} tokens, the "
                              f"embedding {cfg.vocab_size} rows")
    notes = []
    if tok is None:
        notes.append(f"the tokenizer cannot be used ({problem}): pass --prompt-ids; output shows token ids"
                     if problem else "no tokenizer in the GGUF file: use --prompt-ids; output shows token ids")
    used = [tensors[n] for n in shapes]
    counts: dict[str, int] = {}
    for t in used:
        counts[t.dtype] = counts.get(t.dtype, 0) + int(np.prod(t.shape))
    main = max(counts, key=counts.get)
    return Checkpoint(
        config=cfg, weights=ModelWeights(cfg, tensors.__getitem__, "+".join(sorted(counts))), tokenizer=tok,
        source=source, kind=kind, path=str(path), stored_bytes=sum(t.nbytes for t in used),
        open_seconds=time.perf_counter() - t0, notes=notes,
        quant=main if main in BLOCK_TYPES else None, tokenizer_problem=problem,
        chat_template=t if isinstance(t := meta.get("tokenizer.chat_template"), str) and t.strip() else None,
    )
