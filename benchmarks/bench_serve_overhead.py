"""What HTTP costs: the same workload through `aios bench throughput` (the engine driven in
process) and through `aios bench serve` against `aios serve` (every request a streamed HTTP
completion on loopback), interleaved. Prints; never asserts.

    python benchmarks/bench_serve_overhead.py                          # qwen2.5-0.5b, 3 rounds
    python benchmarks/bench_serve_overhead.py --model tiny -N 64 --rounds 3

One `aios serve` process stays up for the whole run (loaded and warmed once); each round runs
`aios bench throughput` (its own process: load, warm-up, then the timed workload) and `aios bench
serve` with the same -N, lengths and --seed (seed + round: the server's prefix cache outlives a
round, and must not serve round 2 the prompts of round 1). Both report output tok/s over first arrival to
last token, so their ratio is the HTTP path's share: the server's event loop, the SSE
encoding, and the client, which here runs on the same cores as the engine. Run it on an idle
machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import ROOT, load_avg  # noqa: E402

AIOS = [sys.executable, "-m", "aios_cli.main"]


def work_args(a, r: int) -> list[str]:
    """Round r's workload: its own seed, so the server's prefix cache (which outlives a round)
    holds nothing of it, as a fresh in-process engine holds nothing."""
    return ["-N", str(a.num_requests), "--input-len", a.input_len, "--output-len", a.output_len,
            "--seed", str(a.seed + r)]


def start_server(a):
    from aios_cli.server.launch import ServerDidNotStart, start_serve

    try:
        return start_serve(["-m", a.model, "-b", "torch", "--port", "0", "-q", "--profile", a.profile,
                            "--max-num-seqs", str(a.max_num_seqs)], timeout_s=300, cwd=ROOT, stdout=subprocess.DEVNULL)
    except ServerDidNotStart as e:
        raise SystemExit(str(e)) from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-0.5b")
    ap.add_argument("-N", "--num-requests", type=int, default=32)
    ap.add_argument("--input-len", default="16:64")
    ap.add_argument("--output-len", default="32:64")
    ap.add_argument("--max-num-seqs", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", default="op")
    a = ap.parse_args()
    print(f"aios bench throughput vs aios bench serve → aios serve: {a.model} on torch, {a.num_requests} requests, "
          f"input {a.input_len}, output {a.output_len}, all at once, --profile {a.profile}, {a.rounds} rounds "
          f"({load_avg()})", flush=True)
    server, url = start_server(a)
    direct, http, keys = [], [], ("output_tokens_per_s", "ttft_ms_p50", "tpot_ms_p50", "itl_ms_p50")
    try:
        for r in range(a.rounds):
            out = subprocess.run(AIOS + ["bench", "throughput", "-m", a.model, "-b", "torch", *work_args(a, r),
                                         "--max-num-seqs", str(a.max_num_seqs), "--profile", a.profile, "-f", "json",
                                         "-q"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
            direct.append(json.loads(out)[0])
            out = subprocess.run(AIOS + ["bench", "serve", "--url", url, *work_args(a, r), "-f", "json", "-q"],
                                 cwd=ROOT, capture_output=True, text=True, check=True).stdout
            http.append(json.loads(out)[0])
            print(f"  round {r + 1}: " + " · ".join(f"{k} {direct[-1][k]:.1f} in process, {http[-1][k]:.1f} over HTTP"
                                                   for k in keys) + f" · failed {http[-1]['failed_requests']}",
                  flush=True)
    finally:
        server.terminate()
        server.wait(60)
    for k in keys:
        d = statistics.median(x[k] for x in direct)
        h = statistics.median(x[k] for x in http)
        print(f"{k:<22} median  in process {d:10.2f}   over HTTP {h:10.2f}   HTTP / in process {h / d:6.3f}")
    print(f"({load_avg()})")


if __name__ == "__main__":
    main()
