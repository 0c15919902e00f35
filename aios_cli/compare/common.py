"""What the compare subcommands share: their output formats and the checks of them."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..outputs import check_format, check_outputs


def common_checks(format: str, csv_file: Optional[Path]) -> None:
    check_format(format)
    check_outputs({"--csv": csv_file})


def to_csv(rows: list[dict], columns) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return buf.getvalue()
