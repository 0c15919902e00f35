"""What watching the serving view costs: output tok/s of the batched engine under
`aios top --serve` against headless `aios bench throughput` on the same workloads, and the
TUI's refresh rate. Prints; never asserts.

    python benchmarks/bench_top_serve.py                      # qwen2.5-0.5b on torch, 3 rounds
    python benchmarks/bench_top_serve.py --model tiny --seconds 20

Method: rounds alternate the two (so drift in machine speed hits both).
- TUI: `aios top --serve -N n ... --exit-after S --stats FILE` in a real terminal (a tmux pane of
  140x45). The session serves workload after workload, round k being the workload of seed k;
  the stats file gives each complete round's output tok/s (output tokens over first arrival to
  last token, `aios bench throughput`'s definition) and the UI refresh rate.
- headless: `aios bench throughput` with the same options and `--seed k`, for each round k the
  TUI completed, in a subprocess each.
The ratio is taken per workload (seed), then its median over everything. Targets (the batch-1
view's): TUI >= 90% of headless, refresh >= 4 Hz. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import ROOT, load_avg, require_tmux, spread, tmux_stats  # noqa: E402

AIOS = [sys.executable, "-m", "aios_cli.main"]


def workload(args) -> list[str]:
    return ["-m", args.model, "-b", "torch", "-N", str(args.num_requests), "--input-len", args.input_len,
            "--output-len", args.output_len, "--profile", args.profile]


def headless(args, seed: int) -> float:
    cmd = AIOS + ["bench", "throughput", *workload(args), "--seed", str(seed), "-f", "json", "-q"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]["output_tokens_per_s"]


def tui(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="aios-bench-top-serve-") as d:
        stats = Path(d) / "stats.json"
        cmd = " ".join(AIOS + ["top", "--serve", *workload(args), "--exit-after", str(args.seconds),
                               "--stats", str(stats)])
        return tmux_stats(cmd, stats, args.seconds + 600, (140, 45))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-0.5b")
    ap.add_argument("--num-requests", type=int, default=16)
    ap.add_argument("--input-len", default="16:64")
    ap.add_argument("--output-len", default="32:64")
    ap.add_argument("--seconds", type=float, default=75.0, help="seconds of serving per TUI run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", default="op")
    args = ap.parse_args()
    require_tmux("bench_top_serve")
    print(f"aios top --serve vs headless aios bench throughput: {args.model} on torch, {args.num_requests} requests "
          f"a workload, input {args.input_len}, output {args.output_len}, all at once, --profile {args.profile}, "
          f"{args.rounds} rounds ({load_avg()})", flush=True)
    ratios, base_all, under_all, hz_med, hz_min = [], [], [], [], []
    for r in range(args.rounds):
        s = tui(args)
        under = {w["round"] - 1: w["output_tokens_per_s"] for w in s["rounds"]}
        if not under:
            raise SystemExit(f"no workload finished in {args.seconds} s under the TUI — pass a longer --seconds")
        base = {k: headless(args, k) for k in under}
        for k in under:
            ratios.append(under[k] / base[k])
            base_all.append(base[k])
            under_all.append(under[k])
        hz_med.append(s["ui_hz_median"])
        hz_min.append(s["ui_hz_min"])
        print(f"  round {r + 1}: " + "; ".join(f"seed {k}: TUI {under[k]:.2f} vs headless {base[k]:.2f} tok/s"
                                            for k in under)
              + f" · UI {hz_med[-1]:.1f} Hz median, {hz_min[-1]:.1f} Hz min", flush=True)
    print(f"headless bench throughput  output tok/s  median (min–max): {spread(base_all)}")
    print(f"under aios top --serve     output tok/s  median (min–max): {spread(under_all)}")
    print(f"TUI / headless, per workload             median (min–max): {spread([100 * x for x in ratios], '.1f')} %"
          f"   (target >= 90%, {len(ratios)} workloads)")
    print(f"UI refresh while serving, Hz  median of rounds: {statistics.median(hz_med):.1f}, "
          f"lowest sample {min(hz_min):.1f}   (target >= 4 Hz)")
    print(f"({load_avg()})")


if __name__ == "__main__":
    main()
