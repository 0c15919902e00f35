"""`aios compare peak`: this machine's measured peaks."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Annotated

import typer

from ..errors import guarded
from ..outputs import TableOrJson, check_format
from ..peaks_table import print_peaks
from .. import console


@guarded
def peak(
    refresh: Annotated[bool, typer.Option("--refresh", help="Measure again instead of showing the cached figures.")] = False,
    format: TableOrJson = "table",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """This machine's measured peaks: copy bandwidth and matmul FLOP/s (CPU, and GPU if any)."""
    from profilers import peaks as P

    check_format(format, ("table", "json"))
    err = console.stderr()
    with err.status("measuring this machine's peaks", spinner="dots") if not quiet else nullcontext():
        pk = P.get(refresh=refresh)
    if format == "json":
        import json

        print(json.dumps(pk.to_dict(), indent=2))
        return
    print_peaks(console.stdout(), pk)
