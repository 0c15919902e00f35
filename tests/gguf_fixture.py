"""Small random Hugging Face models written as GGUF files, the way llama.cpp's convert_hf_to_gguf.py
writes them, so that GGUF readers can be tested against transformers without downloading a model.

`write_gguf` builds a seeded float32 `LlamaForCausalLM` / `Qwen2ForCausalLM` / `Qwen3ForCausalLM`,
writes it with `gguf.GGUFWriter` (metadata keys, tensor names, F32 norms and biases, llama's q/k row
permutation) and returns the file with the model it came from. transformers' GGUF loader reads the
files back (`load_with_transformers`); tests/test_gguf_fixture.py checks that the round trip is exact.

No tokenizer is written (tests pass token ids): transformers takes the vocabulary size from
`{arch}.vocab_size` and loads the model without any `tokenizer.ggml.*` key.
"""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    import gguf
    import transformers

ARCHS = ("llama", "qwen2", "qwen3")
QUANTS = ("F32", "F16", "Q8_0", "Q4_0", "Q4_1")

# Small enough to build and write in well under a second; every row length (hidden, intermediate,
# heads * head_dim) is a multiple of 32, the Q8_0/Q4_0/Q4_1 block size, so nothing falls back to F16.
DEFAULT_SHAPE = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256)
# Real-model values, each different from its config class's default (10000.0, 1e-6), so a key that
# the reader drops shows up as a config mismatch rather than passing by coincidence.
DEFAULT_ARCH = {
    "llama": dict(rope_theta=500000.0, rms_norm_eps=1e-5),
    "qwen2": dict(rope_theta=1000000.0, rms_norm_eps=1e-5),
    "qwen3": dict(rope_theta=1000000.0, rms_norm_eps=1e-5),
}

# HF parameter name (layer prefix removed) -> GGUF tensor name, as gguf-py's TensorNameMap has them.
_LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_GLOBAL_NAMES = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}


def _hf_classes(arch: str) -> tuple[type, type]:
    import transformers as tf

    return {
        "llama": (tf.LlamaConfig, tf.LlamaForCausalLM),
        "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM),
        "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM),
    }[arch]


def gguf_name(hf_name: str) -> str:
    """The GGUF tensor name of an HF parameter: `model.layers.3.mlp.up_proj.weight` -> `blk.3.ffn_up.weight`."""
    stem, suffix = hf_name.rsplit(".", 1)  # suffix: weight | bias
    if stem in _GLOBAL_NAMES:
        return f"{_GLOBAL_NAMES[stem]}.{suffix}"
    parts = stem.split(".")
    if parts[:2] == ["model", "layers"] and ".".join(parts[3:]) in _LAYER_NAMES:
        return f"blk.{parts[2]}.{_LAYER_NAMES['.'.join(parts[3:])]}.{suffix}"
    # A parameter the map does not know would otherwise be dropped silently, and the file would
    # load with that tensor at its random init.
    raise KeyError(f"no GGUF name for HF parameter {hf_name!r}")


def llama_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotate-half q/k row order -> llama.cpp's interleaved one (convert_hf_to_gguf's `permute`).

    HF rotates row i of a head with row i + d/2; llama.cpp's `llama` RoPE rotates adjacent rows 2i
    and 2i + 1. So within each head of d rows: new[2i + j] = old[j * d/2 + i], for j in {0, 1}.
    `n_head` is the number of heads the rows split into: query heads for q, KV heads for k.
    Works on weights (rows, cols) and biases (rows,) alike.
    """
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama_unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of `llama_permute`: what transformers' LlamaTensorProcessor applies on load."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def make_config(arch: str, *, tied: bool = False, **shape_overrides) -> "transformers.PretrainedConfig":
    """The HF config `write_gguf` builds: DEFAULT_SHAPE and DEFAULT_ARCH, then the overrides."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, not {arch!r}")
    config_cls, _ = _hf_classes(arch)
    kw = {**DEFAULT_SHAPE, **DEFAULT_ARCH[arch], **shape_overrides}
    if arch == "qwen2" and kw["head_dim"] != kw["hidden_size"] // kw["num_attention_heads"]:
        # Qwen2Config has no head_dim field: Qwen2 attention always uses hidden / heads.
        raise ValueError("qwen2 has head_dim = hidden_size // num_attention_heads; do not override it")
    if arch == "qwen2":
        kw.pop("head_dim")
    # No special tokens: the files carry no tokenizer, and the configs' defaults name ids
    # (Qwen's 151643) far outside the small vocabulary.
    kw.update(tie_word_embeddings=tied, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    if arch == "llama":
        kw.setdefault("attention_bias", False)
        kw.setdefault("mlp_bias", False)
    return config_cls(**kw)


def rope_theta(config: "transformers.PretrainedConfig") -> float:
    """The RoPE base: `rope_parameters["rope_theta"]` in transformers 5, `rope_theta` before."""
    params = getattr(config, "rope_parameters", None)
    return float(params["rope_theta"]) if params else float(config.rope_theta)


def _randomize(model: torch.nn.Module) -> None:
    """Replace every parameter with seeded noise that makes a wrong tensor visible in the logits.

    HF's init leaves norms at exactly 1 and biases at 0, so a reader that dropped or swapped them
    would still match; here norms are 1 + 0.1 N(0,1), biases 0.1 N(0,1), and matrices N(0,1)/sqrt(cols)
    (activations and logits of order 1, so an atol of 1e-5 is a tight check).
    """
    with torch.no_grad():
        for name, p in model.named_parameters():  # a tied lm_head is the embedding: listed once
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape))
            else:
                p.copy_(torch.randn(p.shape) / p.shape[-1] ** 0.5)


def _tensor_type(name: str, data: np.ndarray, quant: str) -> "gguf.GGMLQuantizationType":
    """The ggml type convert_hf_to_gguf picks: F32 for 1-D tensors, norms and biases, else `quant`."""
    import gguf

    if data.ndim <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight"):
        return gguf.GGMLQuantizationType.F32
    return gguf.GGMLQuantizationType[quant]


def write_gguf(folder: pathlib.Path, arch: str, quant: str = "F32", *, seed: int = 0, name: str = "model.gguf",
               tied: bool = False, **shape_overrides) -> tuple[pathlib.Path, "transformers.PreTrainedModel"]:
    """Write a seeded random `arch` model to `folder / name` as GGUF; return the path and the model.

    arch: 'llama' | 'qwen2' | 'qwen3'. quant: 'F32' | 'F16' | 'Q8_0' | 'Q4_0' | 'Q4_1', applied to
    2-D weights (token_embd and output included); norms and biases stay F32, as in llama.cpp. The
    returned model is the float32 HF model the file was made from (eval mode), whose weights are the
    unquantized ones. Default shapes are DEFAULT_SHAPE (vocab 256, hidden 64, intermediate 128,
    2 layers, 4 heads over 2 KV heads, head_dim 16); keyword overrides change them (vocab_size=,
    hidden_size=, head_dim=, rope_theta=, rms_norm_eps=, ...). tied=True shares the embedding with the
    LM head and writes no `output.weight`, which is how llama.cpp and transformers tell a tied model.
    """
    import gguf

    if quant not in QUANTS:
        raise ValueError(f"quant must be one of {QUANTS}, not {quant!r}")
    config = make_config(arch, tied=tied, **shape_overrides)
    _, model_cls = _hf_classes(arch)
    torch.manual_seed(seed)
    model = model_cls(config).float().eval()
    _randomize(model)

    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name

    writer = gguf.GGUFWriter(path, arch)  # writes general.architecture
    writer.add_name(f"aios-test-{arch}")
    # The keys convert_hf_to_gguf's TextModel.set_gguf_parameters writes, plus LlamaModel's
    # rope.dimension_count; vocab_size for every arch, since without a tokenizer it is the only
    # place a reader can find the vocabulary size.
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    if arch == "llama":
        # transformers' reader takes llama's head_dim from here (it ignores key_length for llama)
        writer.add_rope_dimension_count(head_dim)
    file_type = {"F32": gguf.LlamaFileType.ALL_F32, "F16": gguf.LlamaFileType.MOSTLY_F16,
                 "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "Q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
                 "Q4_1": gguf.LlamaFileType.MOSTLY_Q4_1}[quant]
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # the same tensor as token_embd; its absence is what marks the file tied
        out_name = gguf_name(hf_name)
        data = tensor.detach().numpy().astype(np.float32)
        if arch == "llama" and out_name.endswith(("attn_q.weight", "attn_q.bias")):
            data = llama_permute(data, n_head)
        elif arch == "llama" and out_name.endswith(("attn_k.weight", "attn_k.bias")):
            data = llama_permute(data, n_kv)
        qtype = _tensor_type(out_name, data, quant)
        try:
            packed = gguf.quants.quantize(data, qtype)
        except gguf.QuantError:
            # A row that is not a whole number of blocks: convert_hf_to_gguf falls back to F16 too.
            qtype = gguf.GGMLQuantizationType.F16
            packed = gguf.quants.quantize(data, qtype)
        # `packed` keeps torch's (rows, cols) order: for block types it is uint8 (rows, bytes), which
        # add_tensor turns back into (rows, cols) elements by raw_dtype; the writer reverses the
        # dimensions to ggml's (ne0 = cols, ne1 = rows) itself.
        writer.add_tensor(out_name, packed, raw_dtype=qtype)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, model


def load_with_transformers(path: pathlib.Path) -> "transformers.PreTrainedModel":
    """transformers' own GGUF load of `path`: `from_pretrained(folder, gguf_file=name)`, float32, eval.

    Two stopgaps, each a config override read off the file, for what transformers' GGUF reader
    does not rebuild from the metadata:
    - qwen3 head_dim: `qwen3.attention.key_length` is not mapped, so a Qwen3 file gets Qwen3Config's
      default of 128 (right for the real Qwen3 checkpoints, wrong for small ones) and the load fails
      on the q/k/v shapes. (Qwen2 needs none: its head_dim is always hidden / heads.)
    - llama attention_bias / mlp_bias: nothing in the metadata says so (llama.cpp just finds the
      tensors), so LlamaConfig's False stands and transformers drops the bias tensors without a word.
    from_pretrained with gguf_file also needs the `accelerate` package installed.
    """
    import gguf
    from transformers import AutoModelForCausalLM

    path = pathlib.Path(path)
    reader = gguf.GGUFReader(path)
    arch = reader.get_field("general.architecture").contents()
    overrides = {}
    if arch == "qwen3":
        overrides["head_dim"] = int(reader.get_field(f"{arch}.attention.key_length").contents())
    if arch == "llama":
        names = {t.name for t in reader.tensors}
        if "blk.0.attn_q.bias" in names:
            overrides["attention_bias"] = True
        if "blk.0.ffn_up.bias" in names:
            overrides["mlp_bias"] = True
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, **overrides)
    # The reader dequantizes to float32 by default. Checked rather than asked for: the argument is
    # dtype= in transformers 5 and torch_dtype= before 4.56, and a GGUF model refuses .float().
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes != {torch.float32}:
        raise AssertionError(f"transformers loaded {path.name} as {dtypes}, not float32")
    return model.eval()


def read_tensors(path: pathlib.Path) -> dict[str, tuple[np.ndarray, "gguf.GGMLQuantizationType"]]:
    """Every tensor of the file as stored (llama's q/k still permuted), dequantized by gguf-py to
    float32 in torch's (rows, cols) order, with its ggml type."""
    import gguf

    out = {}
    for t in gguf.GGUFReader(path).tensors:
        qtype = gguf.GGMLQuantizationType(t.tensor_type)
        # a copy: for F32 the dequantization is a view of the reader's read-only memory map
        out[t.name] = (np.array(gguf.quants.dequantize(t.data, qtype), dtype=np.float32), qtype)
    return out


def dequantized_state_dict(path: pathlib.Path, model: "transformers.PreTrainedModel") -> dict[str, torch.Tensor]:
    """The HF state dict the file stands for: `model`'s parameter names, each filled from the file's
    tensor, dequantized and, for llama's q/k, un-permuted. A tied lm_head takes token_embd.

    For an F32 file this is `model.state_dict()` exactly; for a quantized one it is what any correct
    reader must load, which is what makes it the reference for quantized round trips.
    """
    tensors = read_tensors(path)
    config = model.config
    out = {}
    for hf_name, ref in model.state_dict().items():
        name = gguf_name(hf_name)
        if name == "output.weight" and name not in tensors:
            name = "token_embd.weight"
        data = tensors[name][0]
        if config.model_type == "llama" and name.endswith(("attn_q.weight", "attn_q.bias")):
            data = llama_unpermute(data, config.num_attention_heads)
        elif config.model_type == "llama" and name.endswith(("attn_k.weight", "attn_k.bias")):
            data = llama_unpermute(data, config.num_key_value_heads)
        out[hf_name] = torch.from_numpy(data.reshape(ref.shape).copy())
    return out
