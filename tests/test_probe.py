"""The profiler's probes: barriers counted from the ops each pass executed, the three levels,
and laps that tile a pass with no gaps. The CUDA-event probe's bookkeeping is checked on the
CPU with a fake event that stamps the host clock, so its arithmetic is tested where there is
no GPU."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from engines import engine_class
from engines.model.config import PRESETS
from engines.ops import BARRIER_MASK, OPS, noop_lap
from profilers.probe import CudaProbe, Probe, make_probe

from .conftest import generate

PROMPT = [9707, 11, 1879, 0, 576, 3974, 13876, 38835]
LAYER_OPS = ["attn_norm", "qkv_proj", "rope", "attn_scores", "attn_softmax", "attn_mix", "o_proj", "mlp_norm",
             "gate_up_proj", "silu_mul", "down_proj"]


def run(ckpt, backend, n=16, level="op"):
    probe = Probe(level)
    gen = generate(engine_class(backend)(ckpt), PROMPT, n, probe)
    return gen, probe


def assert_laps_tile_the_pass(st):
    """Each op starts where the previous one ended, from the start of the pass; the last ends
    before the pass does. Exact, whatever the machine's speed."""
    assert st.starts_ns[0] == 0
    np.testing.assert_array_equal(st.starts_ns[1:], st.starts_ns[:-1] + st.durs_ns[:-1])
    assert (st.durs_ns >= 0).all()
    assert st.starts_ns[-1] + st.durs_ns[-1] == st.durs_ns.sum() <= st.wall_s * 1e9


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
        assert_laps_tile_the_pass(st)
        # ops executed in the canonical order within each layer
        layer0 = [OPS[o].name for o, l in zip(st.ops, st.layers) if l == 0]
        assert layer0 == LAYER_OPS


class FakeEvent:
    def __init__(self, enable_timing=True):
        self.t = None

    def record(self, stream=None):
        self.t = time.perf_counter_ns()

    def elapsed_time(self, end):  # milliseconds, like torch.cuda.Event
        return (end.t - self.t) / 1e6


@pytest.fixture
def fake_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)


@pytest.mark.parametrize("level", ["op", "token"])
def test_cuda_probe_bookkeeping(fake_cuda, tiny, level):
    eng = engine_class("torch")(tiny)
    probe = make_probe(level, "cuda")
    assert isinstance(probe, CudaProbe)
    gen = generate(eng, [1, 2, 3, 4], 5, probe)
    assert len(probe.steps) == 5 and len(gen.generated_ids) == 5
    L = tiny.config.num_layers
    for st in probe.steps:
        assert st.barriers == 3 * L + 2
        if level == "token":
            assert st.durs_ns is None
            continue
        assert OPS[st.ops[-1]].name == "sample"  # sampling is a lap like any op, and the last
        assert st.op_seconds <= st.wall_s
        assert_laps_tile_the_pass(st)
        assert np.all(np.diff(st.starts_ns) >= 0)


def test_make_probe_picks_by_device():
    assert type(make_probe("op", "cpu")) is Probe
    assert isinstance(make_probe("token", "cuda"), CudaProbe)


def test_probe_none_is_a_plain_function():
    p = Probe("none")
    assert p.lap(0, 0) is None and p.lap is noop_lap
    with pytest.raises(ValueError):
        Probe("everything")
