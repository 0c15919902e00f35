"""Helpers the benchmark scripts share (imported as `_bench_common` from this folder)."""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_WARMUP_SNIPPET = (
    "import sys, time; sys.path.insert(0, {root!r}); t = time.perf_counter(); "
    "import {module} as sk; imp = time.perf_counter() - t; "
    "w = sk.warmup(); print(f'{{imp:.3f}} {{w:.3f}}')"
)


def load_avg() -> str:
    try:
        return "load avg %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "load avg n/a"


def parser(doc: str, what: str, target_s: float, max_reps: int, warm_calls: int):
    """The options every kernel benchmark takes (each adds its own)."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, skip cold-JIT subprocess")
    ap.add_argument("--rounds", type=int, default=5, help=f"interleaved rounds per {what}")
    ap.add_argument("--target-s", type=float, default=target_s, help="seconds of work per impl and round")
    ap.add_argument("--min-reps", type=int, default=5)
    ap.add_argument("--max-reps", type=int, default=max_reps)
    ap.add_argument("--copy-reps", type=int, default=15)
    ap.add_argument("--settle", type=float, default=0.25,
                    help="idle seconds before each implementation's block of calls")
    ap.add_argument("--warm-calls", type=int, default=warm_calls, help="untimed calls after --settle")
    ap.add_argument("--no-cold-jit", action="store_true", help="skip the cold-vs-cached JIT subprocesses")
    ap.add_argument("--no-torch", action="store_true")
    return ap


def start(name: str, args, module: str, quick_target_s: float):
    """The common start of a kernel benchmark: `--quick` settings, the header, the JIT report.
    Returns the kernels module, warmed up."""
    if args.quick:
        args.rounds, args.target_s, args.copy_reps, args.no_cold_jit = 3, quick_target_s, 5, True
        args.settle = 0.15
    print_header(name)
    # JIT time, reported separately from the kernel timings
    return report_jit(module, cold=not args.no_cold_jit)


def print_header(name: str) -> None:
    """What every kernel benchmark says first: versions, cores, threads, load."""
    import numba
    import numpy as np

    print(f"aios {name}  python {sys.version.split()[0]}  numpy {np.__version__}  "
          f"numba {numba.__version__}  cpus {os.cpu_count()}  numba threads {numba.get_num_threads()}")
    print(load_avg())
    print()


def report_jit(module: str, cold: bool) -> object:
    """Print the JIT time of `module`'s kernels, apart from any kernel timing: cold and cached
    in fresh subprocesses (when `cold`), then warmed up in this process. Returns the module."""
    import importlib
    import time

    import numba

    if cold:
        imp_c, w_c, imp_w, w_w = jit_cold_vs_cached(module)
        print(f"JIT warmup of {module} (fresh NUMBA_CACHE_DIR, subprocess): cold {w_c:6.2f} s   "
              f"cached {w_w:5.2f} s   (module import {imp_c:.2f} s / {imp_w:.2f} s)")
    t0 = time.perf_counter()
    sk = importlib.import_module(module)
    t_imp = time.perf_counter() - t0
    t_w = sk.warmup()
    hits = sum(sum(k.stats.cache_hits.values()) for k in sk._PUBLIC.values())
    misses = sum(sum(k.stats.cache_misses.values()) for k in sk._PUBLIC.values())
    how = "loaded from cache" if hits and not misses else ("compiled" if misses else "?")
    print(f"JIT warmup in this process: {t_w:.2f} s ({how}; import {t_imp:.2f} s, "
          f"numba threading layer {numba.threading_layer()})")
    return sk


def jit_cold_vs_cached(module: str = "engines.simd.kernels") -> tuple[float, float, float, float]:
    """(import s, warmup s) of `module`'s kernels with an empty Numba cache, then again with it
    populated."""
    with tempfile.TemporaryDirectory(prefix="aios-numba-cache-") as d:
        env = dict(os.environ, NUMBA_CACHE_DIR=d)
        code = _WARMUP_SNIPPET.format(root=str(ROOT), module=module)
        res = []
        for _ in range(2):
            out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                 capture_output=True, text=True).stdout.split()
            res += [float(out[0]), float(out[1])]
    return res[0], res[1], res[2], res[3]


def spread(xs: list[float], spec: str = ".2f") -> str:
    """The median of `xs`, then their range in brackets."""
    return f"{statistics.median(xs):{spec}} ({min(xs):{spec}}–{max(xs):{spec}})"


def require_tmux(script: str) -> None:
    """The TUI benchmarks draw in a real terminal: a tmux pane."""
    if shutil.which("tmux") is None:
        raise SystemExit(f"{script} needs tmux for a real terminal (apt install tmux)")


def tmux_stats(cmd: str, stats, wait_s: float, size: tuple[int, int] = (120, 40)) -> dict:
    """Run `cmd` (a shell command line that writes JSON to `stats` on exit) in a real terminal:
    a detached tmux pane of `size`, on its own server; wait up to `wait_s` for it to end and
    return the JSON. Raises SystemExit with the pane's text if no stats were written."""
    import json
    import time
    import uuid

    sock = f"aios-bench-{uuid.uuid4().hex[:8]}"
    tm = ["tmux", "-L", sock]
    subprocess.run(tm + ["new-session", "-d", "-s", "b", "-x", str(size[0]), "-y", str(size[1]), "-c", str(ROOT),
                         f"env -u COLUMNS -u LINES TERM=xterm-256color {cmd}; echo AIOS-EXITED $?; sleep 600"], check=True)
    try:
        t0 = time.monotonic()
        pane = ""
        while time.monotonic() - t0 < wait_s:
            pane = subprocess.run(tm + ["capture-pane", "-p", "-t", "b"], capture_output=True, text=True).stdout
            if "AIOS-EXITED" in pane:
                break
            time.sleep(0.5)
        if not Path(stats).exists():
            raise SystemExit(f"{cmd.split()[0]} wrote no stats; the pane shows:\n{pane}")
        return json.loads(Path(stats).read_text())
    finally:
        subprocess.run(tm + ["kill-server"], capture_output=True)


class Table:
    """A table printed as its rows come: the header and a rule at once, then a line a row, flushed
    (a long run shows its progress). Each column is (title, format spec): the spec's alignment and
    width place the title and every cell, so they are written once; its precision and type
    (">9.2f", ">15.2%") format a cell that is a number, and a string cell is placed as it is."""

    def __init__(self, *columns: tuple[str, str], sep: str = " "):
        self.specs = [spec for _, spec in columns]
        self.sep = sep
        head = sep.join(f"{title:{_placement(spec)}}" for title, spec in columns)
        print(head)
        print("-" * len(head))

    def row(self, *cells) -> None:
        print(self.sep.join(f"{c:{_placement(spec) if isinstance(c, str) else spec}}"
                            for c, spec in zip(cells, self.specs, strict=True)), flush=True)


def _placement(spec: str) -> str:
    """The alignment and width of a format spec (">9.2f" -> ">9")."""
    return re.match(r"[<>^]?[0-9]*", spec).group()


def write_jsonl(path: Path | None, rows: list[dict]) -> None:
    """One JSON object a row, to `path` (nothing when no path was asked for)."""
    if path is not None:
        import json

        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
