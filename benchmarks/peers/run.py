"""aios beside its peers on one workload and one model, interleaved. Prints a table (and, with
--json FILE, the figures); never asserts. Nothing downloads anything.

    python benchmarks/peers/run.py                                 # batched throughput vs vLLM CPU
    python benchmarks/peers/run.py --model-dir /tmp/qwen05 --reps 3 -N 64

So far: **batched throughput**, aios's batched engine (torch, fp32, in this process) against
vLLM's CPU engine (offline `LLM.generate`, in its own venv, `vllm_offline.py --stdin` in a
subprocess), on the same HF-format directory, the same prompt ids and output lengths (aios's
seed-0 workload: --num-requests, --input-len, --output-len), greedy, EOS ignored, the same
--max-num-seqs and --max-num-batched-tokens. Both load and warm up once, apart from the timed
part (vLLM's load and warm-up times are printed: its compile); then --reps rounds, the order
alternating each round, each side timed over its whole workload. Medians with min-max.

The model: --model-dir, or a random-weight Qwen2.5-0.5B-shaped fp32 model written once to
--cache (HF transformers' Qwen2ForCausalLM, saved with safetensors; transformers is the test
extra). vLLM: --vllm-python (default $AIOS_VLLM_PYTHON, else /work/peers/vllm/bin/python); a
missing peer is skipped with one line saying how to install it (benchmarks/README.md).
Threads: --threads for aios; vLLM gets VLLM_CPU_OMP_THREADS_BIND=0-(threads-1),
VLLM_CPU_NUM_OF_RESERVED_CPU=0, OMP_NUM_THREADS=threads.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _bench_common import ROOT, load_avg  # noqa: E402

sys.path.insert(0, str(ROOT))


def model_dir(a) -> Path:
    if a.model_dir:
        return Path(a.model_dir)
    d = Path(a.cache) / "qwen2.5-0.5b-random-fp32"
    if (d / "model.safetensors").is_file():
        return d
    import torch

    from bench_hf_generate import hf_model
    from engines.model.config import PRESETS

    print(f"writing a random-weight Qwen2.5-0.5B-shaped fp32 model to {d} (once)", flush=True)
    torch.manual_seed(0)
    m = hf_model(PRESETS["qwen2.5-0.5b"], "cpu", torch.float32)
    m.config.max_position_embeddings = 4096
    m.save_pretrained(str(d), safe_serialization=True)
    return d


class VllmPeer:
    """vLLM's offline engine in its venv, loaded once; `run()` times the workload once."""

    def __init__(self, python: str, model: Path, work_file: Path, threads: int):
        env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": f"0-{threads - 1}", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
               "OMP_NUM_THREADS": str(threads)}
        self.p = subprocess.Popen([python, str(HERE / "vllm_offline.py"), str(model), str(work_file), "--stdin"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                  env=env)
        self.ready = self._reply()

    def _reply(self) -> dict:
        for line in self.p.stdout:
            line = line.strip()
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    continue
        raise RuntimeError(f"vLLM exited ({self.p.wait()}) before answering")

    def run(self) -> dict:
        self.p.stdin.write("run\n")
        self.p.stdin.flush()
        return self._reply()

    def close(self) -> None:
        self.p.stdin.close()
        try:
            self.p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.p.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "aios-peers"))
    ap.add_argument("--num-requests", "-N", type=int, default=64)
    ap.add_argument("--input-len", default="16:64")
    ap.add_argument("--output-len", default="64:128")
    ap.add_argument("--max-num-seqs", type=int, default=64)
    ap.add_argument("--max-num-batched-tokens", type=int, default=512)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vllm-python", default=os.environ.get("AIOS_VLLM_PYTHON", "/work/peers/vllm/bin/python"))
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args()

    from engines.batch.engine import BatchEngine
    from engines.model.sources import open_model
    from profilers import throughput as T
    from profilers.harness import build_engine
    from profilers.threads import setup

    plan = setup(a.threads)
    d = model_dir(a)
    ckpt = open_model(str(d))
    work = T.synthetic(a.num_requests, T.parse_range(a.input_len, "--input-len"),
                       T.parse_range(a.output_len, "--output-len"), float("inf"), ckpt.config.vocab_size, 0)
    print(f"aios peers · {d.name} · {a.num_requests} requests, input {a.input_len}, output {a.output_len}, "
          f"greedy, EOS ignored · max {a.max_num_seqs} seqs, {a.max_num_batched_tokens} tokens a step · "
          f"threads {plan.threads} · cpus {os.cpu_count()} · {load_avg()}", flush=True)
    work_file = Path(a.cache) / "work.json"
    work_file.parent.mkdir(parents=True, exist_ok=True)
    work_file.write_text(json.dumps({"prompts": [w.prompt_ids for w in work],
                                     "output_lens": [w.max_new_tokens for w in work],
                                     "max_num_seqs": a.max_num_seqs,
                                     "max_num_batched_tokens": a.max_num_batched_tokens, "kv_cache_gib": 2}))
    engine, _ = build_engine(ckpt, "torch", None)
    be = BatchEngine(engine, num_blocks=T.default_kv_blocks(work, 16), block_size=16, max_num_seqs=a.max_num_seqs,
                     max_num_batched_tokens=a.max_num_batched_tokens)
    T.warm_up(be)
    peers = {}
    if Path(a.vllm_python).is_file():
        print("loading vLLM (its own venv; load and compile are not timed) ...", flush=True)
        v = VllmPeer(a.vllm_python, d, work_file, plan.threads)
        print(f"vLLM: load {v.ready['load_s']:.1f} s, warm-up {v.ready['warmup_s']:.1f} s", flush=True)
        peers["vllm-cpu"] = v
    else:
        print(f"vLLM CPU: skipped, no python at {a.vllm_python} — see benchmarks/README.md to install it in its own "
              "venv (or pass --vllm-python)")
    rows = {"aios torch": [], **{k: [] for k in peers}}
    try:
        for r in range(a.reps):
            order = ["aios torch", *peers]
            if r % 2:
                order.reverse()
            for who in order:
                if who == "aios torch":
                    s = T.run_batched(be, work, None, realtime=False).summary()
                    tps = s["output_tokens_per_s"]
                else:
                    tps = peers[who].run()["output_tokens_per_s"]
                rows[who].append(tps)
                print(f"  round {r + 1}: {who:10s} {tps:7.1f} output tok/s", flush=True)
    finally:
        for p in peers.values():
            p.close()
    med = {k: statistics.median(v) for k, v in rows.items() if v}
    print(f"\nbatched throughput, output tok/s (median of {a.reps}, min-max) · {load_avg()}")
    for k, v in rows.items():
        ratio = f"   aios/{k} {med['aios torch'] / med[k]:.2f}x" if k != "aios torch" else ""
        print(f"  {k:12s} {med[k]:7.1f}  ({min(v):.1f}-{max(v):.1f}){ratio}")
    if a.json:
        Path(a.json).write_text(json.dumps({"throughput": rows, "threads": plan.threads, "model": str(d)}, indent=2))


if __name__ == "__main__":
    main()
