"""Every engine against HF transformers (the independent oracle), on random HF checkpoints.

Tolerances, and why:
  * fp32 engines (simd, torch) vs HF fp32: |a - b| <= 1e-4 + 1e-4 |b|. Both sides round in
    float32 (eps 6e-8) through ~20 sequential ops with dot products of length <= 896; the
    accumulated error is ~1e-6..1e-5 on logits of magnitude ~1. A real bug (a dropped bias or
    norm weight, a wrong RoPE pairing or GQA mapping) moves logits by 1e-2 or more.
  * scalar (float64) vs HF fp32: the same bound (the error is HF's float32 rounding);
    and scalar vs HF run in float64: 1e-5, 10x tighter. Not 1e-12: HF computes the RoPE
    angles in float32 even in a float64 model (`inv_freq.float() @ position_ids.float()`),
    an angle error of ~1e-7 x position that reaches the logits at up to ~1e-6.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engines import engine_class
from engines.model.sources import open_model
from profilers.probe import Probe

from .conftest import HF_CONFIGS, build_hf_model, generate

ENGINES = ("scalar", "simd", "torch")
PROMPT = [3, 17, 101, 250, 7, 42, 199, 5, 77, 300, 12]
ATOL = RTOL = 1e-4


def hf_logits(model, ids, dtype=torch.float32):
    with torch.no_grad():
        m = model.to(dtype)
        out = m(torch.tensor([ids])).logits[0].to(torch.float64).numpy()
        model.to(torch.float32)
    return out


def hf_greedy(model, ids, n):
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                             attention_mask=torch.ones(1, len(ids), dtype=torch.long), pad_token_id=0)
    return out[0, len(ids):].tolist()


@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize("name", list(HF_CONFIGS))
def test_prefill_logits_match_hf(hf_model_dirs, name, backend):
    path, model = hf_model_dirs[name]
    ckpt = open_model(str(path))
    eng = engine_class(backend)(ckpt)
    eng.reset(len(PROMPT) + 4)
    ours = np.asarray(eng.prefill(PROMPT, all_logits=True), dtype=np.float64)
    ref = hf_logits(model, PROMPT)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=ATOL, rtol=RTOL)
    # and each of four decode steps after the prefill matches HF's logits for the extended
    # sequence: a bug that leaves the greedy ids alone still moves these
    seq = list(PROMPT)
    for _ in range(4):
        nxt = int(np.argmax(ref[-1]))
        seq.append(nxt)
        dec = np.asarray(eng.to_host(eng.decode(nxt)), dtype=np.float64)
        ref = hf_logits(model, seq)
        np.testing.assert_allclose(dec, ref[-1], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("name", list(HF_CONFIGS))
def test_scalar_matches_hf_in_float64(hf_model_dirs, name):
    path, model = hf_model_dirs[name]
    eng = engine_class("scalar")(open_model(str(path)))
    eng.reset(len(PROMPT))
    ours = eng.prefill(PROMPT, all_logits=True)
    ref = hf_logits(model, PROMPT, torch.float64)
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(HF_CONFIGS))
def test_greedy_generation_matches_hf(hf_model_dirs, name):
    path, model = hf_model_dirs[name]
    n = 16
    want = hf_greedy(model, PROMPT, n)
    ckpt = open_model(str(path))
    for backend in ENGINES:
        eng = engine_class(backend)(ckpt)
        gen = generate(eng, PROMPT, n, Probe("op"))
        assert gen.generated_ids == want, backend


@pytest.mark.parametrize("dtype,shard", [(torch.bfloat16, None), (torch.float16, "200KB")])
def test_half_precision_and_sharded_checkpoints(tmp_path, dtype, shard):
    """bf16 / fp16 weights (fp16 also sharded with an index) load and match HF run on the
    same rounded weights in fp32."""
    model = build_hf_model(tmp_path, "qwen2-tied-gqa2-hd64", dtype=dtype, max_shard_size=shard)
    if shard:
        assert (tmp_path / "model.safetensors.index.json").is_file()
    ckpt = open_model(str(tmp_path))
    assert ckpt.weights.stored_dtype == {torch.bfloat16: "bfloat16", torch.float16: "float16"}[dtype]
    ref = hf_logits(model, PROMPT)
    for backend in ENGINES:
        eng = engine_class(backend)(ckpt)
        eng.reset(len(PROMPT))
        np.testing.assert_allclose(eng.prefill(PROMPT, all_logits=True), ref, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("name", list(HF_CONFIGS))
def test_aios_run_on_hf_directories(hf_model_dirs, name):
    """The same directories through the CLI: every engine, greedy, the ids HF generates."""
    import json

    from typer.testing import CliRunner

    from aios_cli.main import app

    path, model = hf_model_dirs[name]
    want = hf_greedy(model, PROMPT, 16)
    res = CliRunner().invoke(app, ["run", "-m", str(path), "-b", ",".join(ENGINES), "--prompt-ids",
                                   ",".join(map(str, PROMPT)), "-n", "16", "-f", "json", "-q"])
    assert res.exit_code == 0, res.output
    runs = json.loads(res.output)
    assert [r["backend"] for r in runs] == list(ENGINES)
    for r in runs:
        assert r["generated_token_ids"] == want, r["backend"]
        assert r["text"] is None  # no tokenizer.json in these directories: ids only
