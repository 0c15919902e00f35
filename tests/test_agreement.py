"""The engines against each other on the presets: the float32 engines against the float64
scalar engine as the reference, greedy ids equal, and the KV cache's capacity kept."""

from __future__ import annotations

import numpy as np
import pytest

from engines import engine_class
from engines.model.sources import open_model
from engines.model.config import PRESETS
from profilers.probe import Probe

from .conftest import generate

PROMPT = [9707, 11, 1879, 0, 576, 3974, 13876, 38835]  # any in-vocab ids


def test_engines_agree_on_tiny(tiny):
    ids = {b: generate(engine_class(b)(tiny), PROMPT, 16).generated_ids for b in ("scalar", "simd", "torch")}
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


def test_decode_logits_agree_on_tiny_at_every_step(tiny):
    """Decode logits, not just ids, at several steps: a numeric bug that leaves the argmax alone
    (an eps outside the sqrt, q_norm after RoPE, a wrong attention scale) still moves them."""
    engines = {b: engine_class(b)(tiny) for b in ("scalar", "simd", "torch")}
    for eng in engines.values():
        eng.reset(len(PROMPT) + 6)
        eng.prefill(PROMPT)
    token = 17
    for _ in range(6):
        out = {b: np.asarray(e.to_host(e.decode(token)), np.float64).copy() for b, e in engines.items()}
        for b in ("simd", "torch"):
            np.testing.assert_allclose(out[b], out["scalar"], atol=1e-4, rtol=1e-4, err_msg=b)
        token = int(np.argmax(out["scalar"]))


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
        probe = Probe("op")
        out[b] = generate(engine_class(b)(ckpt), PROMPT[:4], 4, probe).generated_ids
        for st in probe.steps:
            assert st.barriers == per_layer * cfg.num_layers + 2
    assert out["simd"] == out["torch"]


def test_kv_cache_capacity_is_enforced(tiny):
    eng = engine_class("simd")(tiny)
    eng.reset(3)
    eng.prefill([1, 2, 3])
    from engines.errors import UserError

    with pytest.raises(UserError, match="KV cache full"):
        eng.decode(4)
