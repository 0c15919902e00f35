"""The cuda engine: the forward pass in PyTorch, bf16 by default on an NVIDIA GPU.

The same class runs on torch CPU under the backend name `torch` (float32 by default), so the
code path is tested where there is no GPU. Weights are fused where the math allows
(q|k|v into one matrix, gate|up into one: the layout of `engines.model.weights`) so each projection
is one GEMM/GEMV. Logits stay on the device and the sampler picks there: only the token id
crosses to the host. Shapes use the legend in `engines.model.config`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from ..backends import check_backend, check_quant, resolve_dtype
from ..base import Engine, attn_scale, rope_tables
from ..ops import (
    ATTENTION, ATTN_MIX, ATTN_NORM, ATTN_SCORES, ATTN_SOFTMAX, DOWN_PROJ, EMBED, FINAL_NORM,
    GATE_UP_PROJ, LM_HEAD, MLP_NORM, O_PROJ, QK_NORM, QKV_PROJ, ROPE, SILU_MUL,
)
from ..sampling import SamplingParams
from ..model.safetensors_mmap import TensorRef
from . import dnnl as torch_dnnl
from .dnnl import PackedLinear
from .qlinear import QLinear, linear
from .sampling import TorchSampler
from ..model.weights import to_float32

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def rmsnorm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """In float32 whatever the input dtype, as HF's Qwen2RMSNorm does."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return w * xf.to(x.dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (T, n, hd); cos/sin (T, 1, hd/2): rotate (j, j + hd/2) pairs."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def to_tensor(ref, dtype: torch.dtype, device) -> torch.Tensor:
    """Stored weights (memory-mapped NumPy, bf16 as uint16 bits) -> a tensor on `device`."""
    a = ref.array
    with warnings.catch_warnings():
        # the mapping is read-only and we never write through it: .to() below makes the copy
        warnings.simplefilter("ignore", UserWarning)
        t = torch.from_numpy(np.ascontiguousarray(a))
    if ref.dtype == "bfloat16":
        t = t.view(torch.bfloat16)
    return t.to(device=device, dtype=dtype, copy=True)


class TorchEngine(Engine):
    name = "torch"

    def __init__(self, ckpt, dtype: str | None = None, device: str = "cpu", progress=None,
                 fused_attention: bool = False, quant: str | None = None):
        super().__init__(ckpt)
        self.quant = quant
        self.dtype = dtype = resolve_dtype(self.name, dtype)
        self.tdtype = TORCH_DTYPES[dtype]
        self.act_itemsize = torch.finfo(self.tdtype).bits // 8
        self.tdev = torch.device(device)
        if self.tdev.type == "cuda" and self.tdev.index is None:  # "cuda": the current GPU, by its index
            self.tdev = torch.device("cuda", torch.cuda.current_device())
        self.device, self.device_index = self.tdev.type, self.tdev.index
        # attention as one SDPA call, reported as the composite op `attention`
        self.fused_attention = fused_attention
        # float32 matmul weights prepacked for oneDNN on the CPU (`engines.torch.dnnl`)
        self.packed = torch_dnnl.available(self.tdev, self.tdtype)
        self.load_weights(self._convert, progress)
        mats = [t for lw in self.layers for t in (lw.qkv, lw.o_proj, lw.gate_up, lw.down)] + [self.embed, self.lm_head]
        self.quant_dot = dtype if any(isinstance(t, QLinear) for t in mats) else ""  # QLinear takes the input as is
        self.reset(64)

    def _convert(self, t, role: str):
        """A stored tensor -> a tensor on the device, or a quantized weight (`engines.torch.qlinear`): a
        format the file holds and PyTorch has a kernel for stays in it (on the CPU), float
        matrices are quantized as `--quant` plans (`engines.quant.formats.plan`), the rest is widened."""
        from ..quant import formats as Q

        kernels = ("Q8_0",) if role == "embed" else ("Q8_0", "Q4_0", "Q4_1")
        fmt = Q.target(t.dtype if t.quantized else None, role, self.quant, kernels)
        if self.tdev.type == "cpu" and fmt is not None and len(t.shape) == 2:
            if t.dtype == fmt:
                return QLinear(t.array, fmt, t.cols, self.tdtype, self.tdev)  # the file's own bytes
            q = Q.quantize(to_float32(t), fmt)
            return QLinear(q.blocks, fmt, q.cols, self.tdtype, self.tdev)
        if t.quantized:
            t = TensorRef(to_float32(t), "float32")
        out = to_tensor(t, self.tdtype, self.tdev)
        if role in ("linear", "lm_head") and out.ndim == 2 and self.packed:
            return PackedLinear(out)
        return out

    def tied_head(self, embed):
        # the embedding is gathered by rows, the head multiplied: a packed copy for the head
        if self.packed and isinstance(embed, torch.Tensor):
            return PackedLinear(embed)
        return embed

    @staticmethod
    def nbytes(tensor) -> int:
        if isinstance(tensor, (QLinear, PackedLinear)):
            return tensor.nbytes
        return tensor.numel() * tensor.element_size()

    def make_sampler(self, params: SamplingParams) -> TorchSampler:
        return TorchSampler(params)

    def to_host(self, logits) -> np.ndarray:
        if isinstance(logits, np.ndarray):  # prefill(all_logits=True) already returns host logits
            return logits
        return logits.float().cpu().numpy()

    def read_token(self, token, logits) -> tuple[int, bool]:
        # the id and its logit in one transfer: one sync per token, as before
        pair = torch.stack((token.to(torch.float64), logits.index_select(0, token.reshape(1))[0].to(torch.float64)))
        t, logit = pair.tolist()
        return int(t), math.isfinite(logit)

    @staticmethod
    def all_finite(tensor) -> bool:
        if isinstance(tensor, (QLinear, PackedLinear)):
            return tensor.isfinite()
        return bool(torch.isfinite(tensor).all())

    def reset(self, capacity: int) -> None:
        cfg = self.cfg
        self.capacity, self.pos = capacity, 0
        shape = (cfg.num_layers, cfg.num_kv_heads, capacity, cfg.head_dim)
        self.k_cache = torch.zeros(shape, dtype=self.tdtype, device=self.tdev)  # (L, nkv, S, hd)
        self.v_cache = torch.zeros(shape, dtype=self.tdtype, device=self.tdev)
        cos, sin = rope_tables(cfg.head_dim, cfg.rope_theta, capacity)
        self.cos = torch.from_numpy(cos).to(self.tdev, torch.float32)  # (S, hd/2)
        self.sin = torch.from_numpy(sin).to(self.tdev, torch.float32)

    def kv_cache_bytes(self) -> int:
        return 2 * self.k_cache.numel() * self.k_cache.element_size()

    def memory(self) -> dict:
        if self.tdev.type != "cuda":
            return {}
        return {
            "torch_allocated_bytes": torch.cuda.memory_allocated(self.tdev),
            "torch_reserved_bytes": torch.cuda.memory_reserved(self.tdev),
            "torch_peak_bytes": torch.cuda.max_memory_allocated(self.tdev),
        }

    @torch.inference_mode()
    def prefill(self, ids, all_logits=False, on_device=False):
        self.check_room(len(ids))
        idx = torch.tensor(list(ids), dtype=torch.long, device=self.tdev)
        logits = self._forward(idx, all_logits)
        return logits.cpu().numpy() if all_logits and not on_device else logits

    @torch.inference_mode()
    def decode(self, token_id):
        self.check_room(1)
        idx = torch.tensor([token_id], dtype=torch.long, device=self.tdev)
        return self._forward(idx, False)

    def _forward(self, idx: torch.Tensor, all_logits: bool):
        x = self.embed_rows(idx)  # (T, H)
        self.lap(-1, EMBED)
        x = self.run_layers(x)
        logits = self.head(x if all_logits else x[-1:])  # (rows, V), on the device
        return logits if all_logits else logits[0]

    def run_layers(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder layers over x (T, H), the T tokens after the cache's `pos`; advances `pos`."""
        cfg, lap = self.cfg, self.lap
        nh, nkv, hd, g, qd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.gqa_group, cfg.q_dim
        P, T = self.pos, x.shape[0]
        S = P + T
        cos = self.cos[P:S].unsqueeze(1)  # (T, 1, hd/2)
        sin = self.sin[P:S].unsqueeze(1)
        mask = None
        if T > 1:  # query t (absolute P+t) sees keys 0..P+t
            mask = torch.ones(T, S, dtype=torch.bool, device=self.tdev).tril(diagonal=P).logical_not()

        for li, lw in enumerate(self.layers):
            q, k, v = self.attention_in(li, lw, x, cos, sin)
            self.k_cache[li, :, P:S] = k.transpose(0, 1)
            self.v_cache[li, :, P:S] = v.transpose(0, 1)
            lap(li, ROPE)
            keys, values = self.k_cache[li, :, :S], self.v_cache[li, :, :S]  # (nkv, S, hd)
            if self.fused_attention:
                # one SDPA call: scores, softmax and mix fused; GQA by repeating KV heads inside
                mixed = F.scaled_dot_product_attention(
                    q.transpose(0, 1), keys, values, attn_mask=None if mask is None else mask.logical_not(),
                    scale=attn_scale(hd), enable_gqa=g > 1)  # (nh, T, hd)
                attn = mixed.transpose(0, 1).reshape(T, qd)
                lap(li, ATTENTION)
            else:
                # GQA: the g query heads that share a KV head are stacked as rows: (nkv, g*T, hd)
                qg = q.transpose(0, 1).reshape(nkv, g * T, hd)
                scores = torch.matmul(qg, keys.transpose(1, 2)).float() * attn_scale(hd)  # (nkv, g*T, S)
                lap(li, ATTN_SCORES)
                if mask is not None:
                    scores = scores.view(nkv, g, T, S).masked_fill(mask, float("-inf")).view(nkv, g * T, S)
                probs = torch.softmax(scores, dim=-1).to(self.tdtype)
                lap(li, ATTN_SOFTMAX)
                mixed = torch.matmul(probs, values)  # (nkv, g*T, hd)
                attn = mixed.view(nh, T, hd).transpose(0, 1).reshape(T, qd)
                lap(li, ATTN_MIX)
            x = self.attention_out_and_mlp(li, lw, x, attn)
        self.pos = S
        return x

    # --- the parts of a layer around attention, shared with the batched pass (engines.batch.paged)
    def embed_rows(self, idx: torch.Tensor) -> torch.Tensor:
        return self.embed.rows_of(idx) if isinstance(self.embed, QLinear) else self.embed[idx]

    def attention_in(self, li: int, lw, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """Norm, q|k|v projection, q/k norms, RoPE: (q (T, nh, hd), k, v (T, nkv, hd)), lapped."""
        cfg, lap = self.cfg, self.lap
        nh, nkv, hd, qd, kvd, eps = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.q_dim, cfg.kv_dim, cfg.rms_norm_eps
        T = x.shape[0]
        h = rmsnorm(x, lw.attn_norm, eps)
        lap(li, ATTN_NORM)
        qkv = linear(h, lw.qkv, lw.qkv_bias)  # (T, q+2kv)
        q = qkv[:, :qd].view(T, nh, hd)
        k = qkv[:, qd:qd + kvd].view(T, nkv, hd)
        v = qkv[:, qd + kvd:].view(T, nkv, hd)
        lap(li, QKV_PROJ)
        if cfg.qk_norm:
            q = rmsnorm(q, lw.q_norm, eps)
            k = rmsnorm(k, lw.k_norm, eps)
            lap(li, QK_NORM)
        q = apply_rope(q.float(), cos, sin).to(self.tdtype)
        k = apply_rope(k.float(), cos, sin).to(self.tdtype)
        return q, k, v

    def attention_out_and_mlp(self, li: int, lw, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """x + o_proj(attn), then the MLP block with its residual, lapped."""
        lap, I, eps = self.lap, self.cfg.intermediate_size, self.cfg.rms_norm_eps
        x = self.residual(li, O_PROJ, x, linear(attn, lw.o_proj))
        h = rmsnorm(x, lw.mlp_norm, eps)
        lap(li, MLP_NORM)
        gu = linear(h, lw.gate_up)  # (T, 2I): gate | up
        lap(li, GATE_UP_PROJ)
        act = F.silu(gu[:, :I]) * gu[:, I:]
        lap(li, SILU_MUL)
        return self.residual(li, DOWN_PROJ, x, linear(act, lw.down))

    def residual(self, li: int, op: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x + y, the projection `op` just made, lapped as `op`. A tensor-parallel rank's y is a
        partial sum: it all-reduces it here (`engines.dist.engine`)."""
        x = x + y
        self.lap(li, op)
        return x

    def head(self, rows: torch.Tensor) -> torch.Tensor:
        """Final norm and lm_head over `rows` (R, H): float32 logits (R, V), lapped."""
        h = rmsnorm(rows, self.final_norm, self.cfg.rms_norm_eps)
        self.lap(-1, FINAL_NORM)
        logits = linear(h, self.lm_head).float()
        self.lap(-1, LM_HEAD)
        return logits


class TorchCpuEngine(TorchEngine):
    name = "torch"
    def __init__(self, ckpt, dtype=None, progress=None, fused_attention: bool = False, quant: str | None = None):
        super().__init__(ckpt, dtype=dtype, device="cpu", progress=progress, fused_attention=fused_attention,
                         quant=quant)


class CudaEngine(TorchEngine):
    name = "cuda"

    def __init__(self, ckpt, dtype=None, progress=None, fused_attention: bool = False, quant: str | None = None,
                 device: str = "cuda"):
        check_backend(self.name)
        check_quant(self.name, quant)
        super().__init__(ckpt, dtype=dtype, device=device, progress=progress, fused_attention=fused_attention)

    def warmup(self) -> float:
        torch.cuda.synchronize(self.tdev)
        return 0.0
