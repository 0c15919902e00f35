"""What the `aios top` tests share: a frozen session for layout snapshots, a Pilot over a live
app, and the check that a refused command says so in one line.

The frozen session is the real TopSession, fed synthetic steps with fixed durations through
the same `_on_step` / `_on_token` hooks the worker uses, and never started. Every number on
screen is therefore deterministic."""

from __future__ import annotations

import asyncio
import contextlib
import functools

import numpy as np

from aios_cli.errors import BAD_INPUT
from aios_cli.tui.session import TopSession
from aios_cli.tui.view import GenStat
from engines.model.sources import open_model
from engines.ops import OP_INDEX, OPS
from engines.sampling import SamplingParams
from profilers.harness import RunOptions
from profilers.memory import MemorySample
from profilers.probe import Step

PER_LAYER = ("attn_norm", "qkv_proj", "rope", "attn_scores", "attn_softmax", "attn_mix", "o_proj", "mlp_norm",
             "gate_up_proj", "silu_mul", "down_proj")
KIND_NS = {"matmul": 180_000, "reduction": 9_000, "elementwise": 6_000, "memory": 4_000}


class FakeEngine:
    device = "cpu"
    dtype = "float32"
    act_itemsize = 4
    resident_weight_bytes = 1_976_000_000

    def __init__(self, capacity, cfg):
        self.pos, self.capacity = 0, capacity
        # float32 weights: what each op reads, per layer and outside the layers
        H, I, V, q, kv = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.q_dim, cfg.kv_dim
        tab = np.zeros((cfg.num_layers + 1, len(OPS)))
        for name, n in (("attn_norm", H), ("qkv_proj", (q + 2 * kv) * (H + 1)), ("o_proj", H * q), ("mlp_norm", H),
                        ("gate_up_proj", 2 * I * H), ("down_proj", I * H)):
            tab[:-1, OP_INDEX[name]] = 4 * n
        for name, n in (("embed", H), ("final_norm", H), ("lm_head", V * H)):
            tab[-1, OP_INDEX[name]] = 4 * n
        self.op_weight_bytes = tab

    def kv_cache_bytes(self):
        return 2 * 24 * 128 * 2 * self.capacity * 4


def synthetic_step(num_layers: int, phase: str, index: int, n_tokens: int, past: int, wobble: float) -> Step:
    names = ["embed"] + [op for _ in range(num_layers) for op in PER_LAYER] + ["final_norm", "lm_head", "sample"]
    layers = [-1] + [i for i in range(num_layers) for _ in PER_LAYER] + [-1, -1, -1]
    ops = np.array([OP_INDEX[n] for n in names], np.int16)
    scale = n_tokens if phase == "prefill" else 1
    durs = np.array([int(KIND_NS[OPS[o].kind] * scale * (1 + 0.3 * np.sin(0.7 * i + wobble)))
                     if OPS[o].name != "lm_head" else 4_000_000 for i, o in enumerate(ops)], np.int64)
    st = Step(phase, index, n_tokens, past)
    st.layers = np.array(layers, np.int32)
    st.ops = ops
    st.durs_ns = durs
    st.starts_ns = np.concatenate([[0], np.cumsum(durs)[:-1]])
    st.op_counts = np.bincount(ops, minlength=len(OPS)).astype(np.int64)
    st.wall_s = float(durs.sum()) * 1e-9 + 50e-6
    return st


class FrozenSession(TopSession):
    def start(self):  # no worker: the view stays as built
        pass

    def stop(self, timeout=2.0):
        return True


def frozen_session(n_tokens: int = 40) -> FrozenSession:
    ckpt = open_model("qwen2.5-0.5b")
    prompt = "The quick brown fox"
    ids = ckpt.tokenizer.encode(prompt).ids
    opts = RunOptions(max_new_tokens=64, sampling=SamplingParams(greedy=True), profile="op", ignore_eos=True)
    s = FrozenSession(ckpt, "simd", [(prompt, ids)], opts, backends=("scalar", "simd", "torch"))
    L = ckpt.config.num_layers
    s.engine = FakeEngine(len(ids) + 64, ckpt.config)
    v = s.v
    v.dtype, v.device, v.state, v.generation = "float32", "cpu: Example 8-core CPU", "generating", 3
    v.weights = "float32 32.00 b/w"
    v.no_gpu_reason = "torch 2.13.0+cpu is a CPU-only build"
    text_ids = ckpt.tokenizer.encode(" jumps over the lazy dog, and the dog sleeps on in the warm sun while"
                                     " the fox runs far away into the quiet green woods beyond the hill.").ids
    s._gens.extend([GenStat(1, "simd", len(ids), 64, 0.212, 18.9, 12.1), GenStat(2, "simd", len(ids), 64, 0.198, 20.2, 12.4)])
    s.engine.pos = len(ids)
    s._on_step(synthetic_step(L, "prefill", 0, len(ids), 0, 0.0),
               MemorySample(t_s=0.0, rss_bytes=2_300_000_000))
    for i in range(n_tokens):
        s._on_token(text_ids[i % len(text_ids)])
        s.engine.pos += 1
        mem = MemorySample(t_s=0.1 * (i + 1), rss_bytes=2_300_000_000 + 40_000 * i)
        s._on_step(synthetic_step(L, "decode", i + 1, 1, len(ids) + i, 0.37 * i), mem)
    return s


class FixedSampler:
    def sample(self):
        return [37.0, 92.0, 55.0, 12.0], None


@contextlib.asynccontextmanager
async def piloted(app_class, session, size: tuple[int, int], notifications: bool = False, **app_kw):
    """(app, pilot): `app_class(session, **app_kw)` running headless at `size`."""
    app = app_class(session, **app_kw)
    async with app.run_test(size=size, notifications=notifications) as p:
        yield app, p


def assert_one_error_line(res, needle: str) -> None:
    """A refused command: the bad-input exit code and one line, `aios: error: …` naming `needle`."""
    assert res.exit_code == BAD_INPUT, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("aios: error: ") and needle in lines[0], res.output


def pilot_test(test):
    """An async Pilot test run as a plain pytest test (its fixtures as its arguments), on a fresh
    event loop."""
    @functools.wraps(test)
    def run(*args, **kwargs):
        asyncio.run(test(*args, **kwargs))

    return run
