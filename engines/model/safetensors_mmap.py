"""Memory-mapped safetensors reading, with a clear error for every way a file can be broken.

The format: 8 bytes little-endian header length N, N bytes of JSON header
{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the data.

The `safetensors` package validates every file first: offsets contiguous and inside the
file, no overlaps, no duplicate names, whole non-negative shapes whose byte count does not
overflow. What it cannot do is hand NumPy a bf16 tensor (NumPy has no bf16) without a copy,
so the views are made here: we map the whole file once (np.memmap) and hand out zero-copy
views, bf16 as its raw uint16 bits, so loading a checkpoint costs page faults on first touch,
not a copy. The header is read a second time for the data offsets, which the package does
not expose; by then it has been validated.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass

import numpy as np
from safetensors import SafetensorError, safe_open

from ..errors import ModelError

# bf16 has no NumPy dtype: it travels as its raw uint16 bits and is widened on use.
_DTYPES = {"F32": (np.float32, "float32"), "F16": (np.float16, "float16"), "BF16": (np.uint16, "bfloat16"), "F64": (np.float64, "float64")}
_FIX = "re-download or re-save the checkpoint (`save_pretrained`)"


def _ends_past(raw: bytes, data_bytes: int) -> bool:
    """Does a header (that failed validation) put a tensor past the `data_bytes` the file has?"""
    try:
        header = json.loads(raw)
        return any(int(v["data_offsets"][1]) > data_bytes for k, v in header.items() if k != "__metadata__")
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError):
        return False


@dataclass(frozen=True)
class TensorRef:
    """A tensor as a file stores it. Quantized (a GGUF block format, `engines.quant.formats`): `array` is
    uint8 (rows, row bytes) and `cols` the logical row length."""

    array: np.ndarray  # raw view: float32/float16/float64, uint16 bits for bfloat16, uint8 blocks
    dtype: str  # float32 | float16 | bfloat16 | float64 | a GGUF block format: Q8_0, Q4_K, ...
    cols: int | None = None  # quantized only: the row length in weights

    @property
    def quantized(self) -> bool:
        return self.cols is not None

    @property
    def shape(self) -> tuple[int, ...]:
        if self.cols is not None:
            return (int(self.array.shape[0]), self.cols)
        return tuple(self.array.shape)

    @property
    def nbytes(self) -> int:
        return int(self.array.nbytes)


def read_safetensors(path: str) -> dict[str, TensorRef]:
    name = os.path.basename(path)
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise ModelError(f"cannot read {path}: {e.strerror}", _FIX) from None
    if size < 8:
        raise ModelError(f"{name} is truncated ({size} bytes, no header)", _FIX)
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > size - 8 or header_len > 100_000_000:
            raise ModelError(f"{name} is corrupt or truncated: header length {header_len} exceeds the file ({size} bytes)", _FIX)
        raw = f.read(header_len)
    try:
        with safe_open(path, framework="numpy") as f:
            names = list(f.keys())
    except SafetensorError as e:
        detail = str(e).removeprefix("Error while deserializing header: ")
        if "not fully covered" in detail and _ends_past(raw, size - 8 - header_len):
            raise ModelError(f"{name} is truncated: its tensors end past the end of the file ({size} bytes)", _FIX) from None
        raise ModelError(f"{name} is corrupt: {detail}", _FIX) from None
    header = json.loads(raw)
    data_start = 8 + header_len
    mm = np.memmap(path, dtype=np.uint8, mode="r") if size > data_start else np.zeros(0, np.uint8)
    tensors: dict[str, TensorRef] = {}
    for key in names:
        info = header[key]
        dt, shape = info["dtype"], tuple(info["shape"])
        begin, end = info["data_offsets"]
        if dt not in _DTYPES:
            raise ModelError(f"{name}: tensor {key!r} has unsupported dtype {dt}", "aios reads F32, F16 and BF16 weights")
        np_dtype, dtype_name = _DTYPES[dt]
        view = mm[data_start + begin : data_start + end].view(np_dtype).reshape(shape)
        tensors[key] = TensorRef(view, dtype_name)
    return tensors
