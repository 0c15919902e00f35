"""tests/gguf_fixture.py writes what llama.cpp's converter writes, and transformers reads it back.

transformers' GGUF loader is the independent oracle here: an F32 file must reload into exactly the
model it was written from (logits to 1e-5, every tensor bit for bit, the same config), a quantized
one into exactly gguf-py's dequantization of its bytes. The llama q/k permutation is checked both
against transformers' reversal and on its own terms (llama.cpp's interleaved RoPE over the file's
rows gives HF's rotate-half attention scores).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf", reason="the GGUF fixture needs the gguf package (llama.cpp's gguf-py)")
pytest.importorskip("transformers")
pytest.importorskip("accelerate", reason="transformers' from_pretrained(gguf_file=) needs accelerate")

from tests.gguf_fixture import (  # noqa: E402
    ARCHS,
    dequantized_state_dict,
    llama_permute,
    llama_unpermute,
    load_with_transformers,
    read_tensors,
    rope_theta,
    write_gguf,
)

@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """These models are tiny, so one thread is fastest; with two, OpenMP's workers wait on a core
    that may be busy, and a 4 ms forward pass was measured at 150-270 ms. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


IDS = torch.tensor([[1, 17, 200, 3, 99, 42, 5, 255, 0, 128]])  # inside the default vocab of 256
T = gguf.GGMLQuantizationType


def _logits(model, ids: torch.Tensor = IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def _effective_head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


CONFIG_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "max_position_embeddings", "tie_word_embeddings")


def _assert_same_config(got, want) -> None:
    for field in CONFIG_FIELDS:
        assert getattr(got, field) == getattr(want, field), field
    assert got.model_type == want.model_type
    assert _effective_head_dim(got) == _effective_head_dim(want)
    assert rope_theta(got) == rope_theta(want)  # 5e5, 1e6, 1e4: exact in float32
    # GGUF stores the epsilon as float32 (1e-5 -> 9.99999975e-06); the norm adds it to a float32
    # tensor, so the model computes with that very value either way.
    assert got.rms_norm_eps == pytest.approx(want.rms_norm_eps, rel=1e-7)


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("arch", ARCHS)
def test_f32_round_trip_is_exact(tmp_path, arch, tied):
    path, source = write_gguf(tmp_path, arch, tied=tied)
    reloaded = load_with_transformers(path)

    _assert_same_config(reloaded.config, source.config)
    want = source.state_dict()
    got = reloaded.state_dict()
    assert set(got) == set(want)
    for name in want:
        assert torch.equal(got[name], want[name]), name
    torch.testing.assert_close(_logits(reloaded), _logits(source), atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_metadata_and_tensor_table(tmp_path, arch):
    """The keys and tensor names llama.cpp expects, norms and biases F32, shapes in ggml order."""
    path, model = write_gguf(tmp_path, arch, "Q8_0")
    reader = gguf.GGUFReader(path)
    meta = {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}
    want = {
        "general.architecture": arch,
        "general.name": f"aios-test-{arch}",
        "general.file_type": int(gguf.LlamaFileType.MOSTLY_Q8_0),
        "general.quantization_version": gguf.GGML_QUANT_VERSION,
        f"{arch}.block_count": 2,
        f"{arch}.context_length": 256,
        f"{arch}.embedding_length": 64,
        f"{arch}.feed_forward_length": 128,
        f"{arch}.attention.head_count": 4,
        f"{arch}.attention.head_count_kv": 2,
        f"{arch}.attention.key_length": 16,
        f"{arch}.attention.value_length": 16,
        f"{arch}.rope.freq_base": rope_theta(model.config),
        f"{arch}.attention.layer_norm_rms_epsilon": pytest.approx(1e-5, rel=1e-7),
        f"{arch}.vocab_size": 256,
    }
    if arch == "llama":
        want["llama.rope.dimension_count"] = 16
    assert meta == want

    per_layer = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up",
                 "ffn_down"]
    per_layer += {"llama": [], "qwen2": ["attn_q.bias", "attn_k.bias", "attn_v.bias"],
                  "qwen3": ["attn_q_norm", "attn_k_norm"]}[arch]
    names = {"token_embd.weight", "output_norm.weight", "output.weight"}
    names |= {f"blk.{i}.{n}" + ("" if n.endswith(".bias") else ".weight") for i in range(2) for n in per_layer}
    tensors = {t.name: t for t in reader.tensors}
    assert set(tensors) == names

    for name, t in tensors.items():
        small = name.endswith(("_norm.weight", ".bias"))
        assert T(t.tensor_type) == (T.F32 if small else T.Q8_0), name
    # ggml's ne order: the fastest-moving dimension (the input features) first
    assert list(tensors["blk.0.ffn_up.weight"].shape) == [64, 128]
    assert list(tensors["blk.0.ffn_down.weight"].shape) == [128, 64]
    assert list(tensors["token_embd.weight"].shape) == [64, 256]


def test_tied_file_has_no_output_tensor(tmp_path):
    path, model = write_gguf(tmp_path, "qwen2", tied=True)
    assert "output.weight" not in read_tensors(path)
    assert model.lm_head.weight is model.model.embed_tokens.weight


@pytest.mark.parametrize("quant", ["F16", "Q8_0", "Q4_0", "Q4_1"])
@pytest.mark.parametrize("arch", ARCHS)
def test_quantized_reload_is_the_dequantized_bytes(tmp_path, arch, quant):
    """Every reloaded tensor is gguf-py's dequantization of the written bytes (llama q/k un-permuted),
    and the reloaded logits are, to 1e-5, those of the source model carrying those same weights."""
    path, source = write_gguf(tmp_path, arch, quant)
    tensors = read_tensors(path)
    for name, (data, qtype) in tensors.items():
        assert qtype == (T.F32 if data.ndim == 1 else T[quant]), name

    reloaded = load_with_transformers(path)
    want = dequantized_state_dict(path, source)
    got = reloaded.state_dict()
    assert set(got) == set(want)
    for name in want:
        assert torch.equal(got[name], want[name]), name

    twin = copy.deepcopy(source)
    twin.load_state_dict(want)
    torch.testing.assert_close(_logits(reloaded), _logits(twin), atol=1e-5, rtol=0)


# Seeded, so these hold or fail the same way every run. Measured over seeds 0-2 and the three archs:
# Q8_0 gives a relative logit error (Frobenius) of 0.017-0.023 and a max abs error of 0.06-0.11,
# on logits of magnitude ~3.5; F16 gives 0.0006-0.0008 and 0.003-0.004. The bounds allow ~2.5x that.
# (Q4_0/Q4_1 give ~0.3 on these Gaussian weights, too coarse to say anything; they are covered by the
# exact test above.)
LOGIT_BOUNDS = {"F16": (0.002, 0.01), "Q8_0": (0.05, 0.3)}


@pytest.mark.parametrize("quant", sorted(LOGIT_BOUNDS))
@pytest.mark.parametrize("arch", ARCHS)
def test_quantized_logits_close_to_source(tmp_path, arch, quant):
    path, source = write_gguf(tmp_path, arch, quant)
    want, got = _logits(source), _logits(load_with_transformers(path))
    rel_bound, abs_bound = LOGIT_BOUNDS[quant]
    assert ((got - want).norm() / want.norm()).item() < rel_bound
    assert (got - want).abs().max().item() < abs_bound
    assert not torch.equal(got, want)  # the file really is quantized


def test_llama_qk_permutation_is_applied(tmp_path):
    """The file's attn_q/attn_k rows (and biases) are in llama.cpp's order, not HF's; transformers
    undoes it. Biases on, so that their permutation and the bias stopgap of the loader are covered."""
    path, source = write_gguf(tmp_path, "llama", attention_bias=True, mlp_bias=True)
    tensors = read_tensors(path)
    reloaded = load_with_transformers(path)
    heads = {"q": source.config.num_attention_heads, "k": source.config.num_key_value_heads}
    for proj, n_head in heads.items():
        for kind in ("weight", "bias"):
            hf = getattr(source.model.layers[0].self_attn, f"{proj}_proj")
            hf_tensor = getattr(hf, kind).detach().numpy()
            raw = tensors[f"blk.0.attn_{proj}.{kind}"][0]
            assert not np.array_equal(raw, hf_tensor), (proj, kind)
            assert np.array_equal(raw, llama_permute(hf_tensor, n_head)), (proj, kind)
            assert np.array_equal(llama_unpermute(raw, n_head), hf_tensor), (proj, kind)
            back = getattr(getattr(reloaded.model.layers[0].self_attn, f"{proj}_proj"), kind)
            assert torch.equal(back, getattr(hf, kind)), (proj, kind)
    # v and o are never permuted
    for name, hf_name in (("attn_v", "v_proj"), ("attn_output", "o_proj")):
        hf = getattr(source.model.layers[0].self_attn, hf_name).weight.detach().numpy()
        assert np.array_equal(tensors[f"blk.0.{name}.weight"][0], hf), name
    assert "blk.0.ffn_up.bias" in tensors
    torch.testing.assert_close(_logits(reloaded), _logits(source), atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_qwen_q_k_are_not_permuted(tmp_path, arch):
    path, source = write_gguf(tmp_path, arch)
    tensors = read_tensors(path)
    attn = source.model.layers[1].self_attn
    assert np.array_equal(tensors["blk.1.attn_q.weight"][0], attn.q_proj.weight.detach().numpy())
    assert np.array_equal(tensors["blk.1.attn_k.weight"][0], attn.k_proj.weight.detach().numpy())


def _rope(x: torch.Tensor, theta: float, interleaved: bool) -> torch.Tensor:
    """RoPE over (seq, d) at positions 0..seq-1: HF's rotate-half pairs (i, i + d/2), llama.cpp's
    `llama` (normal) mode pairs (2i, 2i + 1); both rotate pair i by pos * theta^(-2i/d)."""
    seq, d = x.shape
    angle = torch.arange(seq, dtype=torch.float64)[:, None] * theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    cos, sin = angle.cos(), angle.sin()
    a, b = (x[:, 0::2], x[:, 1::2]) if interleaved else (x[:, : d // 2], x[:, d // 2:])
    ra, rb = a * cos - b * sin, b * cos + a * sin
    if interleaved:
        return torch.stack([ra, rb], dim=-1).reshape(seq, d)
    return torch.cat([ra, rb], dim=-1)


def test_llama_permutation_matches_llama_cpp_rope(tmp_path):
    """Independent of transformers: llama.cpp's interleaved RoPE over the file's permuted q/k rows
    gives the attention scores HF's rotate-half RoPE gives over the original rows. Without the
    permutation it does not, so this pins the formula, not just its agreement with the inverse."""
    path, source = write_gguf(tmp_path, "llama")
    cfg = source.config
    d = cfg.head_dim
    # Not the file's 5e5: a small theta turns every pair visibly within 8 positions, where 5e5 barely
    # moves the slow ones, so a wrong pairing could hide in them.
    theta = 100.0
    tensors = read_tensors(path)
    x = torch.randn(8, cfg.hidden_size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    attn = source.model.layers[0].self_attn
    wq_hf, wk_hf = attn.q_proj.weight.double(), attn.k_proj.weight.double()
    wq_file = torch.from_numpy(tensors["blk.0.attn_q.weight"][0]).double()
    wk_file = torch.from_numpy(tensors["blk.0.attn_k.weight"][0]).double()
    group = cfg.num_attention_heads // cfg.num_key_value_heads

    def scores(wq, wk, interleaved):
        q, k = (x @ wq.T).detach(), (x @ wk.T).detach()
        return torch.stack([
            _rope(q[:, h * d:(h + 1) * d], theta, interleaved)
            @ _rope(k[:, (h // group) * d:(h // group + 1) * d], theta, interleaved).T
            for h in range(cfg.num_attention_heads)
        ])

    want = scores(wq_hf, wk_hf, interleaved=False)
    torch.testing.assert_close(scores(wq_file, wk_file, interleaved=True), want, atol=1e-9, rtol=0)
    assert not torch.allclose(scores(wq_hf, wk_hf, interleaved=True), want, atol=1e-3)


def test_shape_overrides_round_trip(tmp_path):
    """Overrides reach the file and the reload, including head_dim != hidden / heads (q_dim 192 on a
    hidden of 96) for llama, through rope.dimension_count, and for qwen3, through key_length."""
    shape = dict(vocab_size=320, hidden_size=96, intermediate_size=160, num_hidden_layers=3,
                 num_attention_heads=6, num_key_value_heads=3, head_dim=32, rope_theta=10000.0, rms_norm_eps=1e-6)
    ids = torch.tensor([[0, 319, 7, 160, 33]])
    for arch in ("llama", "qwen3"):
        path, source = write_gguf(tmp_path, arch, name=f"{arch}.gguf", **shape)
        assert source.config.vocab_size == 320 and source.config.head_dim == 32
        reloaded = load_with_transformers(path)
        _assert_same_config(reloaded.config, source.config)
        torch.testing.assert_close(_logits(reloaded, ids), _logits(source, ids), atol=1e-5, rtol=0)


def test_rows_off_the_block_size_fall_back_to_f16(tmp_path):
    """As in convert_hf_to_gguf: a row that is not a whole number of 32-element blocks is written F16."""
    path, source = write_gguf(tmp_path, "qwen3", "Q8_0", intermediate_size=80)
    tensors = read_tensors(path)
    assert tensors["blk.0.ffn_down.weight"][1] == T.F16  # 80 input features
    assert tensors["blk.0.ffn_up.weight"][1] == T.Q8_0  # 64 input features
    reloaded = load_with_transformers(path)
    assert torch.equal(reloaded.state_dict()["model.layers.0.mlp.down_proj.weight"],
                       dequantized_state_dict(path, source)["model.layers.0.mlp.down_proj.weight"])


def test_seeded_and_deterministic(tmp_path):
    a, _ = write_gguf(tmp_path / "a", "qwen2", "Q4_1", seed=3)
    b, _ = write_gguf(tmp_path / "b", "qwen2", "Q4_1", seed=3)
    c, _ = write_gguf(tmp_path / "c", "qwen2", "Q4_1", seed=4)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_norms_and_biases_are_not_trivial(tmp_path):
    """Norms random around 1 and biases nonzero, so a reader that drops either shows in the logits."""
    _, model = write_gguf(tmp_path, "qwen2")
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            assert 0.5 < p.mean().item() < 1.5 and p.std().item() > 0.05, name
        if name.endswith(".bias"):
            assert p.abs().min().item() > 0 and p.std().item() > 0.05, name


@pytest.mark.parametrize(("args", "kwargs"), [
    (("mistral",), {}),
    (("qwen2", "Q5_K"), {}),
    (("qwen2",), {"head_dim": 32}),  # Qwen2 has no head_dim of its own: always hidden / heads
])
def test_rejects_what_it_cannot_write(tmp_path, args, kwargs):
    with pytest.raises(ValueError):
        write_gguf(tmp_path, *args, **kwargs)
