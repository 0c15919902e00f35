"""The torch engine's oneDNN-packed float32 weights (`engines.torch.dnnl`) against float64."""

from __future__ import annotations

import pytest
import torch

from engines.torch import dnnl as torch_dnnl

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.skipif(not torch_dnnl.available(torch.device("cpu"), torch.float32),
                                 reason="this torch build has no oneDNN linear ops")]


@pytest.mark.parametrize("M,O,I", [(1, 40, 24), (7, 130, 96), (64, 257, 33)])
def test_packed_linear_is_the_product(M, O, I):
    g = torch.Generator().manual_seed(M * O + I)
    w, x, b = torch.randn(O, I, generator=g), torch.randn(M, I, generator=g), torch.randn(O, generator=g)
    p = torch_dnnl.PackedLinear(w)
    ref = x.double() @ w.double().T + b.double()
    bound = 4 * I * 2.0 ** -24 * ((x.double().abs() @ w.double().abs().T) + b.double().abs()) + 1e-30
    assert ((p(x, b).double() - ref).abs() <= bound).all()
    assert ((p(x[None], None)[0].double() - (ref - b.double())).abs() <= bound).all()  # leading dims kept
    assert p.nbytes == w.numel() * 4 and p.isfinite()
    w[0, 0] = float("nan")
    assert not torch_dnnl.PackedLinear(w).isfinite()


def test_the_engine_packs_on_cpu_float32_only(tiny, monkeypatch):
    from engines import engine_class

    eng = engine_class("torch")(tiny)
    assert isinstance(eng.layers[0].gate_up, torch_dnnl.PackedLinear)
    # tiny ties its lm_head to the embedding: the head is a packed copy, and counted as one
    assert isinstance(eng.lm_head, torch_dnnl.PackedLinear) and isinstance(eng.embed, torch.Tensor)
    V, H = tiny.config.vocab_size, tiny.config.hidden_size
    bf = engine_class("torch")(tiny, dtype="bfloat16")
    assert not isinstance(bf.layers[0].gate_up, torch_dnnl.PackedLinear) and bf.lm_head is bf.embed
    assert eng.resident_weight_bytes - 2 * bf.resident_weight_bytes == pytest.approx(V * H * 4, rel=0.01)
    monkeypatch.setenv("AIOS_TORCH_PACK", "0")
    plain = engine_class("torch")(tiny)
    assert isinstance(plain.layers[0].gate_up, torch.Tensor) and plain.lm_head is plain.embed
