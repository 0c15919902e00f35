"""Paths of the torch engine that the default `aios run -b torch` does not take: bf16 numbers
against HF run in bf16, the fused attention reported as a composite op, and the CUDA branch of
`memory()` with torch's allocator figures faked. On the CPU, so CI runs them."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from engines import engine_class
from engines.model.sources import open_model
from engines.ops import OP_INDEX, OPS
from profilers.harness import RunOptions, profile_run
from profilers.probe import Probe

from .conftest import generate
from .test_parity import PROMPT, hf_logits
from .test_probe import assert_laps_tile_the_pass


@pytest.mark.parametrize("name", ["qwen2.5-layout-gqa7-hd64", "qwen3-qknorm-gqa2-hd128"])
def test_bf16_matches_hf_in_bf16(hf_model_dirs, name):
    """Both sides round to bf16 (8 bits of mantissa, ~4e-3 relative per op) in a different
    order of operations; the logits agree to a few percent of their scale, and the greedy
    choice agrees at almost every position."""
    path, model = hf_model_dirs[name]
    eng = engine_class("torch")(open_model(str(path)), dtype="bfloat16")
    eng.reset(len(PROMPT))
    ours = eng.prefill(PROMPT, all_logits=True)
    ref = hf_logits(copy.deepcopy(model), PROMPT, torch.bfloat16)  # a copy: bf16 and back is lossy
    scale = np.abs(ref).max()
    assert np.abs(ours - ref).max() < 0.05 * scale
    assert (ours.argmax(-1) == ref.argmax(-1)).mean() >= 0.9
    # and bf16 is not fp32: the comparison can tell them apart
    assert np.abs(ours - hf_logits(model, PROMPT)).max() > 1e-4 * scale


@pytest.mark.parametrize("name", ["qwen2.5-layout-gqa7-hd64", "qwen3-qknorm-gqa2-hd128"])
def test_fused_attention_matches_hf_and_reports_a_composite(hf_model_dirs, name):
    path, model = hf_model_dirs[name]
    ckpt = open_model(str(path))
    eng = engine_class("torch")(ckpt, fused_attention=True)
    eng.reset(len(PROMPT))
    np.testing.assert_allclose(eng.prefill(PROMPT, all_logits=True), hf_logits(model, PROMPT), atol=1e-4, rtol=1e-4)
    probe = Probe("op")
    gen = generate(eng, PROMPT, 4, probe)
    plain = generate(engine_class("torch")(ckpt), PROMPT, 4)
    assert gen.generated_ids == plain.generated_ids
    cfg = ckpt.config
    per_layer = 4 if cfg.qk_norm else 3
    for st in probe.steps:
        names = {OPS[o].name for o in st.ops}
        assert "attention" in names and not names & {"attn_scores", "attn_softmax", "attn_mix"}
        # the fused attention still waits on one softmax per layer
        assert st.barriers == per_layer * cfg.num_layers + 2
        assert st.op_counts[OP_INDEX["attention"]] == cfg.num_layers
        assert_laps_tile_the_pass(st)


def test_fused_attention_rows_in_the_record(tiny, monkeypatch):
    """The composite is one more row of the per-op table, of kind `fused`, and the tables still
    add up to the tokens' wall time."""
    import engines.torch.engine as te

    real = te.TorchCpuEngine.__init__
    monkeypatch.setattr(te.TorchCpuEngine, "__init__",
                        lambda self, ckpt, dtype=None, progress=None: real(self, ckpt, dtype, progress, True))
    rec = profile_run(tiny, "torch", PROMPT[:4], RunOptions(max_new_tokens=4, warmup=False))
    ops = {o["op"]: o for o in rec.op_table()}
    assert ops["attention"]["kind"] == "fused" and ops["attention"]["calls_per_token"] == tiny.config.num_layers
    assert "attn_softmax" not in ops
    assert rec.summary()["reduction_barriers_per_token"] == 3 * tiny.config.num_layers + 2
    dec = rec.decode_steps
    assert sum(o["decode_s_per_token"] for o in ops.values()) == pytest.approx(sum(s.wall_s for s in dec) / len(dec))
    layers = rec.layer_table("decode")
    assert layers.sum() == pytest.approx(sum(s.wall_s for s in dec) / len(dec))


def test_cuda_memory_branch(tiny, monkeypatch):
    eng = engine_class("torch")(tiny)
    assert eng.memory() == {}
    eng.tdev = torch.device("cuda")  # as the cuda engine holds it; nothing below touches a GPU
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d=None: 3 << 30)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d=None: 4 << 30)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d=None: 5 << 30)
    assert eng.memory() == {"torch_allocated_bytes": 3 << 30, "torch_reserved_bytes": 4 << 30,
                            "torch_peak_bytes": 5 << 30}
