"""Engines against each other on the presets, and the profiler's counts against the op list."""

from __future__ import annotations

import numpy as np
import pytest

from engines import engine_class
from engines.checkpoint import open_model
from engines.config import PRESETS
from engines.generate import generate
from engines.sampling import Sampler, SamplingParams
from profilers.ops import OPS
from profilers.probe import BARRIER_MASK, Probe

PROMPT = [9707, 11, 1879, 0, 576, 3974, 13876, 38835]  # any in-vocab ids


@pytest.fixture(scope="module")
def tiny():
    return open_model("tiny")


def run(ckpt, backend, n=16, level="op", prompt=PROMPT):
    eng = engine_class(backend)(ckpt)
    probe = Probe(level)
    gen = generate(eng, prompt, n, Sampler(SamplingParams(greedy=True)), probe)
    return gen, probe


def test_engines_agree_on_tiny(tiny):
    ids = {b: run(tiny, b)[0].generated_ids for b in ("scalar", "simd", "torch")}
    assert len(ids["scalar"]) == 16
    assert ids["simd"] == ids["scalar"] and ids["torch"] == ids["scalar"]


def test_logits_agree_on_tiny(tiny):
    """float32 engines against the float64 scalar engine, as the reference."""
    ref = None
    for b in ("scalar", "simd", "torch"):
        eng = engine_class(b)(tiny)
        eng.reset(len(PROMPT))
        logits = np.asarray(eng.prefill(PROMPT, all_logits=True), np.float64)
        if ref is None:
            ref = logits
        else:
            np.testing.assert_allclose(logits, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["qwen2.5-0.5b", "qwen3-0.6b"])
def test_real_shape_presets(name):
    """simd and torch agree on greedy ids at real shapes; barriers are what the op list implies:
    3L+2 for Qwen2 (2 RMSNorms + 1 softmax per layer, final norm, vocabulary softmax), and
    4L+2 for Qwen3 (its per-head q/k norm is one more reduction per layer)."""
    ckpt = open_model(name)
    cfg = PRESETS[name]
    per_layer = 4 if cfg.qk_norm else 3
    out = {}
    for b in ("simd", "torch"):
        gen, probe = run(ckpt, b, n=4, prompt=PROMPT[:4])
        out[b] = gen.generated_ids
        for st in probe.steps:
            assert st.barriers == per_layer * cfg.num_layers + 2
    assert out["simd"] == out["torch"]


@pytest.mark.parametrize("level", ["op", "token"])
def test_barriers_counted_from_executed_ops(tiny, level):
    _, probe = run(tiny, "simd", n=4, level=level)
    L = PRESETS["tiny"].num_layers
    for st in probe.steps:
        assert st.barriers == 3 * L + 2
        # the count is the executed ops whose kind is a barrier, not a formula
        names = {OPS[i].name for i in np.flatnonzero(st.op_counts) if BARRIER_MASK[i]}
        assert names == {"attn_norm", "attn_softmax", "mlp_norm", "final_norm", "sample"}
        assert st.op_counts[[i for i, o in enumerate(OPS) if o.name == "attn_norm"][0]] == L


def test_profile_none_records_no_ops(tiny):
    gen, probe = run(tiny, "simd", n=3, level="none")
    assert len(gen.generated_ids) == 3
    for st in probe.steps:
        assert st.wall_s > 0 and st.durs_ns is None and st.barriers is None


@pytest.mark.parametrize("backend", ["scalar", "simd", "torch"])
def test_op_times_add_up(tiny, backend):
    _, probe = run(tiny, backend, n=6)
    for st in probe.steps:
        assert st.op_seconds <= st.wall_s * (1 + 1e-9)
        assert st.op_seconds >= 0.9 * st.wall_s, (st.phase, st.token_index, st.op_seconds, st.wall_s)
        assert (st.durs_ns >= 0).all()
        # ops executed in the canonical order within each layer
        layer0 = [OPS[o].name for o, l in zip(st.ops, st.layers) if l == 0]
        assert layer0 == ["attn_norm", "qkv_proj", "rope", "attn_scores", "attn_softmax", "attn_mix",
                          "o_proj", "mlp_norm", "gate_up_proj", "silu_mul", "down_proj"]


def test_kv_cache_capacity_is_enforced(tiny):
    eng = engine_class("simd")(tiny)
    eng.reset(3)
    eng.prefill([1, 2, 3])
    from engines.errors import UserError

    with pytest.raises(UserError, match="KV cache full"):
        eng.decode(4)


def test_event_rows_have_exactly_the_csv_columns(tiny):
    from aios_cli.runner import RunOptions, profile_run
    from profilers.export import EVENT_COLUMNS

    rec = profile_run(tiny, "simd", PROMPT[:3], RunOptions(max_new_tokens=2, warmup=False))
    rows = list(rec.events())
    assert rows and all(tuple(r) == EVENT_COLUMNS for r in rows)


def test_preset_weights_are_seeded():
    a = open_model("tiny").weights.f32("model.layers.0.mlp.up_proj.weight")
    b = open_model("tiny").weights.f32("model.layers.0.mlp.up_proj.weight")
    np.testing.assert_array_equal(a, b)
    assert a.std() == pytest.approx(0.02, rel=0.02)
    c = open_model("tiny").weights.f32("model.layers.1.mlp.up_proj.weight")
    assert not np.array_equal(a, c)


# --- sampler ---------------------------------------------------------------------------

def test_sampler_greedy_and_seeded():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=1000)
    assert Sampler(SamplingParams(greedy=True))(logits) == int(np.argmax(logits))
    p = SamplingParams(greedy=False, temperature=0.8, top_k=50, top_p=0.9, seed=7)
    a = [Sampler(p)(logits) for _ in range(3)]
    s1, s2 = Sampler(p), Sampler(p)
    assert [s1(logits) for _ in range(20)] == [s2(logits) for _ in range(20)]
    assert len(set(a)) == 1  # a fresh sampler with the same seed draws the same first token
    assert Sampler(SamplingParams(greedy=False, temperature=1.0, top_k=1))(logits) == int(np.argmax(logits))


def test_sampler_distribution_matches_float64_reference():
    logits = np.log(np.array([0.5, 0.25, 0.15, 0.07, 0.03]))
    n = 20000
    s = Sampler(SamplingParams(greedy=False, temperature=1.0, top_p=0.8, seed=3))
    counts = np.bincount([s(logits) for _ in range(n)], minlength=5) / n
    # top-p 0.8 keeps {0.5, 0.25, 0.15} (smallest prefix with mass >= 0.8), renormalised
    want = np.array([0.5, 0.25, 0.15, 0, 0]) / 0.9
    np.testing.assert_allclose(counts, want, atol=0.015)
    s = Sampler(SamplingParams(greedy=False, temperature=2.0, top_k=2, seed=3))
    counts = np.bincount([s(logits) for _ in range(n)], minlength=5) / n
    w = np.exp(logits[:2] / 2.0)
    np.testing.assert_allclose(counts[:2], w / w.sum(), atol=0.015)
    assert counts[2:].sum() == 0
