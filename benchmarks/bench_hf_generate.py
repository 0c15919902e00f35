"""HF transformers' `generate` on aios's presets: the baseline `aios run -b cuda` is compared with
(issue 9's table). Prints a table and, with --jsonl, one JSON object a row; never asserts.

    python benchmarks/bench_hf_generate.py                                  # on a GPU: the four presets, bf16
    python benchmarks/bench_hf_generate.py --models qwen2.5-0.5b --compile  # also static cache + torch.compile
    python benchmarks/bench_hf_generate.py --device cpu --models tiny --dtype float32   # a dry run, no GPU

Method:
- The model: the preset's config in HF's own class (Qwen2ForCausalLM, Qwen3ForCausalLM,
  LlamaForCausalLM), its weights initialised by HF on the device in --dtype. The values are
  random, as aios's presets are: a forward pass costs the same whatever they hold.
- The work: a --prompt-len-id prompt, greedy, --new-tokens tokens with `min_new_tokens` equal to
  them, so every run is full length whatever the weights predict.
- Warm-up: one full generate, untimed (with --compile, its time is reported as the compile
  time). Then --repeat rounds, each a 1-token generate (TTFT) and a full one: decode tok/s =
  (new tokens - 1) / (full - TTFT). Medians over the rounds, min-max beside.
- Peak memory: torch.cuda.max_memory_allocated over the timed rounds.
- GB/s: the weight bytes one decode token must read (every layer, the final norm, the lm_head
  and one embedding row, at --dtype's width) times tok/s; the share is against `aios compare
  peak`'s measured copy bandwidth when it is cached for this machine.
- Variants: `eager` (HF's default dynamic cache) and, with --compile, `static+compile`
  (`cache_implementation="static"` and `torch.compile(mode="reduce-overhead")` on the forward,
  as transformers' docs give it). A variant that fails is a row that says why.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _bench_common import load_avg  # noqa: E402

from engines.config import PRESETS, ModelConfig  # noqa: E402

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


def run_variant(model, cfg: ModelConfig, variant: str, args, device: str) -> dict:
    import torch

    gen_kw = dict(do_sample=False, pad_token_id=0)
    compile_s = None
    if variant == "static+compile":
        model.generation_config.cache_implementation = "static"
        # transformers would also compile the forward itself for a static cache: one compile, ours
        model.generation_config.disable_compile = True
        model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, cfg.vocab_size - 10, (1, args.prompt_len), generator=g).to(device)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def generate(n: int) -> float:
        sync()
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, **gen_kw)
        sync()
        assert out.shape[1] == args.prompt_len + n, out.shape
        return time.perf_counter() - t

    t = time.perf_counter()
    generate(args.new_tokens)
    generate(1)
    warm_s = time.perf_counter() - t
    if variant == "static+compile":
        compile_s = warm_s
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    ttfts, rates = [], []
    for _ in range(args.repeat):
        first = generate(1)
        full = generate(args.new_tokens)
        ttfts.append(first)
        rates.append((args.new_tokens - 1) / max(full - first, 1e-9))
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
    return {"variant": variant, "decode_tok_s": statistics.median(rates), "decode_min": min(rates),
            "decode_max": max(rates), "ttft_ms": statistics.median(ttfts) * 1e3, "peak_bytes": peak,
            "compile_s": compile_s, "warm_s": warm_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=DEFAULT_MODELS, help=f"comma list of presets (default {DEFAULT_MODELS})")
    ap.add_argument("--device", default=None, help="cuda (default with a GPU) or cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also static cache + torch.compile (minutes per model)")
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
          f"median of {args.repeat} after a warm-up\n")
    head = (f"{'model':<14} {'variant':<15} {'decode tok/s':>24} {'TTFT ms':>9} {'peak mem':>10} "
            f"{'GB/s':>8} {'of peak':>8} {'compile s':>10}")
    print(head)
    print("-" * len(head))
    rows = []
    for m in args.models.split(","):
        if m not in PRESETS:
            sys.exit(f"bench_hf_generate: unknown preset {m!r} — choose from {', '.join(PRESETS)}")
        cfg = PRESETS[m]
        for variant in ("eager", "static+compile") if args.compile else ("eager",):
            try:
                model = hf_model(cfg, device, dtype)
                r = run_variant(model, cfg, variant, args, device)
            except Exception as e:  # noqa: BLE001 - a variant that does not run here is a row that says so
                r = {"variant": variant, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"}
            finally:
                model = None
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
            r.update(model=m, dtype=args.dtype, device=name, transformers=transformers.__version__,
                     torch=torch.__version__, load_avg=os.getloadavg()[0])
            rows.append(r)
            if "error" in r:
                print(f"{m:<14} {variant:<15} failed: {r['error']}", flush=True)
                continue
            gbs = decode_bytes(cfg, elem) * r["decode_tok_s"]
            r["achieved_bytes_per_s"] = gbs
            r["share_of_peak"] = gbs / peak_bw if peak_bw else None
            spread = f"{r['decode_tok_s']:.1f} ({r['decode_min']:.1f}-{r['decode_max']:.1f})"
            mem = f"{r['peak_bytes'] / 2**30:.2f} GiB" if r["peak_bytes"] else "n/a"
            share = f"{r['share_of_peak']:.0%}" if r["share_of_peak"] is not None else "n/a"
            comp = f"{r['compile_s']:.1f}" if r["compile_s"] is not None else ""
            print(f"{m:<14} {variant:<15} {spread:>24} {r['ttft_ms']:>9.2f} {mem:>10} {gbs / 1e9:>8.1f} "
                  f"{share:>8} {comp:>10}", flush=True)
    if args.jsonl is not None:
        args.jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print("\nGB/s = the weight bytes a decode token reads (aios's cost model, at the dtype's width) x tok/s: "
          "what the weights alone need, an estimate of the traffic, not a counter reading.")


if __name__ == "__main__":
    main()
