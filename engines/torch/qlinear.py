"""Quantized linear weights for the torch engine, through the kernels PyTorch ships.

The bits are GGUF's (`engines.quant.formats`), repacked when the model loads:

* Q4_0 / Q4_1 -> ``torch._weight_int4pack_mm_for_cpu``: PyTorch's int4 weight-only GEMM, groups
  of 32 along the input, dequantizing as w = (q - 8) * scale + zero. That is Q4_0 exactly with
  zero = 0, and Q4_1 (w = d*q + m) exactly with zero = m + 8d. Its scales and zeros are float32
  (8 bytes a group against GGUF's 2 or 4), so the bytes held, which the profile counts, are
  6 bits a weight rather than 4.5 or 5.
* Q8_0 -> int8 weights and fp16 block scales (GGUF's bytes), applied as ``F.linear`` on one
  dequantized tile of rows at a time: PyTorch's int8 weight-only kernel
  (``_weight_int8pack_mm``) takes one scale per row, which cannot hold Q8_0's scale per 32.

Embedding lookups read rows of a Q8_0 table (`QLinear.rows`); other formats are dequantized for
the embedding (it reads one row a token, so its format costs memory, not time).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..quant.formats import format_info
from .dnnl import PackedLinear

GROUP = 32
TILE_ROWS = 2048  # rows of a Q8_0 matrix dequantized at once


def _blocks(a: np.ndarray, fmt: str):
    """GGUF rows (O, row bytes) -> (d float32 (O, nb), m float32 (O, nb) or None, q: int8 (O, nb*32)
    for Q8_0, uint8 nibbles 0..15 (O, nb*32) for the 4-bit formats)."""
    O = a.shape[0]
    bb = format_info(fmt).block_bytes
    b = a.reshape(O, -1, bb)
    d = np.ascontiguousarray(b[:, :, 0:2]).view(np.float16)[..., 0].astype(np.float32)
    if fmt == "Q8_0":
        return d, None, np.ascontiguousarray(b[:, :, 2:]).view(np.int8).reshape(O, -1)
    qo = 2 if fmt == "Q4_0" else 4
    m = np.ascontiguousarray(b[:, :, 2:4]).view(np.float16)[..., 0].astype(np.float32) if fmt == "Q4_1" else None
    nib = b[:, :, qo:]
    q = np.concatenate([nib & 15, nib >> 4], axis=2).reshape(O, -1)  # byte j: weight j | weight j+16
    return d, m, q


class QLinear:
    """A quantized (O, I) weight: ``q(x)`` is x @ W.T for x (T, I)."""

    def __init__(self, blocks: np.ndarray, fmt: str, cols: int, dtype: torch.dtype, device):
        self.fmt, self.rows, self.cols, self.dtype = fmt, int(blocks.shape[0]), cols, dtype
        d, m, q = _blocks(blocks, fmt)
        self.padded = q.shape[1]  # whole blocks; >= cols
        if fmt == "Q8_0":
            self.w8 = torch.from_numpy(q).to(device)
            self.scale = torch.from_numpy(d.astype(np.float16)).to(device)  # (O, nb): GGUF's fp16
            self.tensors = (self.w8, self.scale)
        else:
            zero = np.zeros_like(d) if m is None else m + 8 * d
            sz = np.stack([d.T, zero.T], axis=-1)  # (nb, O, 2)
            self.sz = torch.from_numpy(np.ascontiguousarray(sz)).to(device, torch.float32)
            self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(
                torch.from_numpy(q.astype(np.int32)).to(device), 1)
            self.tensors = (self.packed, self.sz)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.cols)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.padded == self.cols else F.pad(x, (0, self.padded - self.cols))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = self._pad(x)
        if self.fmt != "Q8_0":
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.float(), self.packed, GROUP, self.sz)
            return y.to(x.dtype)
        out = torch.empty(x.shape[0], self.rows, dtype=x.dtype, device=x.device)
        for r0 in range(0, self.rows, TILE_ROWS):
            out[:, r0:r0 + TILE_ROWS] = F.linear(x, self.dequantize(r0, r0 + TILE_ROWS, x.dtype, padded=True))
        return out

    def dequantize(self, r0: int = 0, r1: int | None = None, dtype=None, padded: bool = False) -> torch.Tensor:
        """Rows r0..r1 as `dtype` (Q8_0 only)."""
        w = self.w8[r0:r1]
        n = w.shape[0]
        full = (w.view(n, -1, GROUP).to(torch.float32) * self.scale[r0:r1, :, None].to(torch.float32)).view(n, -1)
        return (full if padded else full[:, : self.cols]).to(dtype or self.dtype)

    def rows_of(self, idx: torch.Tensor) -> torch.Tensor:
        """The rows `idx` dequantized (an embedding lookup; Q8_0 only)."""
        w = self.w8[idx]
        full = (w.view(len(idx), -1, GROUP).to(torch.float32) * self.scale[idx, :, None].to(torch.float32))
        return full.view(len(idx), -1)[:, : self.cols].to(self.dtype)

    def isfinite(self) -> bool:
        if self.fmt == "Q8_0":
            return bool(torch.isfinite(self.scale).all())
        return bool(torch.isfinite(self.sz).all())


def linear(x: torch.Tensor, w, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear over a plain, a oneDNN-packed (`engines.torch.dnnl`) or a quantized weight."""
    if isinstance(w, QLinear):
        y = w(x)
        return y if bias is None else y + bias
    if isinstance(w, PackedLinear):
        return w(x, bias)
    return F.linear(x, w, bias)
