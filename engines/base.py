"""What every engine provides, and what they share: loading the weight layout, RoPE tables and
the KV-cache capacity. Shapes use the legend in `engines.model.config`."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .model.checkpoint import Checkpoint
from .errors import UserError
from .ops import noop_lap
from .sampling import Sampler, SamplingParams
from .model.weights import LayerWeights, op_weight_bytes, resident_bytes

Lap = Callable[[int, int], None]  # lap(layer, op_id): layer -1 for the ops outside the layers

# An engine plans on at most this share of the RAM available when it starts; the rest is left to
# the OS, the checkpoint's page cache and the activations. The same rule for every CPU engine.
HOST_RAM_SHARE = 0.7


class Engine:
    """One forward pass over a KV cache.

    ``prefill(ids)`` pushes the prompt through in one parallel pass; ``decode(id)`` pushes one
    token. Both return the last position's logits where the engine computed them (a NumPy
    vector for the CPU engines, a tensor on the device for torch), which the engine may reuse
    on its next call; ``make_sampler`` gives the sampler that picks a token there, so only the
    token id crosses to the host. ``all_logits=True`` on prefill returns every position's
    logits (T, V) as a new NumPy array on the host (for parity tests); with ``on_device=True``
    too, where the engine computed them (a verifier samples there). Prefill appends at the
    cache position, so a prompt can go in several chunks, and ``truncate(n)`` rolls the cache
    back to its first n positions (a speculative step drops the rejected tokens).

    Every op ends with ``self.lap(layer, op_id)``: a no-op function unless someone measuring
    sets another with ``set_lap``. The engine knows nothing of who listens.
    """

    name = "?"
    device = "cpu"  # the device kind the weights live on: cpu | cuda
    device_index: int | None = None  # which GPU (torch's index) on a GPU; None on the CPU
    rank, world_size = 0, 1  # this engine's place among the ranks of a distributed run
    first_layer = 0  # the model's index of `layers[0]` (a pipeline stage holds a block of layers)
    dtype = "float32"
    act_itemsize = 4  # bytes per activation
    # what a quantized matrix's input is multiplied as: "int8" (quantized per block, as llama.cpp
    # does), or a float dtype; "" when no matrix is quantized
    quant_dot = ""

    def __init__(self, ckpt: Checkpoint):
        self.ckpt = ckpt
        self.cfg = ckpt.config
        self.pos = 0  # tokens in the KV cache
        self.capacity = 0
        self.lap: Lap = noop_lap

    @classmethod
    def preflight(cls, cfg, model_name: str, dtype: str | None = None, quant: str | None = None) -> None:
        """Raise UserError, before anything loads, if this engine cannot take the model: its
        weights would not fit in the share of RAM it plans on (HOST_RAM_SHARE), at the bytes a
        parameter takes by its backend record."""
        from .backends import backend

        b = backend(cls.name)
        per = b.host_bytes_per_param(dtype, quant)
        if per is None:
            return
        import psutil

        from .errors import BackendError

        need = cfg.num_params() * per
        avail = psutil.virtual_memory().available
        if need > HOST_RAM_SHARE * avail:
            raise BackendError(
                f"the {cls.name} engine would need ~{need / 2**30:.1f} GiB for {model_name}'s weights "
                f"({cfg.num_params() / 1e6:.0f}M params × {per:g} bytes), over the {HOST_RAM_SHARE:.0%} of the "
                f"{avail / 2**30:.1f} GiB of RAM available that it plans on", b.too_big_fix)

    def set_lap(self, lap: Lap | None) -> None:
        self.lap = lap or noop_lap

    # --- to implement ------------------------------------------------------------------
    def reset(self, capacity: int) -> None:
        """Empty the KV cache and make room for `capacity` positions."""
        raise NotImplementedError

    def prefill(self, ids: list[int], all_logits: bool = False, on_device: bool = False):
        raise NotImplementedError

    def decode(self, token_id: int):
        raise NotImplementedError

    @staticmethod
    def nbytes(tensor) -> int:
        """Bytes of one weight as this engine holds it."""
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

    def make_sampler(self, params: SamplingParams) -> Sampler:
        """A sampler that picks from this engine's logits where they are."""
        return Sampler(params)

    def to_host(self, logits) -> np.ndarray:
        """Logits as a NumPy array on the host (for tests and checks, not the hot path)."""
        return np.asarray(logits)

    def read_token(self, token, logits) -> tuple[int, bool]:
        """(the sampled id, whether its logit is finite), on the host."""
        t = int(token)
        return t, bool(np.isfinite(logits[t]))

    @staticmethod
    def all_finite(tensor) -> bool:
        with np.errstate(invalid="ignore"):  # a signalling NaN warns as it widens: it is the answer here
            return bool(np.isfinite(np.asarray(tensor, dtype=np.float64)).all())

    def nonfinite_weight(self) -> str | None:
        """Where the first NaN or Inf weight is ("layer 3 gate_up"), or None. A scan of every
        weight: for an error message, never on the hot path."""
        where = f" (rank {self.rank})" if self.world_size > 1 else ""
        for i, lw in enumerate(self.layers, start=self.first_layer):
            for name in LayerWeights.__dataclass_fields__:
                t = getattr(lw, name)
                if t is not None and not self.all_finite(t):
                    return f"layer {i} {name}{where}"
        for name in ("embed", "final_norm", "lm_head"):
            t = getattr(self, name)  # None: a rank that does not hold it
            if t is not None and not self.all_finite(t):
                return name + where
        return None

    def tied_head(self, embed):
        """The lm_head of a model with tied embeddings: the embedding itself, unless the engine
        holds matmul weights in another form (then a second copy, counted as such)."""
        return embed

    # --- shared ------------------------------------------------------------------------
    def load_weights(self, convert: Callable, progress: Callable[[int, int], None] | None = None) -> None:
        """The checkpoint's weights in this engine's representation, layer by layer, each by
        convert(stored tensor, role) (role: linear | embed | lm_head | vector, `weights.role`):
        `self.embed`, `self.layers` (LayerWeights), `self.final_norm`, `self.lm_head` (the
        embedding itself when tied), and what they weigh (`op_weight_bytes`, per op)."""
        w, cfg = self.ckpt.weights, self.cfg
        self.embed = convert(w.embed, "embed")  # (V, H)
        self.layers = []
        for i in range(cfg.num_layers):
            self.layers.append(w.layer(i).map(convert))
            if progress:
                progress(i + 1, cfg.num_layers)
        self.final_norm = convert(w.final_norm, "vector")  # (H,)
        # (V, H); tied: the embedding
        self.lm_head = self.tied_head(self.embed) if w.lm_head is None else convert(w.lm_head, "lm_head")
        parts = (self.layers, self.embed, self.final_norm, self.lm_head)
        self.op_weight_bytes = op_weight_bytes(*parts, cfg.vocab_size, self.nbytes)
        self.resident_weight_bytes = resident_bytes(*parts, self.nbytes)
        from .quant.formats import formats

        # what the matrices are held as ('Q4_1+Q8_0'), and the bits a parameter takes overall,
        # scales and norms included: from the bytes held, not from a format's nominal size
        self.weight_format = formats([t for lw in self.layers for t in (lw.qkv, lw.o_proj, lw.gate_up, lw.down)]
                                     + [self.embed, self.lm_head])
        self.bits_per_weight = self.resident_weight_bytes * 8 / cfg.num_params()

    def truncate(self, length: int) -> None:
        """Roll the KV cache back to its first `length` positions: what came after is forgotten,
        and the next pass writes at `length`. The cache's memory is kept (a contiguous cache is
        allocated at capacity)."""
        if not 0 <= length <= self.pos:
            raise ValueError(f"cannot truncate a cache of {self.pos} positions to {length}")
        self.pos = length

    def early_exit(self, layers: int) -> "Engine":
        """A second engine that runs this one's first `layers` layers, then its final norm and
        head (LayerSkip-style self-speculation, no training): the same weight objects, no copy;
        its own KV cache and scratch. `layers` is 1 .. num_layers - 1."""
        import copy
        from dataclasses import replace

        if not 1 <= layers < self.cfg.num_layers:
            raise ValueError(f"an early exit needs 1 to {self.cfg.num_layers - 1} layers, got {layers}")
        view = copy.copy(self)
        view.layers = self.layers[:layers]
        view.cfg = replace(self.cfg, num_layers=layers)
        view.lap = noop_lap
        view.own_scratch()
        view.reset(max(self.capacity, 1))
        return view

    def own_scratch(self) -> None:
        """Give a copy made by `early_exit` its own per-token buffers (none here)."""

    def check_room(self, n: int) -> None:
        if self.pos + n > self.capacity:
            raise UserError(
                f"KV cache full: {self.pos} + {n} tokens exceed the capacity of {self.capacity}",
                "lower --max-new-tokens or shorten the prompt",
            )


def rope_tables(head_dim: int, theta: float, positions: int) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin of shape (positions, hd/2), in float64.

    inv_freq_j = theta^(-2j / hd); angle(pos, j) = pos * inv_freq_j (HF's rotate_half RoPE).
    """
    half = head_dim // 2
    inv_freq = 1.0 / (theta ** (np.arange(0, half, dtype=np.float64) * 2.0 / head_dim))
    ang = np.outer(np.arange(positions, dtype=np.float64), inv_freq)
    return np.cos(ang), np.sin(ang)


def attn_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)
