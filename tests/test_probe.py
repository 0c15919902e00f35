"""The profiler's probes. The CUDA-event probe's bookkeeping is checked on the CPU with a fake
event that stamps the host clock, so its arithmetic is tested where there is no GPU."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from engines import engine_class
from engines.checkpoint import open_model
from engines.generate import generate
from engines.sampling import Sampler, SamplingParams
from profilers.ops import OPS
from profilers.probe import CudaProbe, Probe


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
def test_cuda_probe_bookkeeping(fake_cuda, level):
    ckpt = open_model("tiny")
    eng = engine_class("torch")(ckpt)
    probe = CudaProbe(level)
    gen = generate(eng, [1, 2, 3, 4], 5, Sampler(SamplingParams()), probe)
    assert len(probe.steps) == 5 and len(gen.generated_ids) == 5
    L = ckpt.config.num_layers
    for st in probe.steps:
        assert st.barriers == 3 * L + 2
        if level == "token":
            assert st.durs_ns is None
            continue
        assert (st.durs_ns >= 0).all() and (st.starts_ns >= 0).all()
        assert OPS[st.ops[-1]].name == "sample"  # the host-side lap comes last
        assert st.op_seconds <= st.wall_s
        assert st.op_seconds >= 0.9 * st.wall_s  # fake events tick on the host clock: nothing lost
        assert np.all(np.diff(st.starts_ns[:-1]) >= 0)


def test_probe_none_is_a_plain_function():
    p = Probe("none")
    assert p.lap(0, 0) is None and p.lap.__name__ == "_noop"
    with pytest.raises(ValueError):
        Probe("everything")
