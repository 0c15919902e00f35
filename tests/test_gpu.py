"""The cuda engine on a real NVIDIA GPU. Skipped where there is none (CI has none); run these
on a GPU machine: `python -m pytest tests/test_gpu.py`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engines import cuda_status, engine_class
from engines.model.sources import open_model
from profilers.probe import make_probe

from .conftest import HF_CONFIGS, generate
from .test_parity import PROMPT, hf_logits

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not cuda_status()[0], reason="no usable NVIDIA GPU")]


@pytest.mark.parametrize("name", list(HF_CONFIGS))
def test_cuda_fp32_matches_hf(hf_model_dirs, name):
    path, model = hf_model_dirs[name]
    eng = engine_class("cuda")(open_model(str(path)), dtype="float32")
    eng.reset(len(PROMPT))
    ours = eng.prefill(PROMPT, all_logits=True)
    # TF32 matmuls may be on: 1e-3 instead of the CPU engines' 1e-4
    np.testing.assert_allclose(ours, hf_logits(model, PROMPT), atol=1e-3, rtol=1e-3)


def test_cuda_bf16_close_to_fp32_and_profiled_with_events():
    ckpt = open_model("tiny")
    ref = engine_class("torch")(ckpt)
    ref.reset(len(PROMPT))
    want = ref.prefill(PROMPT, all_logits=True)
    eng = engine_class("cuda")(ckpt)
    assert eng.dtype == "bfloat16"
    eng.reset(len(PROMPT))
    got = eng.prefill(PROMPT, all_logits=True)
    # bf16 keeps 8 bits of mantissa: relative error ~4e-3 per op
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()
    probe = make_probe("op", "cuda")
    gen = generate(eng, PROMPT, 8, probe)
    assert len(gen.generated_ids) == 8
    for st in probe.steps:
        assert st.barriers == 3 * ckpt.config.num_layers + 2
        assert (st.durs_ns >= 0).all() and st.op_seconds <= st.wall_s * 1.01
    assert eng.memory()["torch_peak_bytes"] > 0
