"""Tensor and pipeline parallelism on this machine's gloo: the time per decode token of each
layout, run in turns (one rank, then each split layout, again), with each rank's split into
compute and communication, and whether every layout generated one rank's ids. Prints; never
asserts (tests/test_dist.py checks exactness; timing belongs here).

    python benchmarks/bench_parallel.py                                   # tiny-gqa: 1x1, TP=2, PP=2, TP=2xPP=2
    python benchmarks/bench_parallel.py --model smollm2 --layouts 1x1,3x1,1x2 -n 8 --rounds 1

Every rank runs one thread (so a rank's compute is comparable with one rank on one thread);
more ranks than cores oversubscribe the machine, which the figures then show.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _bench_common import load_avg  # noqa: E402

from engines.sampling import SamplingParams  # noqa: E402
from profilers.dist_run import DistJob, spawn_run  # noqa: E402
from profilers.harness import RunOptions  # noqa: E402
from profilers.ranks import rank_row  # noqa: E402
from profilers.sim.validate import measured_token_s  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-gqa")
    ap.add_argument("--layouts", default="1x1,2x1,1x2,2x2", help="TPxPP, comma-separated")
    ap.add_argument("-n", "--new-tokens", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompt-ids", default="100,101,102,103,104,105,106,107")
    args = ap.parse_args()
    layouts = [tuple(int(x) for x in s.split("x")) for s in args.layouts.split(",")]
    ids = [int(x) for x in args.prompt_ids.split(",")]
    opts = RunOptions(max_new_tokens=args.new_tokens, sampling=SamplingParams(), ignore_eos=True)
    print(f"bench_parallel · {args.model} · {args.new_tokens} tokens · {args.rounds} rounds · 1 thread a rank · "
          f"gloo over loopback · load {load_avg()}")
    got: dict[tuple, list] = {lay: [] for lay in layouts}
    for r in range(args.rounds):
        for tp, pp in layouts:
            job = DistJob(model=args.model, backend="torch", prompt_ids=ids, opts=opts, tp=tp, pp=pp, timeout_s=600)
            got[(tp, pp)].append(spawn_run(job, threads=1))
            print(f"  round {r + 1}: TP={tp} x PP={pp}: {measured_token_s(got[(tp, pp)][-1]) * 1e3:.2f} ms/token",
                  flush=True)
    ref = got[layouts[0]][0][0].generated_ids
    print(f"\n{'layout':<10} {'ms/token (median, min-max)':>28} {'same ids':>9}  per rank: compute + comm ms/token")
    for lay in layouts:
        walls = [measured_token_s(recs) * 1e3 for recs in got[lay]]
        same = all(rec.generated_ids == ref for recs in got[lay] for rec in recs)
        last = [rank_row(rec) for rec in got[lay][-1]]
        per = "  ".join(f"r{x['rank']} {x['compute_s_per_token'] * 1e3:.1f}+{x['comm_s_per_token'] * 1e3:.1f}"
                        for x in last)
        print(f"TP={lay[0]}xPP={lay[1]:<3} {statistics.median(walls):>10.2f} ({min(walls):.2f}-{max(walls):.2f})"
              f"{'':>6} {str(same):>9}  {per}")
    print(f"\nload after: {load_avg()}")


if __name__ == "__main__":
    main()
