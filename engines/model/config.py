"""Model configuration: what the forward pass needs to know, read from an HF config.json
or taken from the table of built-in presets (exact shapes of real Qwen models).

Shape legend, used in the comments of every engine:

    T    tokens pushed through this pass (the prompt for prefill, 1 for decode)
    P    tokens already in the KV cache before the pass (past)
    S    P + T: the keys and values attention reads
    H    hidden size                    I    MLP width (intermediate size)
    V    vocabulary size                L    number of decoder layers
    nh   query heads                    nkv  key/value heads (GQA: nh % nkv == 0)
    hd   head dim                       g    nh // nkv: query heads per KV head
    q    nh * hd                        kv   nkv * hd
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ModelError

# architectures[0] in config.json -> the forward pass that runs it.
# Llama-family checkpoints are Qwen2 without biases (and without q/k norm).
ARCHITECTURES = {
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "LlamaForCausalLM": "llama",
}
MODEL_TYPES = {"qwen2": "qwen2", "qwen3": "qwen3", "llama": "llama"}

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}


@dataclass(frozen=True)
class ModelConfig:
    arch: str  # qwen2 | qwen3 | llama
    vocab_size: int
    hidden_size: int  # H
    intermediate_size: int  # I (MLP width)
    num_layers: int  # L
    num_heads: int  # nh (query heads)
    num_kv_heads: int  # nkv (GQA: nh % nkv == 0)
    head_dim: int  # hd
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # q/k/v bias (Qwen2/2.5)
    qk_norm: bool = False  # per-head RMSNorm on q and k before RoPE (Qwen3)
    max_position_embeddings: int = 32768
    eos_token_ids: tuple[int, ...] = ()
    torch_dtype: str = "float32"  # dtype the checkpoint was saved in
    name: str = ""

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def gqa_group(self) -> int:
        return self.num_heads // self.num_kv_heads

    # --- sizes -------------------------------------------------------------
    def layer_params(self) -> int:
        H, I = self.hidden_size, self.intermediate_size
        qkv = H * (self.q_dim + 2 * self.kv_dim)
        if self.attention_bias:
            qkv += self.q_dim + 2 * self.kv_dim
        norms = 2 * H + (2 * self.head_dim if self.qk_norm else 0)
        return qkv + self.q_dim * H + 3 * H * I + norms

    def num_params(self) -> int:
        embed = self.vocab_size * self.hidden_size
        head = 0 if self.tie_word_embeddings else embed
        return embed + head + self.num_layers * self.layer_params() + self.hidden_size

    def weight_bytes(self, dtype: str) -> int:
        return self.num_params() * DTYPE_BYTES[dtype]

    def kv_cache_bytes(self, tokens: int, dtype: str) -> int:
        return 2 * self.num_layers * self.kv_dim * tokens * DTYPE_BYTES[dtype]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _field(d: dict, key: str, source: str, *alts: str):
    for k in (key, *alts):
        if k in d and d[k] is not None:
            return d[k]
    raise ModelError(
        f"{source}: config.json is missing '{key}'",
        "use an HF-format Qwen2/Qwen3/Llama config.json",
    )


def _number(d: dict, key: str, source: str, default, kind: str):
    v = _field(d, key, source) if default is None else d.get(key, default)
    if v is None:
        v = default
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2**62:  # Python reads any integer; math cannot
        raise ModelError(f"{source}: '{key}' is out of range ({str(v)[:24]}…, {len(str(v))} digits)", "fix config.json")
    finite = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if not finite or (kind == "an integer" and int(v) != v):
        raise ModelError(f"{source}: '{key}' must be {kind}, got {v!r}", "fix config.json")
    return v


def _int(d: dict, key: str, source: str, default=None) -> int:
    return int(_number(d, key, source, default, "an integer"))


def _float(d: dict, key: str, source: str, default: float, positive: bool = False) -> float:
    v = float(_number(d, key, source, default, "a finite number"))
    if positive and not v > 0:
        raise ModelError(f"{source}: '{key}' must be positive, got {v!r}", "fix config.json")
    return v


def config_from_hf(d: dict, source: str = "config.json", name: str = "") -> ModelConfig:
    """Build a ModelConfig from an HF config.json dict; reject what the engines can't run."""
    archs = d.get("architectures") or []
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise ModelError(f"{source}: 'architectures' must be a list of names, got {archs!r:.80}", "fix config.json")
    if not isinstance(d.get("model_type", ""), str):
        raise ModelError(f"{source}: 'model_type' must be a name, got {d['model_type']!r:.80}", "fix config.json")
    arch = None
    for a in archs:
        arch = ARCHITECTURES.get(a)
        if arch:
            break
    if arch is None and not archs:
        arch = MODEL_TYPES.get(d.get("model_type", ""))
    if arch is None:
        got = ", ".join(archs) or d.get("model_type") or "none given"
        raise ModelError(
            f"{source}: unsupported architecture ({got})",
            f"aios runs {', '.join(ARCHITECTURES)} checkpoints",
        )
    if d.get("hidden_act", "silu") != "silu":
        raise ModelError(f"{source}: unsupported hidden_act {d['hidden_act']!r}", "aios runs SiLU MLPs")

    rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
    if not isinstance(rope, dict):
        raise ModelError(f"{source}: rope_scaling must be an object, got {rope!r}", "fix config.json")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", None):
        raise ModelError(
            f"{source}: unsupported RoPE scaling {rope_type!r}",
            "aios implements plain RoPE (rope_type 'default')",
        )
    if d.get("use_sliding_window"):
        raise ModelError(f"{source}: sliding-window attention is not supported", "aios runs full causal attention")
    rope_theta = _float(d, "rope_theta", source, rope.get("rope_theta", 10000.0), positive=True)

    H = _int(d, "hidden_size", source)
    nh = _int(d, "num_attention_heads", source)
    if nh <= 0 or H <= 0:
        raise ModelError(f"{source}: hidden_size and num_attention_heads must be positive", "fix config.json")
    nkv = _int(d, "num_key_value_heads", source, nh)
    if d.get("head_dim") is None and H % nh:
        raise ModelError(f"{source}: hidden_size ({H}) is not a multiple of num_attention_heads ({nh}) and no "
                         "head_dim is given", "fix config.json")
    head_dim = _int(d, "head_dim", source, H // nh)
    eos = d.get("eos_token_id")
    eos_ids = tuple(e for e in eos if isinstance(e, int)) if isinstance(eos, list) else ((eos,) if isinstance(eos, int) else ())
    dtype = str(d.get("dtype") or d.get("torch_dtype") or "float32")
    if arch == "qwen2":
        bias = True if "attention_bias" not in d else bool(d["attention_bias"])
    else:
        bias = bool(d.get("attention_bias", False))
    if d.get("mlp_bias"):
        raise ModelError(f"{source}: mlp_bias is not supported", "aios runs bias-free MLPs")

    cfg = ModelConfig(
        arch=arch,
        vocab_size=_int(d, "vocab_size", source),
        hidden_size=H,
        intermediate_size=_int(d, "intermediate_size", source),
        num_layers=_int(d, "num_hidden_layers", source),
        num_heads=nh,
        num_kv_heads=nkv,
        head_dim=head_dim,
        rope_theta=rope_theta,
        rms_norm_eps=_float(d, "rms_norm_eps", source, 1e-6, positive=True),
        tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
        attention_bias=bias,
        qk_norm=arch == "qwen3",
        max_position_embeddings=_int(d, "max_position_embeddings", source, 32768),
        eos_token_ids=eos_ids,
        torch_dtype=dtype,
        name=name,
    )
    validate(cfg, source)
    return cfg


def validate(cfg: ModelConfig, source: str, fix: str = "fix config.json") -> None:
    positive = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                "max_position_embeddings")
    for k in positive:
        if getattr(cfg, k) <= 0:
            raise ModelError(f"{source}: {k} must be positive, got {getattr(cfg, k)}", fix)
    if cfg.num_heads % cfg.num_kv_heads:
        raise ModelError(
            f"{source}: num_attention_heads ({cfg.num_heads}) is not a multiple of num_key_value_heads ({cfg.num_kv_heads})",
            fix,
        )
    if cfg.head_dim % 2:
        raise ModelError(f"{source}: head_dim must be even for RoPE, got {cfg.head_dim}", fix)


# --- built-in presets --------------------------------------------------------------------
# Exact shapes of the real models (from their config.json). Weights are random, drawn from a
# fixed seed: they produce gibberish text and exist to profile real shapes without a download.

def qwen25_config(name: str, V: int, H: int, I: int, L: int, nh: int, nkv: int, hd: int, tied: bool, **kw) -> ModelConfig:
    """A Qwen2/2.5 shape: q/k/v biases, rope_theta 1e6, <|endoftext|> as EOS."""
    return ModelConfig(arch="qwen2", vocab_size=V, hidden_size=H, intermediate_size=I, num_layers=L, num_heads=nh,
                       num_kv_heads=nkv, head_dim=hd, tie_word_embeddings=tied, attention_bias=True, rope_theta=1e6,
                       rms_norm_eps=1e-6, eos_token_ids=(151643,), name=name, **kw)


PRESETS: dict[str, ModelConfig] = {
    # small enough that the pure-Python engine makes 16 tokens in a few seconds: its cost is the
    # vocabulary (the real 151,936 rows, so the real tokenizer works) x hidden
    "tiny": qwen25_config("tiny", 151936, 32, 64, 4, 2, 1, 16, True, max_position_embeddings=4096),
    # tiny with grouped-query attention over 2 KV heads: splits over 2 tensor-parallel ranks
    "tiny-gqa": qwen25_config("tiny-gqa", 151936, 64, 128, 4, 4, 2, 16, True, max_position_embeddings=4096),
    # exact shapes of the real models (their config.json):  V       H      I      L   nh  nkv  hd   tied
    "qwen2.5-0.5b": qwen25_config("qwen2.5-0.5b",                 151936, 896,   4864,  24, 14, 2,   64,  True),
    "qwen2.5-1.5b": qwen25_config("qwen2.5-1.5b",                 151936, 1536,  8960,  28, 12, 2,   128, True),
    "qwen2.5-coder-1.5b": qwen25_config("qwen2.5-coder-1.5b",     151936, 1536,  8960,  28, 12, 2,   128, True),
    "qwen2.5-7b": qwen25_config("qwen2.5-7b",                     152064, 3584,  18944, 28, 28, 4,   128, False),
    "qwen3-0.6b": ModelConfig(
        arch="qwen3", vocab_size=151936, hidden_size=1024, intermediate_size=3072,
        num_layers=28, num_heads=16, num_kv_heads=8, head_dim=128, rope_theta=1e6,
        rms_norm_eps=1e-6, tie_word_embeddings=True, attention_bias=False, qk_norm=True,
        max_position_embeddings=40960, eos_token_ids=(151645,), name="qwen3-0.6b",
    ),
}
DEFAULT_PRESET = "tiny"


def preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ModelError(
            f"unknown preset {name!r}", f"choose one of: {', '.join(PRESETS)} (or pass a model directory)"
        ) from None


__all__ = ["ModelConfig", "PRESETS", "DEFAULT_PRESET", "config_from_hf", "preset"]
