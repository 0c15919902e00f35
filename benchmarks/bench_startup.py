"""How long `aios --help` (and `aios run --help`) take, as a new process each time. Prints.

    python benchmarks/bench_startup.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from importlib.metadata import version

from _bench_common import load_avg


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    exe = shutil.which("aios")
    base = [exe] if exe else [sys.executable, "-m", "aios_cli.main"]
    print(f"typer {version('typer')}, rich {version('rich')}, cpus {os.cpu_count()}, {load_avg()} (before)")
    for argv in (["--help"], ["run", "--help"]):
        subprocess.run(base + argv, capture_output=True, check=True)  # warm the OS file cache
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            subprocess.run(base + argv, capture_output=True, check=True)
            times.append(time.perf_counter() - t)
        print(f"aios {' '.join(argv):<12} median {statistics.median(times) * 1e3:6.0f} ms  "
              f"(min {min(times) * 1e3:.0f}, max {max(times) * 1e3:.0f}, {args.repeat} runs)")
    print(f"{load_avg()} (after)")
    heavy = subprocess.run([sys.executable, "-c", "import sys, aios_cli.main; "
                            "print(sorted(m for m in ('torch', 'numba', 'textual', 'transformers') if m in sys.modules))"],
                           capture_output=True, text=True, check=True).stdout.strip()
    print(f"heavy modules imported by the CLI's entry point: {heavy}")


if __name__ == "__main__":
    main()
