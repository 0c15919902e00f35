"""Memory-mapped safetensors reading, with a clear error for every way a file can be broken.

The format: 8 bytes little-endian header length N, N bytes of JSON header
{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the data.
We map the whole file once (np.memmap) and hand out zero-copy views, so loading a
checkpoint costs page faults on first touch, not a copy.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass

import numpy as np

from .errors import ModelError

# bf16 has no NumPy dtype: it travels as its raw uint16 bits and is widened on use.
_DTYPES = {"F32": (np.float32, "float32"), "F16": (np.float16, "float16"), "BF16": (np.uint16, "bfloat16"), "F64": (np.float64, "float64")}
_FIX = "re-download or re-save the checkpoint (`save_pretrained`)"


@dataclass(frozen=True)
class TensorRef:
    array: np.ndarray  # raw view: float32/float16/float64, or uint16 bits for bfloat16
    dtype: str  # float32 | float16 | bfloat16 | float64

    @property
    def shape(self) -> tuple[int, ...]:
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
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelError(f"{name} is corrupt: its header is not valid JSON ({e})", _FIX) from None

    data_start = 8 + header_len
    mm = np.memmap(path, dtype=np.uint8, mode="r") if size > data_start else np.zeros(0, np.uint8)
    tensors: dict[str, TensorRef] = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            dt = info["dtype"]
            shape = tuple(int(s) for s in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"{name} is corrupt: bad header entry for {key!r}", _FIX) from None
        if dt not in _DTYPES:
            raise ModelError(f"{name}: tensor {key!r} has unsupported dtype {dt}", "aios reads F32, F16 and BF16 weights")
        np_dtype, dtype_name = _DTYPES[dt]
        itemsize = np.dtype(np_dtype).itemsize
        count = int(np.prod(shape)) if shape else 1
        if end - begin != count * itemsize or begin < 0:
            raise ModelError(f"{name} is corrupt: tensor {key!r} has offsets {begin}..{end} that do not match shape {list(shape)}", _FIX)
        if data_start + end > size:
            raise ModelError(
                f"{name} is truncated: tensor {key!r} ends at byte {data_start + end} but the file has {size}", _FIX
            )
        view = mm[data_start + begin : data_start + end].view(np_dtype).reshape(shape)
        tensors[key] = TensorRef(view, dtype_name)
    return tensors
