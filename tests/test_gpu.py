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


def _nccl_rank(rank, world, post, layouts):
    """One GPU rank (tests/test_gpu.py spawns these): each layout's greedy ids and prompt logits."""
    from engines.dist.engine import ShardedEngine
    from engines.dist.group import build_mesh
    from engines.generate import Generation
    from engines.sampling import SamplingParams

    torch.cuda.set_device(rank)
    ckpt, out = open_model("tiny-gqa"), {}
    for tp, pp in layouts:
        mesh = build_mesh(range(tp * pp), tp, pp)
        if mesh is None:  # a layout on fewer ranks than the group has
            continue
        eng = ShardedEngine(ckpt, mesh, dtype="float32", device=f"cuda:{rank}")
        eng.reset(len(PROMPT) + 8)
        logits = eng.prefill(PROMPT, all_logits=True)
        ids = list(Generation(eng, PROMPT, 8, eng.make_sampler(SamplingParams())))
        out[(tp, pp)] = (ids, logits)
    return out


def test_sharded_engine_over_nccl_equals_one_gpu():
    """The NCCL path of `engines.dist`: as many ranks as GPUs (TP over 2 GPUs where there are 2,
    else a 1-rank group, which still runs every collective call through NCCL), fp32, against
    the cuda engine alone on the same GPU."""
    from engines.dist.launch import run_ranks

    gpus = torch.cuda.device_count()
    layouts = [(1, 1)] + ([(2, 1), (1, 2)] if gpus >= 2 else [])
    ckpt = open_model("tiny-gqa")
    ref = engine_class("cuda")(ckpt, dtype="float32")
    ref.reset(len(PROMPT) + 8)
    want = ref.prefill(PROMPT, all_logits=True)
    ref_ids = generate(ref, PROMPT, 8).generated_ids
    world = 2 if gpus >= 2 else 1
    results = run_ranks(_nccl_rank, world, (layouts,), backend="nccl", timeout_s=120, threads=1)
    for (tp, pp) in layouts:
        got = [r[(tp, pp)] for r in results if (tp, pp) in r]
        assert len(got) == tp * pp
        assert all(ids == ref_ids for ids, _ in got), (tp, pp)
        head = [lg for _, lg in got if lg is not None]
        assert len(head) == 1
        np.testing.assert_allclose(head[0], want, atol=1e-3, rtol=1e-3)
