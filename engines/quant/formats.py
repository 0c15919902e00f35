"""Quantized weights: GGUF's block formats, used as aios's own.

A quantized weight matrix (O, I) is stored row by row, each row a run of blocks exactly as GGUF
(and llama.cpp) lays them out, so the same bits mean the same thing in aios, in a GGUF file and
in llama.cpp, and comparisons between them are like for like:

    Q8_0   32 weights per block: fp16 scale d, 32 int8 q          w = d*q         34 B  8.5 bits/w
    Q4_0   32 weights per block: fp16 d, 16 bytes of nibbles      w = d*(q-8)     18 B  4.5 bits/w
    Q4_1   32 weights per block: fp16 d, fp16 m, 16 bytes         w = d*q + m     20 B  5.0 bits/w

In a 4-bit block, byte j holds weight j in its low nibble and weight j+16 in its high nibble.
Quantizing and dequantizing are the `gguf` package's (llama.cpp's own Python library, NumPy);
only the hot kernels are ours (`engines.simd.qkernels`). K-quants (Q4_K, Q5_K, Q6_K) load from
GGUF files and are dequantized there: the `gguf` package dequantizes them but cannot quantize.

What `--quant` quantizes, and why (`plan`): the layers' linear weights (q|k|v, o, gate|up,
down) take the format asked for; the embedding and the lm_head take Q8_0 whatever it is, since
the lm_head's error lands straight on the logits and 4 bits there cost the most quality per
byte saved (llama.cpp keeps its output tensor at 6 bits or more for the same reason); norms and
biases (vectors of a few thousand floats) stay float32.

A row whose length is not a multiple of 32 is padded with zero weights to whole blocks; the
logical shape keeps the true length, so the padding is never read against an input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK = 32  # weights per block, in every format here


@dataclass(frozen=True)
class Format:
    name: str  # GGUF's name: Q8_0
    block_weights: int  # 32; 256 for the K-quants
    block_bytes: int

    @property
    def bits_per_weight(self) -> float:
        return self.block_bytes * 8 / self.block_weights

# What --quant offers: the formats the gguf package quantizes and the simd engine has kernels for,
# and `none`: every weight as a float (a GGUF file's blocks dequantized).
QUANTS = {"q8_0": "Q8_0", "q4_0": "Q4_0", "q4_1": "Q4_1", "none": None}
HEAD_FORMAT = "Q8_0"  # the embedding and lm_head under any --quant (see the module docstring)


def ggml_type(name: str):
    import gguf

    return gguf.GGMLQuantizationType[name]


def format_info(name: str) -> Format:
    import gguf

    block, nbytes = gguf.GGML_QUANT_SIZES[ggml_type(name)]  # the package's own table
    return Format(name, block, nbytes)


@dataclass(frozen=True)
class QTensor:
    """A quantized (O, I) matrix: `blocks` is uint8 (O, row bytes), the GGUF bytes of each row."""

    fmt: str  # Q8_0 | Q4_0 | Q4_1 | ...
    blocks: np.ndarray
    cols: int  # I: the logical row length (the blocks may hold zero padding past it)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.blocks.shape[0]), self.cols)

    @property
    def nbytes(self) -> int:
        """Bytes as stored: the scales included."""
        return int(self.blocks.nbytes)

    @property
    def bits_per_weight(self) -> float:
        return self.nbytes * 8 / (self.shape[0] * self.cols)

    def dequantize(self) -> np.ndarray:
        """float32 (O, I), by the gguf package."""
        import gguf

        return np.ascontiguousarray(gguf.quants.dequantize(self.blocks, ggml_type(self.fmt))[:, : self.cols],
                                    dtype=np.float32)


def quantize(a: np.ndarray, fmt: str) -> QTensor:
    """float (O, I) -> QTensor in `fmt`, by the gguf package (rows padded with zeros to whole blocks)."""
    import gguf

    a = np.asarray(a, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"quantize takes a matrix, got shape {a.shape}")
    O, I = a.shape
    pad = -I % BLOCK
    if pad:
        a = np.concatenate([a, np.zeros((O, pad), np.float32)], axis=1)
    return QTensor(fmt, np.ascontiguousarray(gguf.quants.quantize(a, ggml_type(fmt))), I)


def plan(role: str, quant: str | None) -> str | None:
    """The format a float weight of `role` takes under `--quant quant`, or None: it stays float.
    role: linear | embed | lm_head | vector."""
    if quant is None or quant == "none" or role == "vector":
        return None
    return HEAD_FORMAT if role in ("embed", "lm_head") else QUANTS[quant]


def target(stored: str | None, role: str, quant: str | None, kernels) -> str | None:
    """The format an engine holds a weight in (None: a float), given the block format the file
    stores it in (None: a float), its role, `--quant`, and the formats the engine has kernels for.
    Without --quant a file's blocks stay as they are where there is a kernel; with it, every
    matrix takes the planned format, a block of another format being dequantized and quantized
    again (two roundings: the model line says so)."""
    if role == "vector":
        return None
    if quant is None:
        return stored if stored in kernels else None
    return plan(role, quant)


def bytes_per_weight(name: str) -> float:
    """Bytes a weight takes in a format, by its `--quant` name (q4_0) or GGUF name (Q4_0)."""
    fmt = QUANTS.get(name, name.upper())
    return format_info(fmt).bits_per_weight / 8


def format_of(t) -> str:
    """The name of the format a weight is held in, in any engine: Q4_0, float32, bfloat16..."""
    fmt = getattr(t, "fmt", None)
    if fmt:
        return fmt
    if isinstance(t, list):  # the scalar engine's lists of Python floats
        return "float64"
    return str(getattr(t, "dtype", "float32")).removeprefix("torch.")


def formats(weights) -> str:
    """The formats of a model's matrices, by their share of the weights, largest first:
    'Q4_1+Q8_0'. Each tensor counted once (a tied lm_head is the embedding)."""
    counts: dict[str, int] = {}
    seen = set()
    for t in weights:
        if id(t) in seen:
            continue
        seen.add(id(t))
        shape = t.shape if hasattr(t, "shape") else (len(t), len(t[0]) if t and isinstance(t[0], list) else 1)
        counts[format_of(t)] = counts.get(format_of(t), 0) + int(np.prod(shape))
    return "+".join(k for k, _ in sorted(counts.items(), key=lambda kv: -kv[1]))
