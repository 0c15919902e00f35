"""aios beside HF transformers' `generate` on aios's presets, interleaved in one process: the
baseline issue 9's table compares `aios run -b cuda` with. Prints a table and, with --jsonl, one
JSON object a row; never asserts.

    python benchmarks/bench_hf_generate.py                                  # on a GPU: the four presets, bf16
    python benchmarks/bench_hf_generate.py --models qwen2.5-0.5b --compile  # also static cache + torch.compile
    python benchmarks/bench_hf_generate.py --device cpu --aios torch --models tiny --dtype float32   # no GPU

Method:
- The contenders, all resident at once for one model: HF's own class for the preset's config
  (Qwen2ForCausalLM, Qwen3ForCausalLM, LlamaForCausalLM) with its weights initialised on the
  device in --dtype; with --compile the same with `cache_implementation="static"` and
  `torch.compile(mode="reduce-overhead")` on the forward, as transformers' docs give it; and
  the aios engine --aios (cuda on a GPU) on the preset. Weights are random on both sides: a
  forward pass costs the same whatever they hold.
- The work: a --prompt-len-id prompt, greedy, --new-tokens tokens, every run full length
  (`min_new_tokens` for HF; aios stops only at the limit here).
- Warm-up: one full run of each, untimed; its time is reported (for --compile it is the
  compile). Then --repeat rounds, the contenders' order rotating each round: for each, a
  1-token run (TTFT) and a full one; decode tok/s = (new tokens - 1) / (full - TTFT). Medians
  over the rounds, min-max beside.
- Peak memory (GPU): the weights (allocated while building the contender) plus the most any
  of its runs allocated above what was resident when it started.
- GB/s: the weight bytes one decode token must read (every layer, the final norm, the lm_head
  and one embedding row, at --dtype's width) times tok/s; the share is against `aios compare
  peak`'s measured copy bandwidth when it is cached for this machine.
- A contender that fails to build or run is a row that says why.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _bench_common import Table, load_avg, write_jsonl  # noqa: E402

from engines.model.config import PRESETS, ModelConfig  # noqa: E402

DEFAULT_MODELS = "qwen2.5-0.5b,qwen2.5-1.5b,qwen2.5-7b,qwen3-0.6b"


def hf_model(cfg: ModelConfig, device: str, dtype):
    import torch
    import transformers as tf

    classes = {"qwen2": ("Qwen2Config", "Qwen2ForCausalLM"), "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
               "llama": ("LlamaConfig", "LlamaForCausalLM")}
    cfg_name, model_name = classes[cfg.arch]
    kw = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
              num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
              num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim, rope_theta=cfg.rope_theta,
              rms_norm_eps=cfg.rms_norm_eps, tie_word_embeddings=cfg.tie_word_embeddings,
              max_position_embeddings=cfg.max_position_embeddings)
    if cfg.arch == "llama":
        kw.update(attention_bias=False, mlp_bias=False)
    hf_cfg = getattr(tf, cfg_name)(**kw)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in --dtype on the device: no float32 copy on the way
    try:
        with torch.device(device):
            model = getattr(tf, model_name)(hf_cfg)
    finally:
        torch.set_default_dtype(default)
    return model.eval()


def decode_bytes(cfg: ModelConfig, elem: int) -> int:
    """Weight bytes one decode token reads: every layer, the final norm, the lm_head (the
    embedding when tied) and one embedding row."""
    return elem * (cfg.num_layers * cfg.layer_params() + cfg.hidden_size + cfg.vocab_size * cfg.hidden_size
                   + cfg.hidden_size)


def copy_peak(device: str) -> tuple[float | None, str]:
    try:
        from profilers import peaks

        p = peaks.load_cached()
    except Exception:  # noqa: BLE001 - no cache, or one from another version: no share then
        p = None
    if p is None:
        return None, "no cached `aios compare peak` here"
    bw = p.gpu_bandwidth if device.startswith("cuda") else p.cpu_bandwidth
    if bw is None:
        return None, "the cached `aios compare peak` has no GPU figures: run it with --refresh on this machine"
    return bw.median, f"{bw.median / 1e9:.0f} GB/s, {bw.how}, measured {p.measured_at}"


class Contender:
    """One way to generate: `run(n)` produces n tokens after the prompt and returns seconds."""

    def __init__(self, name: str, run, weights_bytes: int | None, device: str):
        self.name, self._run, self.weights_bytes, self.device = name, run, weights_bytes, device
        self.ttfts: list[float] = []
        self.rates: list[float] = []
        self.extra_peak = 0
        self.warm_s = None

    def timed(self, n: int) -> float:
        import torch

        cuda = self.device.startswith("cuda")
        if cuda:
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        self._run(n)
        if cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
        if cuda:
            self.extra_peak = max(self.extra_peak, torch.cuda.max_memory_allocated() - base)
        return dt


def _allocated(device: str) -> int:
    import torch

    return torch.cuda.memory_allocated() if device.startswith("cuda") else 0


def hf_contender(cfg: ModelConfig, variant: str, ids, device: str, dtype) -> Contender:
    import torch

    before = _allocated(device)
    model = hf_model(cfg, device, dtype)
    if variant == "static+compile":
        model.generation_config.cache_implementation = "static"
        # transformers would also compile the forward itself for a static cache: one compile, ours
        model.generation_config.disable_compile = True
        model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)
    weights = _allocated(device) - before
    prompt = torch.tensor([ids], device=device)

    def run(n: int) -> None:
        with torch.inference_mode():
            out = model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
        assert out.shape[1] == len(ids) + n, out.shape

    return Contender(f"HF {variant}", run, weights if device.startswith("cuda") else None, device)


def aios_contender(preset: str, backend: str, ids, device: str, dtype_name: str) -> Contender:
    from engines import engine_class
    from engines.model.sources import open_model
    from engines.generate import Generation
    from engines.sampling import SamplingParams

    before = _allocated(device)
    eng = engine_class(backend)(open_model(preset), dtype=dtype_name)
    eng.warmup()
    weights = _allocated(device) - before
    greedy = SamplingParams(greedy=True)

    def run(n: int) -> None:
        gen = Generation(eng, ids, n, eng.make_sampler(greedy))
        while not gen.done:
            gen.step()
        assert len(gen.generated_ids) == n

    return Contender(f"aios {backend}", run, weights if device.startswith("cuda") else None, device)


def interleaved(contenders: list[Contender], n: int, repeat: int) -> None:
    for c in contenders:
        t = time.perf_counter()
        c.timed(n)
        c.timed(1)
        c.warm_s = time.perf_counter() - t
    for r in range(repeat):
        for c in contenders[r % len(contenders):] + contenders[:r % len(contenders)]:
            first, full = c.timed(1), c.timed(n)
            c.ttfts.append(first)
            c.rates.append((n - 1) / max(full - first, 1e-9))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=DEFAULT_MODELS, help=f"comma list of presets (default {DEFAULT_MODELS})")
    ap.add_argument("--device", default=None, help="cuda (default with a GPU) or cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also static cache + torch.compile (minutes per model)")
    ap.add_argument("--aios", default=None, help="the aios backend beside HF: cuda (default on a GPU), torch, or none")
    ap.add_argument("--jsonl", type=Path, default=None, help="also write one JSON object a row here")
    args = ap.parse_args()

    import torch
    import transformers

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype)
    elem = torch.finfo(dtype).bits // 8
    peak_bw, peak_how = copy_peak(device)
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    print(f"HF transformers {transformers.__version__}, torch {torch.__version__}, device {name}, "
          f"{torch.get_num_threads()} torch threads, {load_avg()}")
    print(f"copy peak: {peak_how}")
    print(f"{args.prompt_len}-id prompt, {args.new_tokens} new tokens, greedy, {args.dtype}, "
          f"median of {args.repeat} interleaved rounds after a warm-up\n")
    aios_backend = args.aios or ("cuda" if device.startswith("cuda") else "none")
    table = Table(("model", "<14"), ("contender", "<20"), ("decode tok/s", ">24"), ("TTFT ms", ">9.2f"),
                  ("peak mem", ">10"), ("GB/s", ">8.1f"), ("of peak", ">8"), ("warm-up s", ">10.1f"))
    rows = []
    for m in args.models.split(","):
        if m not in PRESETS:
            sys.exit(f"bench_hf_generate: unknown preset {m!r} — choose from {', '.join(PRESETS)}")
        cfg = PRESETS[m]
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(10, cfg.vocab_size - 10, (args.prompt_len,), generator=g).tolist()
        builders = [("HF eager", lambda: hf_contender(cfg, "eager", ids, device, dtype))]
        if args.compile:
            builders.append(("HF static+compile", lambda: hf_contender(cfg, "static+compile", ids, device, dtype)))
        if aios_backend != "none":
            builders.append((f"aios {aios_backend}", lambda: aios_contender(m, aios_backend, ids, device, args.dtype)))
        contenders, failed = [], []
        for label, build in builders:
            try:
                contenders.append(build())
            except Exception as e:  # noqa: BLE001 - a contender that does not build here is a row that says so
                failed.append((label, e))
        try:
            interleaved(contenders, args.new_tokens, args.repeat)
        except Exception as e:  # noqa: BLE001 - one that fails while running: every row of the model says so
            failed += [(c.name, e) for c in contenders]
            contenders = []
        meta = dict(model=m, dtype=args.dtype, device=name, transformers=transformers.__version__,
                    torch=torch.__version__, load_avg=os.getloadavg()[0], prompt_len=args.prompt_len,
                    new_tokens=args.new_tokens, repeat=args.repeat)
        for label, e in failed:
            why = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
            rows.append({"contender": label, "error": why, **meta})
            print(f"{m:<14} {label:<20} failed: {why}", flush=True)
        for c in contenders:
            rate = statistics.median(c.rates)
            gbs = decode_bytes(cfg, elem) * rate
            peak = c.weights_bytes + c.extra_peak if c.weights_bytes is not None else None
            r = {"contender": c.name, "decode_tok_s": rate, "decode_min": min(c.rates), "decode_max": max(c.rates),
                 "ttft_ms": statistics.median(c.ttfts) * 1e3, "peak_bytes": peak, "warm_s": c.warm_s,
                 "achieved_bytes_per_s": gbs, "share_of_peak": gbs / peak_bw if peak_bw else None, **meta}
            rows.append(r)
            spread = f"{rate:.1f} ({r['decode_min']:.1f}-{r['decode_max']:.1f})"
            mem = f"{peak / 2**30:.2f} GiB" if peak else "n/a"
            share = f"{r['share_of_peak']:.0%}" if r["share_of_peak"] is not None else "n/a"
            table.row(m, c.name, spread, r["ttft_ms"], mem, gbs / 1e9, share, c.warm_s)
        contenders = None
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    write_jsonl(args.jsonl, rows)
    print("\nGB/s = the weight bytes a decode token reads (aios's cost model, at the dtype's width) x tok/s: "
          "what the weights alone need, an estimate of the traffic, not a counter reading.")


if __name__ == "__main__":
    main()
