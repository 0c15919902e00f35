"""vLLM's CPU engine, offline, on a workload given as JSON: run inside vLLM's own venv (its python),
never imported by aios. Prints one JSON object: the timed runs' output tok/s and the warm-up's time.

    VLLM_CPU_OMP_THREADS_BIND=0-1 VLLM_CPU_NUM_OF_RESERVED_CPU=0 OMP_NUM_THREADS=2 \
        /path/to/vllm-venv/bin/python vllm_offline.py MODEL_DIR WORK.json --reps 3
    ... vllm_offline.py MODEL_DIR WORK.json --stdin    # a run per "run" line read, a JSON line each

With --stdin (what benchmarks/peers/run.py uses to interleave), it loads and warms up once,
prints {"ready": ...}, then runs the workload each time a line "run" arrives, until EOF.

WORK.json: {"prompts": [[ids...], ...], "output_lens": [n, ...], "max_num_seqs": 64,
"max_num_batched_tokens": 512, "kv_cache_gib": 2}. Prompts go in as token ids (no tokenizer), every
request generates exactly its length (ignore_eos), greedy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("work")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--stdin", action="store_true", help="a run per line 'run' on stdin")
    a = ap.parse_args()
    w = json.load(open(a.work))
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(w.get("kv_cache_gib", 2)))
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    t = time.perf_counter()
    llm = LLM(model=a.model, dtype=a.dtype, skip_tokenizer_init=True, max_num_seqs=w["max_num_seqs"],
              max_num_batched_tokens=w["max_num_batched_tokens"], max_model_len=w.get("max_model_len", 4096),
              seed=0)
    load_s = time.perf_counter() - t
    prompts = [TokensPrompt(prompt_token_ids=p) for p in w["prompts"]]
    params = [SamplingParams(max_tokens=n, min_tokens=n, ignore_eos=True, temperature=0.0, detokenize=False)
              for n in w["output_lens"]]
    t = time.perf_counter()
    llm.generate(prompts[:2], params[:2], use_tqdm=False)  # warm-up (compile, first-touch), untimed
    warm_s = time.perf_counter() - t

    def run_once() -> dict:
        t = time.perf_counter()
        outs = llm.generate(prompts, params, use_tqdm=False)
        dt = time.perf_counter() - t
        n = sum(len(o.outputs[0].token_ids) for o in outs)
        return {"seconds": dt, "output_tokens": n, "output_tokens_per_s": n / dt,
                "total_tokens_per_s": (n + sum(map(len, w["prompts"]))) / dt}

    if a.stdin:
        print(json.dumps({"ready": True, "load_s": load_s, "warmup_s": warm_s}), flush=True)
        for line in sys.stdin:
            if line.strip() == "run":
                print(json.dumps(run_once()), flush=True)
        return
    runs = [run_once() for _ in range(a.reps)]
    print(json.dumps({"peer": "vllm-cpu", "load_s": load_s, "warmup_s": warm_s, "runs": runs}))

if __name__ == "__main__":
    main()
