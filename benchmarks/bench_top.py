"""What watching costs: engine decode tokens/s under the `aios top` TUI against headless
`aios run` with the same settings, and the TUI's refresh rate. Prints; never asserts.

    python benchmarks/bench_top.py                               # qwen2.5-0.5b on simd, 3 rounds
    python benchmarks/bench_top.py --model tiny --backend torch --seconds 10 --rounds 5

Method: rounds alternate a headless run and a TUI run (so drift in machine speed hits both).
- headless: `aios run --ignore-eos -n N --format json --quiet` in a subprocess, --headless
  times per round; the median of their decode_tokens_per_s (decode tokens / sum of their
  wall times).
- TUI: `aios top -n N --exit-after S --stats FILE` in a real terminal (a tmux pane of
  120x40), generating N-token generations back to back for S seconds; the same ratio over
  every decode token of the session, written by the app on exit, with the UI refresh rate
  (screen updates per second, sampled every tick while generating) and how often the data
  panels were redrawn (they are only when a token arrived since the last tick).
Both use the same model, backend, prompt, profile level and N, so each decode token sees the
same KV-cache lengths. Targets (the issue's): TUI >= 90% of headless, refresh >= 4 Hz.
Run it on an idle machine: any other CPU load skews both sides.
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


def headless(args) -> float:
    cmd = AIOS + ["run", "-m", args.model, "-b", args.backend, "-n", str(args.tokens), "--ignore-eos",
                  "--profile", args.profile, "--format", "json", "--quiet"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return json.loads(out)["decode_tokens_per_s"]


def tui(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="aios-bench-top-") as d:
        stats = Path(d) / "stats.json"
        cmd = " ".join(AIOS + ["top", "-m", args.model, "-b", args.backend, "-n", str(args.tokens),
                               "--profile", args.profile, "--exit-after", str(args.seconds), "--stats", str(stats)])
        return tmux_stats(cmd, stats, args.seconds + 600, (120, 40))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-0.5b")
    ap.add_argument("--backend", default="simd")
    ap.add_argument("--tokens", type=int, default=64, help="tokens per generation")
    ap.add_argument("--seconds", type=float, default=30.0, help="seconds of generating per TUI run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", default="op")
    ap.add_argument("--headless", type=int, default=3, help="headless runs per round (their median counts)")
    args = ap.parse_args()
    require_tmux("bench_top")
    print(f"aios top vs headless aios run: {args.model} on {args.backend}, {args.tokens} tokens per generation, "
          f"--profile {args.profile}, {args.rounds} rounds ({load_avg()})", flush=True)
    base, under, hz_med, hz_min, data_hz, toks = [], [], [], [], [], []
    for r in range(args.rounds):
        base.append(statistics.median(headless(args) for _ in range(args.headless)))
        s = tui(args)
        under.append(s["decode_tokens_per_s"])
        hz_med.append(s["ui_hz_median"])
        hz_min.append(s["ui_hz_min"])
        data_hz.append(s.get("data_redraw_hz_median") or 0.0)
        toks.append(s["decode_tokens"])
        print(f"  round {r + 1}: headless {base[-1]:.2f} tok/s · TUI {under[-1]:.2f} tok/s over {toks[-1]} decode "
              f"tokens · UI {hz_med[-1]:.1f} Hz median, {hz_min[-1]:.1f} Hz min, panels redrawn at "
              f"{data_hz[-1]:.1f} Hz", flush=True)
    ratio = [u / b for u, b in zip(under, base)]
    print(f"headless aios run   decode tok/s  median (min–max): {spread(base)}")
    print(f"under aios top      decode tok/s  median (min–max): {spread(under)}")
    print(f"TUI / headless      per round     median (min–max): {spread([100 * x for x in ratio], '.1f')} %"
          f"   (target >= 90%)")
    print(f"UI refresh while generating, Hz   median of rounds: {statistics.median(hz_med):.1f}, "
          f"lowest sample {min(hz_min):.1f}   (target >= 4 Hz)")
    print(f"data panels redrawn (only when a token arrived since the last tick), Hz: {statistics.median(data_hz):.1f}")
    print(f"({load_avg()})")


if __name__ == "__main__":
    main()
