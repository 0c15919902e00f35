"""A cost model of tensor and pipeline parallelism: what one decoded token and one prefill cost
on a cluster of GPUs, from a model's shape, an accelerator's roofline and the links between the
GPUs (profilers.sim.links). An ESTIMATE: nothing here runs a model; `aios sim parallel` prints
it labelled as such.

The pieces, each a closed form:

    ring all-reduce of B bytes over n ranks   2(n-1)/n x B / bandwidth + 2(n-1) x latency
        (reduce-scatter then all-gather: 2(n-1) steps, each moving B/n bytes per rank)
    one pipeline hop of B bytes               latency + B / bandwidth
    GPipe bubble, p stages, m microbatches    (p-1) / (m+p-1) of every GPU's time idle

A decoder layer is priced as a roofline with overlap: max(FLOPs / peak, bytes / HBM bandwidth),
the bytes being its weights plus the K and V it reads and writes (activations, T x H-sized, are
left out: small beside the weights in decode, and prefill is compute-bound). Tensor parallelism
is Megatron-LM's: q/k/v and gate/up split by columns, o_proj and down_proj by rows, so each rank
does 1/tp of a layer's matmuls and attention heads, and two all-reduces of T x H activations per
layer join them (after o_proj, after down_proj). The norms are replicated on every rank, and so
are the embedding and lm_head (a vocab-parallel lm_head would split it too; it is kept whole
here). A rank holds at least one KV head: past tp = KV heads they are replicated, as vLLM does;
real TP must divide the KV heads (`valid_tp`), which the model does not enforce but reports.

Pipeline parallelism splits the layers into p stages. A batch of m equal microbatches through
p stages of times τ_s (a permutation flow shop of identical jobs) ends after
Σ τ_s + (m-1) max τ_s plus the p-1 hops of the first microbatch; seen from the busiest stage
that is m x τ_max of work, Σ τ_s - τ_max of waiting (the bubble; (p-1)τ for equal stages) and
the hops. Decode at batch 1 is the case m = 1: the stages run one after another, and each GPU
waits (p-1)/p of the token.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from engines.errors import UserError
from engines.model.config import PRESETS, ModelConfig, qwen25_config

from .links import Accelerator, Cluster, Link

# Qwen2.5-72B's real shape (Qwen/Qwen2.5-72B config.json): V 152064, H 8192, I 29568, 80 layers,
# 64 query heads, 8 KV heads, head_dim 128, untied embeddings, q/k/v biases. Not a preset: no
# engine here runs it, the cost model only prices it.
QWEN25_72B = qwen25_config("qwen2.5-72b", 152064, 8192, 29568, 80, 64, 8, 128, False)
SHAPES: dict[str, ModelConfig] = {"qwen2.5-0.5b": PRESETS["qwen2.5-0.5b"], "qwen2.5-7b": PRESETS["qwen2.5-7b"],
                                  "qwen2.5-72b": QWEN25_72B}
DEFAULT_MODELS = tuple(SHAPES)


def shape(name: str) -> ModelConfig:
    """A model's shape by name: the three above, or any built-in preset."""
    cfg = SHAPES.get(name) or PRESETS.get(name)
    if cfg is None:
        raise UserError(f"unknown --model {name!r}", f"choose from: {', '.join(dict.fromkeys([*SHAPES, *PRESETS]))}")
    return cfg


# --- communication --------------------------------------------------------------------------

def ring_allreduce_s(nbytes: float, n: int, link: Link) -> float:
    """A ring all-reduce of `nbytes` over `n` ranks: 2(n-1) steps (n-1 of reduce-scatter, n-1 of
    all-gather), each sending one n-th of the buffer to the next rank and paying the link's
    per-step latency. 0 for one rank."""
    if n <= 1:
        return 0.0
    return 2 * (n - 1) / n * nbytes / link.bandwidth + 2 * (n - 1) * link.latency


def p2p_s(nbytes: float, link: Link) -> float:
    """One pipeline hop: the activations of one microbatch sent to the next stage."""
    return link.latency + nbytes / link.bandwidth


def pp_bubble(p: int, m: int) -> float:
    """GPipe's idle fraction: p stages, m microbatches, (p-1) fill and drain slots of m+p-1."""
    return (p - 1) / (m + p - 1)


# --- one decoder layer ----------------------------------------------------------------------

def layer_params(cfg: ModelConfig) -> tuple[int, int]:
    """(split, replicated) parameters of one decoder layer under TP: the matrices and the q/k/v
    biases are split across the ranks, the two RMSNorm weights (and Qwen3's q/k norms) are
    not. Their sum is cfg.layer_params()."""
    H, I, q, kv = cfg.hidden_size, cfg.intermediate_size, cfg.q_dim, cfg.kv_dim
    split = H * (q + 2 * kv) + q * H + 3 * H * I
    if cfg.attention_bias:
        split += q + 2 * kv
    replicated = 2 * H + (2 * cfg.head_dim if cfg.qk_norm else 0)
    return split, replicated


def matmul_params(cfg: ModelConfig) -> int:
    """Weights a token multiplies through in one layer (2 FLOPs each)."""
    H, I, q, kv = cfg.hidden_size, cfg.intermediate_size, cfg.q_dim, cfg.kv_dim
    return H * (q + 2 * kv) + q * H + 3 * H * I


def kv_heads_per_rank(cfg: ModelConfig, tp: int) -> float:
    """KV heads one rank holds: nkv / tp, but at least one (replicated past tp = nkv)."""
    return max(cfg.num_kv_heads / tp, 1.0)


def valid_tp(cfg: ModelConfig, tp: int) -> bool:
    """Whether real Megatron-style TP can split the model tp ways: whole KV heads (hence whole
    query heads) and whole MLP columns on every rank."""
    return cfg.num_kv_heads % tp == 0 and cfg.intermediate_size % tp == 0


@dataclass(frozen=True)
class LayerCost:
    """One rank's share of one decoder layer for `tokens` new tokens after `context` cached ones."""

    flops: float
    weight_bytes: float
    kv_bytes: float

    @property
    def bytes(self) -> float:
        return self.weight_bytes + self.kv_bytes


def layer_cost(cfg: ModelConfig, tokens: float, context: float, tp: int = 1, dtype_bytes: int = 2) -> LayerCost:
    """FLOPs and HBM bytes of one layer on one of `tp` ranks: each token through 1/tp of the
    matmuls (2 FLOPs a weight); attention's QKᵀ and PV for 1/tp of the query heads, each new
    token against the `context` cached keys and the new ones up to itself (causal); the split
    weights / tp plus the replicated norms read once; K and V read for every key attended to
    and written for the new tokens."""
    split, repl = layer_params(cfg)
    heads = cfg.num_heads / tp
    attended = tokens * context + tokens * (tokens + 1) / 2  # (query, key) pairs, causal
    flops = 2 * tokens * matmul_params(cfg) / tp + 4 * heads * cfg.head_dim * attended
    kv_row = 2 * kv_heads_per_rank(cfg, tp) * cfg.head_dim * dtype_bytes  # K and V of one token
    kv = kv_row * (context + tokens) + kv_row * tokens
    return LayerCost(flops, (split / tp + repl) * dtype_bytes, kv)


def roofline_s(flops: float, nbytes: float, accel: Accelerator) -> tuple[float, str]:
    """max(compute, memory): a roofline with overlap (the two are assumed to hide each other)."""
    c, m = flops / accel.flops, nbytes / accel.hbm_bandwidth
    return (c, "compute") if c >= m else (m, "memory")


def replicated_s(cfg: ModelConfig, tokens: float, accel: Accelerator, dtype_bytes: int = 2) -> float:
    """What every rank does whole, outside the layers: the embedding rows of `tokens` tokens,
    the final norm, and lm_head for one token's logits (the last one, in prefill)."""
    H, V = cfg.hidden_size, cfg.vocab_size
    embed = tokens * H * dtype_bytes / accel.hbm_bandwidth
    head, _ = roofline_s(2 * V * H, (V * H + H) * dtype_bytes, accel)
    return embed + head


def stage_layers(num_layers: int, p: int) -> list[int]:
    """Layers per pipeline stage, as even as they go (the first stages take one more)."""
    base, extra = divmod(num_layers, p)
    return [base + (1 if s < extra else 0) for s in range(p)]


# --- a layout -------------------------------------------------------------------------------

@dataclass
class Phase:
    """One phase (a decode step, or a prefill) on one layout, in seconds. total = compute +
    allreduce + hops + bubble + other, all seen from the busiest stage's GPUs."""

    total_s: float
    compute_s: float  # the busiest stage's layers, all microbatches
    allreduce_s: float  # its TP all-reduces
    hops_s: float  # the p-1 pipeline hops of the first microbatch
    bubble_s: float  # waiting for the other stages (fill and drain; in batch-1 decode, their whole time)
    other_s: float  # embedding, final norm, lm_head (replicated)
    bubble_fraction: float  # pp_bubble(p, m): the share of every GPU's stage-slots idle
    bound: str  # the layer roofline's side: compute or memory
    microbatches: int
    tokens: float  # tokens per microbatch
    stage_s: list[float] = field(default_factory=list)  # τ_s: one microbatch through each stage
    hop_s: list[float] = field(default_factory=list)  # each of the p-1 hops


@dataclass
class Prediction:
    model: str
    accelerator: str
    tp: int
    pp: int
    gpus_per_node: int
    tp_link: str  # the slowest link any stage's all-reduce crosses
    pp_link: str  # the slowest link a hop crosses ('' with one stage)
    tp_valid: bool
    memory_per_gpu_bytes: float
    fits: bool
    context: int
    prompt_tokens: int
    decode: Phase
    prefill: Phase

    @property
    def gpus(self) -> int:
        return self.tp * self.pp

    def row(self) -> dict:
        """A flat record (the CSV and JSON rows): the layout, then each phase's breakdown."""
        out = {k: v for k, v in asdict(self).items() if k not in ("decode", "prefill")}
        out["gpus"] = self.gpus
        for name, ph in (("decode", self.decode), ("prefill", self.prefill)):
            out[f"{name}_s"] = ph.total_s
            for part in ("compute", "allreduce", "hops", "bubble", "other"):
                out[f"{name}_{part}_s"] = getattr(ph, f"{part}_s")
            out[f"{name}_bubble_fraction"] = ph.bubble_fraction
            out[f"{name}_bound"] = ph.bound
            out[f"{name}_microbatches"] = ph.microbatches
        return out


def _check(cfg: ModelConfig, tp: int, pp: int, gpus_per_node: int, dtype_bytes: int, context: int,
           prompt_tokens: int, microbatches: int) -> None:
    for name, v, lo in (("tp", tp, 1), ("pp", pp, 1), ("gpus_per_node", gpus_per_node, 1), ("dtype_bytes", dtype_bytes, 1),
                        ("context", context, 0), ("prompt_tokens", prompt_tokens, 1), ("microbatches", microbatches, 1)):
        if not isinstance(v, int) or v < lo:
            raise UserError(f"{name} must be a whole number >= {lo}, got {v!r}")
    if pp > cfg.num_layers:
        raise UserError(f"pp {pp} exceeds {cfg.name or 'the model'}'s {cfg.num_layers} layers",
                        "use at most one stage per layer")
    if microbatches > prompt_tokens:
        raise UserError(f"{microbatches} microbatches of a {prompt_tokens}-token prompt leave some empty",
                        "use at most as many microbatches as prompt tokens")


def _phase(cfg: ModelConfig, cl: Cluster, tp: int, pp: int, tokens_total: int, context_before: float, m: int,
           dtype_bytes: int) -> Phase:
    """A phase of `tokens_total` new tokens in m microbatches (m = 1 without PP: microbatches
    only pay for themselves by filling a pipeline)."""
    m = m if pp > 1 else 1
    t = tokens_total / m
    # microbatch j starts after j x t prompt tokens: FLOPs and bytes are linear in the context,
    # so equal microbatches at the mean context cost what the m of them do on average
    ctx = context_before + t * (m - 1) / 2
    cost = layer_cost(cfg, t, ctx, tp, dtype_bytes)
    layer, bound = roofline_s(cost.flops, cost.bytes, cl.accel)
    act = t * cfg.hidden_size * dtype_bytes  # one microbatch's activations: what a hop or all-reduce moves
    layers = stage_layers(cfg.num_layers, pp)
    ar = [2 * ring_allreduce_s(act, tp, cl.link_between(range(s * tp, (s + 1) * tp))) for s in range(pp)]
    stage = [n * (layer + a) for n, a in zip(layers, ar)]
    hops = [p2p_s(act, _hop_link(cl, tp, s)) for s in range(pp - 1)]
    b = max(range(pp), key=lambda s: stage[s])
    compute, allreduce = m * layers[b] * layer, m * layers[b] * ar[b]
    bubble = sum(stage) - stage[b]
    other = replicated_s(cfg, tokens_total, cl.accel, dtype_bytes)
    return Phase(compute + allreduce + sum(hops) + bubble + other, compute, allreduce, sum(hops), bubble, other,
                 pp_bubble(pp, m), bound, m, t, stage, hops)


def _hop_link(cl: Cluster, tp: int, s: int) -> Link:
    """Stage s to s+1: TP rank i of one sends to TP rank i of the next, all pairs at once; the
    hop is as slow as its slowest pair (the inter-node link if any pair crosses nodes)."""
    pairs = [cl.link_between((s * tp + i, (s + 1) * tp + i)) for i in range(tp)]
    return cl.inter if any(ln is cl.inter for ln in pairs) else cl.intra


def memory_per_gpu(cfg: ModelConfig, tp: int, pp: int, tokens: int, dtype_bytes: int = 2) -> float:
    """The largest stage's bytes on one GPU: its layers' weights (split / tp + replicated), their
    KV cache for `tokens` tokens, the embedding on the first stage and lm_head on the last (a
    tied one too, when they are different stages). Activations and workspace are left out."""
    split, repl = layer_params(cfg)
    per_layer = (split / tp + repl) * dtype_bytes + 2 * kv_heads_per_rank(cfg, tp) * cfg.head_dim * tokens * dtype_bytes
    table = cfg.vocab_size * cfg.hidden_size * dtype_bytes
    out = []
    for s, n in enumerate(stage_layers(cfg.num_layers, pp)):
        extra = (table if s == 0 else 0) + (cfg.hidden_size * dtype_bytes if s == pp - 1 else 0)
        if s == pp - 1 and (not cfg.tie_word_embeddings or pp > 1):
            extra += table
        out.append(n * per_layer + extra)
    return max(out)


def predict(cfg: ModelConfig, tp: int, pp: int, accel: Accelerator, intra_link: Link, inter_link: Link,
            gpus_per_node: int, dtype_bytes: int = 2, context: int = 2048, prompt_tokens: int = 2048,
            microbatches: int = 8) -> Prediction:
    """One layout's estimate: a decode step at batch 1 over `context` cached tokens, and a
    prefill of `prompt_tokens` (in `microbatches` when pp > 1)."""
    _check(cfg, tp, pp, gpus_per_node, dtype_bytes, context, prompt_tokens, microbatches)
    cl = Cluster(accel, gpus_per_node, intra_link, inter_link)
    decode = _phase(cfg, cl, tp, pp, 1, context, 1, dtype_bytes)
    prefill = _phase(cfg, cl, tp, pp, prompt_tokens, 0, microbatches, dtype_bytes)
    stage_links = [cl.link_between(range(s * tp, (s + 1) * tp)) for s in range(pp)]
    tp_link = "" if tp == 1 else ("inter" if any(ln is cl.inter for ln in stage_links) else "intra")
    pp_link = "" if pp == 1 else ("inter" if any(_hop_link(cl, tp, s) is cl.inter for s in range(pp - 1)) else "intra")
    name = {"intra": intra_link.name, "inter": inter_link.name, "": ""}
    mem = memory_per_gpu(cfg, tp, pp, max(context, prompt_tokens), dtype_bytes)
    return Prediction(cfg.name, accel.name, tp, pp, gpus_per_node, name[tp_link], name[pp_link], valid_tp(cfg, tp),
                      mem, mem <= accel.memory_bytes, context, prompt_tokens, decode, prefill)


# --- where TP stops paying ------------------------------------------------------------------

@dataclass
class Crossover:
    """The smallest tp (any integer, as if the model split evenly) at which one layer's two
    all-reduces take at least as long as its compute at decode; None if none up to `max_tp`.
    `valid` lists the tps real TP can use (they divide the KV heads)."""

    model: str
    link: str
    tp: int | None
    compute_s: float | None  # per layer at that tp
    allreduce_s: float | None
    max_tp: int
    valid: list[int]

    @property
    def largest_valid(self) -> int:
        return max(self.valid)

    @property
    def largest_paying(self) -> int:
        """The largest valid tp below the crossover (where TP still pays)."""
        return max(t for t in self.valid if self.tp is None or t < self.tp)

    def row(self) -> dict:
        return {**asdict(self), "largest_valid": self.largest_valid, "largest_paying": self.largest_paying}


def layer_times(cfg: ModelConfig, accel: Accelerator, link: Link, tp: int, context: int = 2048, tokens: int = 1,
                dtype_bytes: int = 2) -> tuple[float, float]:
    """(compute, all-reduce) seconds of one decoder layer on one of tp ranks."""
    cost = layer_cost(cfg, tokens, context, tp, dtype_bytes)
    compute, _ = roofline_s(cost.flops, cost.bytes, accel)
    return compute, 2 * ring_allreduce_s(tokens * cfg.hidden_size * dtype_bytes, tp, link)


def crossover(cfg: ModelConfig, accel: Accelerator, link: Link, context: int = 2048, tokens: int = 1,
              dtype_bytes: int = 2, max_tp: int = 64) -> Crossover:
    """Where tensor parallelism stops paying for one layer: the first tp whose all-reduces
    cost at least its compute (decode at batch 1 over `context` tokens, by default)."""
    valid = [t for t in range(1, max_tp + 1) if valid_tp(cfg, t)]
    for tp in range(2, max_tp + 1):
        c, a = layer_times(cfg, accel, link, tp, context, tokens, dtype_bytes)
        if a >= c:
            return Crossover(cfg.name, link.name, tp, c, a, max_tp, valid)
    return Crossover(cfg.name, link.name, None, None, None, max_tp, valid)


__all__ = [
    "DEFAULT_MODELS",
    "QWEN25_72B",
    "SHAPES",
    "Crossover",
    "LayerCost",
    "Phase",
    "Prediction",
    "crossover",
    "layer_cost",
    "layer_params",
    "layer_times",
    "memory_per_gpu",
    "p2p_s",
    "pp_bubble",
    "predict",
    "replicated_s",
    "ring_allreduce_s",
    "shape",
    "stage_layers",
    "valid_tp",
]
