"""Issue 15's GPU check: the DRAM bytes PyTorch's SDPA kernels really move, read by Nsight Compute,
against what `aios sim attention` predicts for the same shape on this GPU. Prints a table; never
asserts. Needs an NVIDIA GPU and `ncu` (Nsight Compute; on the lent H200 it reads counters on the
Firecracker runtime, not on gVisor: the device tool's KINDS.md).

    python3 benchmarks/gpu/attention_dram.py                         # N 1024..8192, d 64, 4 x 16 heads, bf16
    python3 benchmarks/gpu/attention_dram.py --n 2048,4096 --d 64,128 --jsonl out.jsonl

Method:
- One child process per (backend, N, d) runs under `ncu --profile-from-start off`: it draws
  random bf16 Q, K, V (never zeros), runs the SDPA call twice untimed, then once between
  cudaProfilerStart/Stop, so only that call's kernels are profiled. Backends: `math`
  (materialises S and P, the paper's standard attention) and `flash` (FlashAttention-2).
- ncu flushes the L2 before each kernel (its default --cache-control all) and reads
  `dram__bytes_read.sum` and `dram__bytes_write.sum` per kernel; the table sums them over the
  call's kernels. `--clock-control none` leaves the clocks as they are (the device's METHOD.md).
- The prediction: `profilers.sim.attention.simulate` for this GPU's spec (h200 or h100 by name,
  else --gpu), `standard` against math and `flash` against flash, with the paper's tiles.
- What the simulator leaves out, and the measurement sees: the L2 (60 MB on an H200) that
  keeps K and V tiles between thread blocks within one kernel; the math backend's own
  intermediates (it may upcast S to fp32 for the softmax) and the copy kernels around it; and
  FlashAttention-2's loop order, which keeps a Q block in SRAM and streams K and V past it
  (the simulator runs the paper's Algorithm 1, which streams Q and O past each K, V block).
  The ratio column says by how much they differ; it is the finding, not a pass or fail.
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _bench_common import Table, write_jsonl  # noqa: E402

METRICS = ("dram__bytes_read.sum", "dram__bytes_write.sum")
UNITS = {"byte": 1, "kbyte": 1e3, "mbyte": 1e6, "gbyte": 1e9, "kibyte": 1024, "mibyte": 2**20, "gibyte": 2**30}


def child(args) -> None:
    """The profiled process: one SDPA call inside the profiler window."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"math": SDPBackend.MATH, "flash": SDPBackend.FLASH_ATTENTION}[args.backend]
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(args.batch, args.heads, args.n, args.d, device="cuda", dtype=torch.bfloat16, generator=g)
               for _ in range(3))
    with sdpa_kernel([backend]), torch.inference_mode():
        for _ in range(2):
            out = F.scaled_dot_product_attention(q, k, v, is_causal=args.causal)
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStart()
        out = F.scaled_dot_product_attention(q, k, v, is_causal=args.causal)
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStop()
    assert torch.isfinite(out).all()


def parse_ncu_csv(text: str) -> tuple[dict[str, float], list[str]]:
    """Summed bytes per metric over every kernel row of ncu's --csv output, and the kernels."""
    lines = [ln for ln in text.splitlines() if ln.startswith('"')]  # ncu's own ==PROF== lines are not CSV
    totals = {m: 0.0 for m in METRICS}
    kernels = []
    for row in csv.DictReader(io.StringIO("\n".join(lines))):
        name, unit = row.get("Metric Name"), (row.get("Metric Unit") or "byte").strip().lower()
        if name not in totals:
            continue
        value = float(str(row["Metric Value"]).replace(",", ""))
        totals[name] += value * UNITS.get(unit, 1)
        if name == METRICS[0]:
            kernels.append(row.get("Kernel Name", "?"))
    return totals, kernels


def measure(args, backend: str, n: int, d: int) -> dict:
    cmd = [args.ncu, "--csv", "--print-units", "base", "--clock-control", "none", "--profile-from-start", "off",
           "--metrics", ",".join(METRICS), sys.executable, __file__, "--child", "--backend", backend,
           "--n", str(n), "--d", str(d), "--heads", str(args.heads), "--batch", str(args.batch)]
    if args.causal:
        cmd.append("--causal")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    totals, kernels = parse_ncu_csv(p.stdout)
    if p.returncode != 0 or not kernels:
        why = (p.stderr.strip().splitlines() or p.stdout.strip().splitlines() or ["no output"])[-1][:160]
        return {"error": f"ncu exit {p.returncode}: {why}"}
    return {"read": totals[METRICS[0]], "write": totals[METRICS[1]], "kernels": kernels}


def predict(algo: str, n: int, d: int, args, spec) -> tuple[int, int]:
    from profilers.sim.attention import Shape, simulate

    shape = Shape(n=n, nk=n, d=d, heads=args.heads, batch=args.batch, causal=args.causal)
    r = simulate(algo, shape, spec)
    return sum(r.reads.values()), sum(r.writes.values())


def gpu_spec(name: str | None):
    import torch

    from profilers.hardware import spec

    if name:
        return spec(name)
    dev = torch.cuda.get_device_name(0).lower()
    for key in ("h200", "h100", "a100", "4090"):
        if key in dev:
            return spec("rtx4090" if key == "4090" else key)
    sys.exit(f"attention_dram: no published spec for {dev!r}: pass --gpu a100|h100|h200|rtx4090")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default="1024,2048,4096,8192")
    ap.add_argument("--d", default="64")
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--gpu", default=None, help="the simulator's spec (default: from the device name)")
    ap.add_argument("--ncu", default=shutil.which("ncu") or "ncu")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds one profiled child may take")
    ap.add_argument("--jsonl", type=Path, default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--backend", default="flash", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.n, args.d = int(args.n), int(args.d)
        child(args)
        return
    spec = gpu_spec(args.gpu)
    ns, ds = [int(x) for x in args.n.split(",")], [int(x) for x in args.d.split(",")]
    print(f"SDPA bf16, batch {args.batch} x {args.heads} heads{', causal' if args.causal else ''}; "
          f"simulator spec {spec.name} ({spec.sram_per_sm // 1024} KiB SRAM per SM)")
    table = Table(("backend", "<6"), ("N", ">6"), ("d", ">4"), ("measured read", ">14"), ("write", ">10"),
                  ("predicted read", ">15"), ("write", ">10"), ("meas/pred", ">9.2f"), ("kernels", ">7"))
    rows = []
    for d in ds:
        for n in ns:
            for backend, algo in (("math", "standard"), ("flash", "flash")):
                m = measure(args, backend, n, d)
                pr, pw = predict(algo, n, d, args, spec)
                row = {"backend": backend, "algo": algo, "n": n, "d": d, "heads": args.heads, "batch": args.batch,
                       "causal": args.causal, "gpu": spec.name, "predicted_read": pr, "predicted_write": pw, **m}
                rows.append(row)
                if "error" in m:
                    print(f"{backend:<6} {n:>6} {d:>4} failed: {m['error']}", flush=True)
                    continue
                mb = [f"{b / 1e6:.1f} MB" for b in (m["read"], m["write"], pr, pw)]
                table.row(backend, n, d, *mb, (m["read"] + m["write"]) / (pr + pw), len(m["kernels"]))
    write_jsonl(args.jsonl, rows)
    print("\nmeasured: ncu's DRAM bytes summed over the call's kernels, L2 flushed before each; predicted: "
          "aios sim attention's HBM bytes for the same shape (SRAM per SM, no L2).")


if __name__ == "__main__":
    main()
