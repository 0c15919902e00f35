"""The files a command writes (`--csv`, `--trace`, `--stats`): checked before anything runs,
written at the end, every failure one line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from typing import Annotated

import typer

from .errors import fail

FORMATS = ("table", "csv", "json", "md")  # what --format takes, wherever it is taken
TableOrJson = Annotated[str, typer.Option("--format", "-f", help="table or json.")]


def check_format(format: str, choices: tuple[str, ...] = FORMATS) -> None:
    if format not in choices:
        fail(f"unknown --format {format!r} — choose {' or '.join(choices) if len(choices) < 3 else 'from: ' + ', '.join(choices)}")


def print_rows(rows: list[dict], columns, format: str, markdown, table) -> None:
    """Result rows on stdout in `format`: json (a list of objects), jsonl (one a line), csv
    (exactly `columns`, cells as the exports write them), md (`markdown(rows)`'s text), or the
    Rich table `table(rows)` prints."""
    import json
    import sys

    if format == "json":
        sys.stdout.write(json.dumps([{k: r.get(k) for k in columns} for r in rows], indent=2) + "\n")
    elif format == "jsonl":
        sys.stdout.write("".join(json.dumps({k: r.get(k) for k in columns}) + "\n" for r in rows))
    elif format == "csv":
        from profilers.export import csv_value, to_csv

        sys.stdout.write(to_csv([{k: csv_value(r.get(k)) for k in columns} for r in rows], columns))
    elif format == "md":
        sys.stdout.write(markdown(rows))
    else:
        table(rows)


def check_outputs(outputs: dict[str, Path | None]) -> None:
    """Each target writable, and no two flags writing one file (one export would be lost)."""
    from engines.files import check_writable

    seen: dict[str, str] = {}
    for flag, path in outputs.items():
        if path is None:
            continue
        why = check_writable(path)
        if why:
            fail(f"{flag} {path}: {why} — pick a writable path")
        from engines.files import standard_stream

        key = standard_stream(path) or os.path.realpath(path)  # `-`, /dev/stdout and `> F` with F are one
        if key == os.devnull:
            continue  # nothing written there is lost
        if key in seen:
            fail(f"{seen[key]} and {flag} both write {path} — give each its own file")
        seen[key] = flag


def write(flag: str, path: Path, data: str | Iterable[str]) -> None:
    """Write one output; a full disk or a directory removed during the run is one line naming
    the file (what was printed before stays printed)."""
    from engines.files import write_output

    try:
        write_output(path, data)
    except BrokenPipeError:
        raise  # `--csv -` read by `head`: the guard ends it quietly
    except OSError as e:
        fail(f"{flag} {path}: could not write it ({e.strerror or e}) — free space or pick another path; "
             "the results above are complete")


def emit_records(records, format: str, csv_file: Path | None, trace_file: Path | None, quiet: bool, err,
                 streamed: bool) -> None:
    """`aios run`'s result, one record per backend or per rank: the tables (a distributed run's
    ranks table after them) or the `--format` export on stdout, then the `--csv` and `--trace`
    files."""
    import sys

    from profilers import export

    from . import console, render

    ranks = bool(records[0].meta.get("dist"))
    out = console.stdout(soft_wrap=True)
    if format == "table":
        render.print_tables(out, records, streamed=streamed)
        if ranks:
            render.print_ranks(out, records)
    elif format == "md":
        sys.stdout.write(render.markdown(records))
    elif format == "json":
        sys.stdout.write(export.to_json(records) + "\n")
    else:
        sys.stdout.write(export.summary_csv(records))
    every = ", every rank" if ranks else ""
    for flag, path, content, what in (
            ("--csv", csv_file, export.events_csv_chunks, f"one row per op event{every}"),
            ("--trace", trace_file, export.chrome_trace,
             ("one process per rank; " if ranks else "") + "open it in https://ui.perfetto.dev")):
        if path is not None:
            write(flag, path, content(records))
            if not quiet:
                err.print(f"wrote {path} ({what})", style="dim", soft_wrap=True)
