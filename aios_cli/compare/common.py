"""What the compare subcommands share: their output formats and the checks of them."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..outputs import check_format, check_outputs


def common_checks(format: str, csv_file: Optional[Path], threads: Optional[int] = None):
    """Check the options every compare subcommand has, then size the thread pools (before
    NumPy, Numba or torch start one). Returns the ThreadPlan."""
    from engines.errors import UserError
    from profilers.threads import check_threads, setup

    from ..errors import fail

    check_format(format)
    check_outputs({"--csv": csv_file})
    try:
        check_threads(threads)
    except UserError as e:
        fail(str(e))
    return setup(threads)


def record_fields(plan, backend: Optional[str] = None) -> dict:
    """What every row carries: the machine, the software versions, the threads and the load."""
    from profilers.export import machine_fields
    from profilers.harness import provenance

    return {**machine_fields(), **provenance(backend, plan)}
