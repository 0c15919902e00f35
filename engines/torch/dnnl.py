"""float32 linear weights prepacked for oneDNN, the torch engine's matmuls on the CPU.

PyTorch's CPU `F.linear` goes through MKL, whose small-batch GEMMs are slow: measured on the
dev VM (AMD EPYC, 2 threads, a 9728 x 896 weight) 5.4 G FLOP/s at 1 row, 8.9 at 8 and 37 at 64.
The same product through oneDNN (MKL-DNN, bundled with PyTorch) on a weight reordered once
into oneDNN's blocked layout ran at 7.2, 36 and 66: faster at every batch, 4x at 8 rows. These
are the two ops PyTorch's own compiler (Inductor) emits for a CPU linear, used here directly:
``torch.ops.mkldnn._reorder_linear_weight`` when the model loads and
``torch.ops.mkldnn._linear_pointwise`` per call. The packed weight holds the same float32
values in another order (the same bytes count), so results differ from `F.linear` only by
summation order.

Only for float32 on the CPU, where this torch build has the ops, and only after a check on a
small product at load; `AIOS_TORCH_PACK=0` turns it off.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

_OK: bool | None = None


def available(device: torch.device, dtype: torch.dtype) -> bool:
    global _OK
    if device.type != "cpu" or dtype != torch.float32 or os.environ.get("AIOS_TORCH_PACK", "1") == "0":
        return False
    if _OK is None:
        try:
            w = torch.randn(40, 24)
            x = torch.randn(3, 24)
            got = PackedLinear(w)(x, torch.ones(40))
            _OK = bool(torch.allclose(got, F.linear(x, w, torch.ones(40)), rtol=1e-4, atol=1e-5))
        except Exception:  # noqa: BLE001 - an op this build lacks, or refuses: plain F.linear then
            _OK = False
    return _OK


class PackedLinear:
    """A (out, in) float32 weight in oneDNN's layout; ``w(x, bias)`` is F.linear(x, W, bias)."""

    __slots__ = ("packed", "shape", "dtype", "finite")

    def __init__(self, w: torch.Tensor, batch_hint: int = 64):
        self.shape = tuple(w.shape)
        self.dtype = w.dtype
        self.finite = bool(torch.isfinite(w).all())  # the packed tensor is opaque (MkldnnCPU): ask now
        self.packed = torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), batch_size=batch_hint)

    def __call__(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        lead = x.shape[:-1]
        y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]).contiguous(), self.packed, bias,
                                               "none", [], "")
        return y.reshape(*lead, self.shape[0])

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * 4  # float32, reordered

    def isfinite(self) -> bool:
        return self.finite
