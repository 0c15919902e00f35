"""The GGUF files llama.cpp runs in `bench_quant_speed.py`: the packaged model's own file, or one
derived from it or from a preset, holding the bits aios runs (see that script's docstring), cached
under the benchmark's cache folder and reused."""

from __future__ import annotations

import json
import os
import time
import zlib
from pathlib import Path

GGUF_CACHE_VERSION = 1  # bump when the derived files' recipe changes
# llama.cpp file type ids (general.file_type) of the derived files
FILE_TYPES = {"F32": 0, "Q4_0": 2, "Q8_0": 7}
QUANT_TO_GGUF = {"none": "F32", "q8_0": "Q8_0", "q4_0": "Q4_0"}


def _role(gguf_name: str, ndim: int) -> str:
    """aios's roles (`engines.model.weights.role`) by llama.cpp tensor name."""
    if ndim == 1:
        return "vector"
    return {"token_embd.weight": "embed", "output.weight": "lm_head"}.get(gguf_name, "linear")


def _target_type(role: str, fmt: str) -> str:
    """The GGUF type a tensor gets in a derived file of `fmt` (F32, Q8_0, Q4_0): aios's
    `engines.quant.formats.plan` rule, written out for llama.cpp."""
    from engines.quant.formats import HEAD_FORMAT

    if role == "vector" or fmt == "F32":
        return "F32"
    return HEAD_FORMAT if role in ("embed", "lm_head") else fmt


def _encode(a, src_type: str, dst_type: str, raw=None):
    """(array, raw_dtype) for GGUFWriter.add_tensor: the source bytes when the type is kept,
    else float32 (dequantized) or quantized by the gguf package, as aios does (`quant.quantize`)."""
    import gguf
    import numpy as np

    T = gguf.GGMLQuantizationType
    if raw is not None and src_type == dst_type:
        return raw, (None if dst_type == "F32" else T[dst_type])
    if dst_type == "F32":
        return np.ascontiguousarray(a, dtype=np.float32), None
    from engines.quant.formats import quantize

    return quantize(a, dst_type).blocks, T[dst_type]


def _write_gguf(path: Path, arch: str, fill) -> None:
    """Write a GGUF file of architecture `arch`: `fill(writer)` adds its metadata and tensors to a
    `gguf.GGUFWriter` over a temporary file, which is then written out and renamed to `path` (no
    half file is ever left at `path`)."""
    import gguf

    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        w = gguf.GGUFWriter(str(tmp), arch)
        fill(w)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def derive_from_gguf(src: Path, fmt: str, out: Path) -> None:
    """`src` (a GGUF file) rewritten with its tensors in `fmt` by aios's rule, all metadata copied."""
    import gguf

    from engines.model.gguf_file import gguf_reader  # the gguf package's reader, over a faster view of the map

    reader = gguf_reader(str(src))
    arch = reader.fields["general.architecture"].contents()

    def fill(w):
        for key, f in reader.fields.items():
            if key.startswith("GGUF.") or key == "general.architecture":
                continue
            if key == "general.file_type":
                w.add_uint32(key, FILE_TYPES[fmt])
                continue
            vtype = f.types[0]
            if vtype == gguf.GGUFValueType.ARRAY:
                sub = f.types[-1]
                if sub == gguf.GGUFValueType.STRING:  # raw bytes: exact, whatever the encoding
                    val = [bytes(f.parts[i]) for i in f.data]
                else:
                    val = f.contents()
                w.add_key_value(key, val, vtype, sub_type=sub)
            elif vtype == gguf.GGUFValueType.STRING:
                w.add_key_value(key, bytes(f.parts[f.data[0]]), vtype)
            else:
                w.add_key_value(key, f.contents(), vtype)
        for t in reader.tensors:
            kind = t.tensor_type.name
            ne = [int(n) for n in t.shape]
            shape = tuple(reversed(ne))
            dst = _target_type(_role(t.name, len(shape)), fmt)
            if kind == dst:
                arr, raw = _encode(None, kind, dst, raw=t.data)
            else:
                from engines.quant.formats import QTensor

                if kind == "F32":
                    a = t.data.reshape(shape)
                elif kind in ("F16",):
                    a = t.data.reshape(shape).astype("float32")
                else:
                    a = QTensor(kind, t.data.reshape(shape[0], -1), shape[-1]).dequantize()
                arr, raw = _encode(a, kind, dst)
            w.add_tensor(t.name, arr, raw_dtype=raw)

    _write_gguf(out, arch, fill)


def derive_from_preset(ckpt, fmt: str, out: Path) -> None:
    """A preset's weights (float32, seeded) as a GGUF file in `fmt` (aios's rule per tensor),
    with the Qwen2.5 tokenizer aios builds as tokenizer.ggml.* (padded to the embedding's rows)."""
    import gguf

    from engines.model.gguf_file import LAYER_NAMES, MODEL_NAMES
    from engines.model.weights import expected_shapes

    cfg = ckpt.config
    if cfg.arch != "qwen2":
        raise RuntimeError(f"writing a {cfg.arch} preset as GGUF is not implemented here (qwen2 only)")
    to_gguf = {hf: g for g, hf in MODEL_NAMES.items()}
    shapes = expected_shapes(cfg)
    names = []
    for hf in shapes:
        if hf in to_gguf:
            names.append((to_gguf[hf], hf))
            continue
        rest = hf.removeprefix("model.layers.")
        i, tail = rest.split(".", 1)
        g = next(k for k, v in LAYER_NAMES.items() if v == tail)
        names.append((f"blk.{int(i)}.{g}", hf))
    tok = json.loads(ckpt.tokenizer.to_str())
    vocab = tok["model"]["vocab"]
    added = {a["id"]: a["content"] for a in tok["added_tokens"]}
    V = cfg.vocab_size
    tokens = [""] * V
    types = [gguf.TokenType.NORMAL] * V
    for s, i in vocab.items():
        tokens[i] = s
    for i, s in added.items():
        tokens[i] = s
        types[i] = gguf.TokenType.CONTROL
    for i in range(V):
        if not tokens[i]:
            tokens[i], types[i] = f"[PAD{i}]", gguf.TokenType.UNUSED
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    eos = cfg.eos_token_ids[0] if cfg.eos_token_ids else 151643

    def fill(w):
        w.add_name(f"{cfg.name} (aios preset, seed weights)")
        w.add_file_type(FILE_TYPES[fmt])
        w.add_context_length(cfg.max_position_embeddings)
        w.add_embedding_length(cfg.hidden_size)
        w.add_block_count(cfg.num_layers)
        w.add_feed_forward_length(cfg.intermediate_size)
        w.add_head_count(cfg.num_heads)
        w.add_head_count_kv(cfg.num_kv_heads)
        w.add_rope_freq_base(cfg.rope_theta)
        w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("qwen2")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
        w.add_eos_token_id(eos)
        w.add_bos_token_id(eos)
        w.add_pad_token_id(eos)
        w.add_add_bos_token(False)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for g, hf in names:
            a = ckpt.weights.tensor(hf).array
            arr, raw = _encode(a, "F32", _target_type(_role(g, a.ndim), fmt))
            w.add_tensor(g, arr, raw_dtype=raw)

    _write_gguf(out, cfg.arch, fill)


def gguf_file_for(model: str, quant: str, cache: Path, say) -> Path:
    """The GGUF file llama.cpp runs for (model, quant): the packaged file itself for `file`, else
    a derived file in `cache` (written on first use)."""
    from engines.model.sources import PACKAGED, PRESET_SEED, packaged_path
    from engines.model.config import PRESETS

    if model in PACKAGED:
        src = packaged_path(model)
        if quant == "file":
            return src
        st = src.stat()
        key = zlib.crc32(f"{src}|{st.st_size}|{st.st_mtime_ns}".encode())
    elif model in PRESETS:
        if quant == "file":
            raise ValueError("a preset has no file of its own")
        from engines.model.config import preset

        key = zlib.crc32(f"{PRESET_SEED}|{preset(model)!r}".encode())
    else:
        raise ValueError(f"no GGUF recipe for {model}")
    fmt = QUANT_TO_GGUF[quant]
    out = cache / f"{model}-{fmt}-v{GGUF_CACHE_VERSION}-{key:08x}.gguf"
    if out.is_file():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    say(f"writing {out} ...")
    t = time.perf_counter()
    if model in PACKAGED:
        derive_from_gguf(packaged_path(model), fmt, out)
    else:
        from engines.model.sources import open_model

        derive_from_preset(open_model(model), fmt, out)
    say(f"  {out.stat().st_size / 2**20:.0f} MiB in {time.perf_counter() - t:.1f} s")
    return out


def gguf_weight_facts(path: Path) -> tuple[str, float, float]:
    """(formats of the matrices by share of weights 'Q4_0+Q8_0', bits per weight over every
    tensor, weight bytes one decode token reads) of a GGUF file, counted as aios counts its
    engines: one row of token_embd, every other tensor once, and token_embd again as the
    lm_head when there is no output.weight (tied)."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(path), "r")
    counts: dict[str, int] = {}
    total_bytes = total_w = per_token = 0
    tied = all(t.name != "output.weight" for t in reader.tensors)
    for t in reader.tensors:
        n = int(np.prod([int(x) for x in t.shape]))
        nb = int(t.n_bytes)
        total_bytes += nb
        total_w += n
        if len(t.shape) == 2:
            counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + n
        if t.name == "token_embd.weight":
            per_token += nb // int(t.shape[1]) + (nb if tied else 0)
        else:
            per_token += nb
    fmt = "+".join(k for k, _ in sorted(counts.items(), key=lambda kv: -kv[1]))
    return fmt, total_bytes * 8 / total_w, float(per_token)
