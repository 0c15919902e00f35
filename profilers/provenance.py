"""What made a record: the aios version (and git commit from a checkout), the versions of
Python and the numeric libraries, so rows from different machines and versions can be laid
side by side (as llama-bench's rows carry their build). Cheap: package metadata only, no
heavy import."""

from __future__ import annotations

import functools
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]

# What made a record, in every JSON object and CSV row (filled by profilers.harness.provenance).
# Here, in a module of the standard library only: the CLI names these columns at import time,
# and NumPy must not load before `quiet_blas_pool` (its OpenBLAS threads would spin).
PROVENANCE_FIELDS = ("aios_version", "git_commit", "python_version", "numpy_version", "numba_version",
                     "torch_version", "threads", "threads_source", "threading_layer", "load_avg_1m", "busy_cpus")


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version  # here: the CLI imports this module at start

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The short commit of the checkout aios runs from (with `+dirty` when it has changes), or
    None when it is not a git checkout (an installed wheel)."""
    import subprocess

    if not (_ROOT / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5)
        if head.returncode != 0 or not head.stdout.strip():
            return None
        dirty = subprocess.run(["git", "-C", str(_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def aios_version() -> str:
    return _version("aios") or "unknown"


def version_line() -> str:
    """`aios 0.1.0`, with the commit when run from a git checkout."""
    commit = git_commit()
    return f"aios {aios_version()}" + (f" (git {commit})" if commit else "")


@functools.lru_cache(maxsize=1)
def versions() -> dict:
    """The software fields every record carries."""
    import platform

    return {"aios_version": aios_version(), "git_commit": git_commit(), "python_version": platform.python_version(),
            "numpy_version": _version("numpy"), "numba_version": _version("numba"), "torch_version": _version("torch")}
