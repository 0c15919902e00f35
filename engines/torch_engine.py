"""The cuda engine: the forward pass in PyTorch, bf16 by default on an NVIDIA GPU.

The same class runs on torch CPU under the backend name `torch` (float32 by default), so the
code path is tested where there is no GPU. Weights are fused where the math allows
(q|k|v into one matrix, gate|up into one) so each projection is one GEMM/GEMV.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from profilers.ops import (
    ATTN_MIX, ATTN_NORM, ATTN_SCORES, ATTN_SOFTMAX, DOWN_PROJ, EMBED, FINAL_NORM, GATE_UP_PROJ,
    LM_HEAD, MLP_NORM, O_PROJ, QK_NORM, QKV_PROJ, ROPE, SILU_MUL,
)

from .base import Engine, attn_scale, rope_tables
from .checkpoint import layer_prefix, lm_head_name
from . import require_cuda, resolve_dtype

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

    def __init__(self, ckpt, probe=None, dtype: str | None = None, device: str = "cpu", progress=None):
        super().__init__(ckpt, probe)
        self.dtype = dtype = resolve_dtype(self.name, dtype)
        self.tdtype = TORCH_DTYPES[dtype]
        self.weight_itemsize = self.act_itemsize = torch.finfo(self.tdtype).bits // 8
        self.device = device
        self.tdev = torch.device(device)
        cfg, w = self.cfg, ckpt.weights

        def get(name):
            return to_tensor(w.get(name), self.tdtype, self.tdev)

        def cat(names):
            return torch.cat([get(n) for n in names], dim=0).contiguous()

        self.embed = get("model.embed_tokens.weight")  # (V, H)
        self.layers = []
        for i in range(cfg.num_layers):
            p = layer_prefix(i)
            attn = p + "self_attn."
            L = {
                "attn_norm": get(p + "input_layernorm.weight"),  # (H,)
                "wqkv": cat([attn + "q_proj.weight", attn + "k_proj.weight", attn + "v_proj.weight"]),  # (q+2kv, H)
                "bqkv": cat([attn + "q_proj.bias", attn + "k_proj.bias", attn + "v_proj.bias"]) if cfg.attention_bias else None,
                "q_norm": get(attn + "q_norm.weight") if cfg.qk_norm else None,  # (hd,)
                "k_norm": get(attn + "k_norm.weight") if cfg.qk_norm else None,
                "wo": get(attn + "o_proj.weight"),  # (H, q)
                "mlp_norm": get(p + "post_attention_layernorm.weight"),
                "wgu": cat([p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"]),  # (2I, H)
                "wd": get(p + "mlp.down_proj.weight"),  # (H, I)
            }
            self.layers.append(L)
            if progress:
                progress(i + 1, cfg.num_layers)
        self.final_norm = get("model.norm.weight")
        self.lm_head = self.embed if cfg.tie_word_embeddings else get(lm_head_name(cfg))
        self._weight_bytes = sum(
            t.numel() * t.element_size() for L in self.layers for t in L.values() if t is not None
        ) + self.embed.numel() * self.embed.element_size() + self.final_norm.numel() * self.final_norm.element_size()
        if not cfg.tie_word_embeddings:
            self._weight_bytes += self.lm_head.numel() * self.lm_head.element_size()
        self.reset(64)

    @property
    def resident_weight_bytes(self) -> int:
        return self._weight_bytes

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
    def prefill(self, ids, all_logits=False):
        self.check_room(len(ids))
        idx = torch.tensor(list(ids), dtype=torch.long, device=self.tdev)
        return self._forward(idx, all_logits)

    @torch.inference_mode()
    def decode(self, token_id):
        self.check_room(1)
        idx = torch.tensor([token_id], dtype=torch.long, device=self.tdev)
        return self._forward(idx, False)

    def _forward(self, idx: torch.Tensor, all_logits: bool) -> np.ndarray:
        cfg, lap = self.cfg, self.lap
        nh, nkv, hd, g = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.gqa_group
        qd, kvd, I, eps = cfg.q_dim, cfg.kv_dim, cfg.intermediate_size, cfg.rms_norm_eps
        P, T = self.pos, idx.shape[0]
        S = P + T
        cos = self.cos[P:S].unsqueeze(1)  # (T, 1, hd/2)
        sin = self.sin[P:S].unsqueeze(1)
        mask = None
        if T > 1:  # query t (absolute P+t) sees keys 0..P+t
            mask = torch.ones(T, S, dtype=torch.bool, device=self.tdev).tril(diagonal=P).logical_not()

        x = self.embed[idx]  # (T, H)
        lap(-1, EMBED)
        for li, L in enumerate(self.layers):
            h = rmsnorm(x, L["attn_norm"], eps)
            lap(li, ATTN_NORM)
            qkv = F.linear(h, L["wqkv"], L["bqkv"])  # (T, q+2kv)
            q = qkv[:, :qd].view(T, nh, hd)
            k = qkv[:, qd:qd + kvd].view(T, nkv, hd)
            v = qkv[:, qd + kvd:].view(T, nkv, hd)
            lap(li, QKV_PROJ)
            if cfg.qk_norm:
                q = rmsnorm(q, L["q_norm"], eps)
                k = rmsnorm(k, L["k_norm"], eps)
                lap(li, QK_NORM)
            q = apply_rope(q.float(), cos, sin).to(self.tdtype)
            k = apply_rope(k.float(), cos, sin).to(self.tdtype)
            self.k_cache[li, :, P:S] = k.transpose(0, 1)
            self.v_cache[li, :, P:S] = v.transpose(0, 1)
            lap(li, ROPE)
            # GQA: the g query heads that share a KV head are stacked as rows: (nkv, g*T, hd)
            qg = q.transpose(0, 1).reshape(nkv, g * T, hd)
            keys = self.k_cache[li, :, :S]  # (nkv, S, hd)
            scores = torch.matmul(qg, keys.transpose(1, 2)).float() * attn_scale(hd)  # (nkv, g*T, S)
            lap(li, ATTN_SCORES)
            if mask is not None:
                scores = scores.view(nkv, g, T, S).masked_fill(mask, float("-inf")).view(nkv, g * T, S)
            probs = torch.softmax(scores, dim=-1).to(self.tdtype)
            lap(li, ATTN_SOFTMAX)
            mixed = torch.matmul(probs, self.v_cache[li, :, :S])  # (nkv, g*T, hd)
            attn = mixed.view(nh, T, hd).transpose(0, 1).reshape(T, qd)
            lap(li, ATTN_MIX)
            x = x + F.linear(attn, L["wo"])
            lap(li, O_PROJ)
            h = rmsnorm(x, L["mlp_norm"], eps)
            lap(li, MLP_NORM)
            gu = F.linear(h, L["wgu"])  # (T, 2I)
            lap(li, GATE_UP_PROJ)
            act = F.silu(gu[:, :I]) * gu[:, I:]
            lap(li, SILU_MUL)
            x = x + F.linear(act, L["wd"])
            lap(li, DOWN_PROJ)
        self.pos = S
        rows = x if all_logits else x[-1:]
        h = rmsnorm(rows, self.final_norm, eps)
        lap(-1, FINAL_NORM)
        logits = F.linear(h, self.lm_head)
        lap(-1, LM_HEAD)
        out = logits.float().cpu().numpy()
        return out if all_logits else out[0]


class TorchCpuEngine(TorchEngine):
    name = "torch"

    def __init__(self, ckpt, probe=None, dtype=None, progress=None):
        super().__init__(ckpt, probe, dtype=dtype, device="cpu", progress=progress)


class CudaEngine(TorchEngine):
    name = "cuda"

    def __init__(self, ckpt, probe=None, dtype=None, progress=None):
        require_cuda()
        super().__init__(ckpt, probe, dtype=dtype, device="cuda", progress=progress)

    def warmup(self) -> float:
        torch.cuda.synchronize()
        return 0.0
