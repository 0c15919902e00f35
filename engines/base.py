"""What every engine provides, and what they share: RoPE tables and the KV-cache capacity."""

from __future__ import annotations

import math

import numpy as np

from profilers.probe import Probe

from .checkpoint import Checkpoint
from .errors import UserError


class Engine:
    """One forward pass over a KV cache.

    ``prefill(ids)`` pushes the prompt through in one parallel pass; ``decode(id)`` pushes one
    token. Both return the last position's logits as a NumPy vector, which the engine may reuse
    on its next call: copy it to keep it (``all_logits=True`` on prefill returns every
    position's, in a new array, for parity tests). Every op ends with
    ``self.lap(layer, op_id)`` so the probe sees it.
    """

    name = "?"
    device = "cpu"
    dtype = "float32"
    weight_itemsize = 4  # bytes per weight as the engine holds them
    act_itemsize = 4  # bytes per activation

    def __init__(self, ckpt: Checkpoint, probe: Probe | None = None):
        self.ckpt = ckpt
        self.cfg = ckpt.config
        self.pos = 0  # tokens in the KV cache
        self.capacity = 0
        self.set_probe(probe or Probe("none"))

    @staticmethod
    def preflight(cfg, model_name: str) -> None:
        """Raise UserError if this engine cannot take the model (checked before any loading)."""

    def set_probe(self, probe: Probe) -> None:
        self.probe = probe
        self.lap = probe.lap

    # --- to implement ------------------------------------------------------------------
    def reset(self, capacity: int) -> None:
        """Empty the KV cache and make room for `capacity` positions."""
        raise NotImplementedError

    def prefill(self, ids: list[int], all_logits: bool = False) -> np.ndarray:
        raise NotImplementedError

    def decode(self, token_id: int) -> np.ndarray:
        raise NotImplementedError

    @property
    def resident_weight_bytes(self) -> int:
        raise NotImplementedError

    def kv_cache_bytes(self) -> int:
        """Bytes allocated for the KV cache (at capacity)."""
        raise NotImplementedError

    def warmup(self) -> float:
        """Compile / load kernels. Returns JIT seconds (0 for engines without a JIT)."""
        return 0.0

    def memory(self) -> dict:
        """Device memory as the engine sees it (torch allocator); empty on plain CPU engines."""
        return {}

    # --- shared ------------------------------------------------------------------------
    def check_room(self, n: int) -> None:
        if self.pos + n > self.capacity:
            raise UserError(
                f"KV cache full: {self.pos} + {n} tokens exceed the capacity of {self.capacity}",
                "lower --max-new-tokens or shorten the prompt",
            )


def rope_tables(head_dim: int, theta: float, positions: int) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin of shape (positions, head_dim // 2), in float64.

    inv_freq_j = theta^(-2j / head_dim); angle(pos, j) = pos * inv_freq_j (HF's rotate_half RoPE).
    """
    half = head_dim // 2
    inv_freq = 1.0 / (theta ** (np.arange(0, half, dtype=np.float64) * 2.0 / head_dim))
    ang = np.outer(np.arange(positions, dtype=np.float64), inv_freq)
    return np.cos(ang), np.sin(ang)


def attn_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)
