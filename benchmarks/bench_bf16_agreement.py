"""How often the cuda engine's bf16 greedy ids agree with its own fp32 ones (issue 9: "report the
share of greedy ids that agree with fp32 over 256 tokens"). Prints; never asserts.

    python benchmarks/bench_bf16_agreement.py                                   # cuda, qwen2.5-0.5b and qwen3-0.6b
    python benchmarks/bench_bf16_agreement.py --backend torch --models tiny     # a dry run on the CPU

Two measures, each over --new-tokens ids after a --prompt-len-id prompt:
- free-running: bf16 generates on its own; the share of positions where its id equals fp32's,
  and where the two first part. After a first difference the two texts differ, so the share
  mostly says how long they stay together.
- teacher-forced: bf16 reads fp32's own sequence in one prefill; the share of positions where
  bf16's most likely next id is fp32's. Each position is judged on the same context, so this
  is the per-token agreement.
The presets' weights are random: their logits are nearly flat, the top two ids are close, and
bf16's rounding swaps them more often than it would on a trained model's peaked logits. So on
presets these shares are a lower bound for real checkpoints, which `--models DIR` also takes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _bench_common import Table, load_avg  # noqa: E402

import numpy as np  # noqa: E402

from engines import engine_class  # noqa: E402
from engines.model.sources import open_model  # noqa: E402
from engines.generate import Generation  # noqa: E402
from engines.sampling import SamplingParams  # noqa: E402


def greedy(eng, prompt: list[int], n: int) -> list[int]:
    gen = Generation(eng, prompt, n, eng.make_sampler(SamplingParams(greedy=True)))
    while not gen.done:
        gen.step()
    return gen.generated_ids


def next_ids(eng, seq: list[int], prompt_len: int) -> np.ndarray:
    """The argmax after each prefix of `seq` from the prompt's end on, in one prefill."""
    eng.reset(len(seq))
    logits = np.asarray(eng.prefill(seq, all_logits=True), dtype=np.float32)
    return logits[prompt_len - 1:-1].argmax(axis=-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="qwen2.5-0.5b,qwen3-0.6b", help="comma list: presets or checkpoint paths")
    ap.add_argument("--backend", default="cuda", choices=("cuda", "torch"))
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=256)
    args = ap.parse_args()
    import torch

    print(f"{args.backend} engine, torch {torch.__version__}, "
          f"{torch.cuda.get_device_name(0) if args.backend == 'cuda' else 'cpu'}, {load_avg()}")
    print(f"{args.prompt_len}-id prompt, {args.new_tokens} greedy ids, bf16 against fp32 on the same engine\n")
    table = Table(("model", "<14"), ("free-running same", ">18.1%"), ("first differs at", ">17"),
                  ("teacher-forced same", ">20.1%"), ("fp32 self-check", ">16.1%"))
    cls = engine_class(args.backend)
    for m in args.models.split(","):
        ckpt = open_model(m)
        rng = np.random.default_rng(0)
        prompt = rng.integers(10, ckpt.config.vocab_size - 10, args.prompt_len).tolist()
        eng = cls(ckpt, dtype="float32")
        ref = greedy(eng, prompt, args.new_tokens)
        seq = prompt + ref
        # fp32's one prefill against its own token-by-token decode: how much of a difference the
        # prefill path alone makes (TF32 matmuls, another kernel order), the floor for bf16's line
        self_same = float(np.mean(next_ids(eng, seq, args.prompt_len) == np.array(ref)))
        del eng
        if args.backend == "cuda":
            torch.cuda.empty_cache()
        eng = cls(ckpt, dtype="bfloat16")
        got = greedy(eng, prompt, args.new_tokens)
        forced = float(np.mean(next_ids(eng, seq, args.prompt_len) == np.array(ref)))
        del eng
        same = np.array(got) == np.array(ref)
        first = int(np.argmin(same)) if not same.all() else None
        table.row(m, same.mean(), "never" if first is None else f"id {first}", forced, self_same)
    print("\nfp32 self-check: fp32's one-prefill argmax against its own token-by-token ids, 100% unless the "
          "two paths round differently (TF32 matmuls on a GPU, another kernel order).")


if __name__ == "__main__":
    main()
