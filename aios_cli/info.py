"""`aios info`: this machine, and which engines can run on it."""

from __future__ import annotations

import platform

from . import console
from .errors import guarded
from .outputs import TableOrJson, check_format


def gather() -> dict:
    from engines import BACKENDS, backend_status
    from profilers import nvml, sysinfo

    from profilers import provenance, threads

    usable, physical = sysinfo.cores()
    total, avail = sysinfo.ram_bytes()
    plan = threads.plan(None)
    versions = {"aios": provenance.aios_version(), "git_commit": provenance.git_commit(),
                "python": platform.python_version()}
    for mod in ("torch", "numba", "numpy"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
    gpus = [g.__dict__ for g in nvml.gpus()]
    return {
        "versions": versions,
        "cpu": {"model": sysinfo.cpu_model(), "logical_cpus": usable, "physical_cores": physical,
                "simd_flags": sysinfo.simd_flags(), "machine": platform.machine()},
        "ram": {"total_bytes": total, "available_bytes": avail},
        "threads": {"default": plan.threads, "source": plan.source, "usable_cpus": plan.usable_cpus,
                    "busy_cpus": round(plan.busy_cpus, 2), "load_avg_1m": plan.load_avg_1m},
        "gpus": gpus,
        "gpu_unavailable_reason": None if gpus else (nvml.unavailable_reason() or "NVML sees no device"),
        "engines": {b: dict(zip(("usable", "detail"), backend_status(b))) for b in BACKENDS},
        "peaks": _cached_peaks(),
    }


def _cached_peaks() -> dict | None:
    """The peaks `aios compare peak` measured on this machine, if cached (info never measures)."""
    from profilers import peaks

    p = peaks.load_cached()
    return p.to_dict() if p else None


@guarded
def info(format: TableOrJson = "table") -> None:
    """Show Python/torch/numba versions, the CPU, RAM, NVIDIA GPUs, and which engines run here."""
    check_format(format, ("table", "json"))
    d = gather()
    if format == "json":
        import json

        print(json.dumps(d, indent=2))
        return
    from rich.table import Table

    from .fmt import fmt_bytes

    c = console.stdout()
    v = d["versions"]
    t = Table(show_header=False, title="aios info", title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("aios", v["aios"] + (f" (git {v['git_commit']})" if v["git_commit"] else ""))
    t.add_row("python", v["python"])
    t.add_row("torch", v["torch"] or "not installed")
    t.add_row("numba", v["numba"] or "not installed")
    t.add_row("numpy", v["numpy"] or "not installed")
    cpu = d["cpu"]
    t.add_row("cpu", f"{cpu['model']} ({cpu['machine']})")
    t.add_row("cores", f"{cpu['logical_cpus']} usable logical CPUs, {cpu['physical_cores']} physical cores")
    th = d["threads"]
    load = f", load average {th['load_avg_1m']:.2f}" if th["load_avg_1m"] is not None else ""
    src = "" if th["source"] == "default" else f" (from {th['source']})"
    t.add_row("threads", f"{th['default']} by default{src}: other processes use {th['busy_cpus']:.1f} of "
                         f"{th['usable_cpus']} CPUs now{load}; set with --threads")
    t.add_row("simd flags", " ".join(cpu["simd_flags"]) or "none detected")
    t.add_row("ram", f"{fmt_bytes(d['ram']['total_bytes'])} total, {fmt_bytes(d['ram']['available_bytes'])} available")
    if d["gpus"]:
        for g in d["gpus"]:
            t.add_row(f"gpu {g['index']}", f"{g['name']}, {fmt_bytes(g['memory_total'])}, driver {g['driver'] or 'N/A'}")
    else:
        t.add_row("gpu", f"no NVIDIA GPU ({d['gpu_unavailable_reason']})")
    c.print(t)
    e = Table(title="engines", title_justify="left")
    e.add_column("backend", style="bold")
    e.add_column("usable")
    e.add_column("detail")
    for name, st in d["engines"].items():
        from rich.text import Text

        e.add_row(name, Text("yes", style="green") if st["usable"] else Text("no", style="red"), st["detail"])
    c.print(e)
    from profilers import peaks

    pk = peaks.load_cached()
    if pk is None:
        c.print("measured peaks: none cached yet — `aios compare peak` measures them")
    else:
        from .peaks_table import print_peaks

        print_peaks(c, pk)
