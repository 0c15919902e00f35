"""The README lists every exported column exactly as the code writes them (one source of
truth in the code; this keeps the docs from drifting)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aios_cli.bench.latency import latency_columns
from aios_cli.compare.kernels import RESULT_COLUMNS
from aios_cli.compare.passes import PASSES_COLUMNS
from engines.model.config import PRESETS
from profilers.export import EVENT_COLUMNS, SUMMARY_COLUMNS

README = re.sub(r"\s+", " ", (Path(__file__).resolve().parents[1] / "README.md").read_text())


@pytest.mark.parametrize("columns", [EVENT_COLUMNS, SUMMARY_COLUMNS, RESULT_COLUMNS, PASSES_COLUMNS, latency_columns()],
                         ids=["events", "summary", "compare", "prefill-decode", "bench-latency"])
def test_readme_lists_the_columns(columns):
    assert ", ".join(columns) in README


def test_readme_lists_the_presets():
    for name in PRESETS:
        assert f"`{name}`" in README


def test_readme_lists_the_top_keys():
    pytest.importorskip("textual")
    from aios_cli.tui.app import KEYS, TopApp

    bound = {b.key for b in TopApp.BINDINGS}
    for key, _ in KEYS:
        assert f"`{key}`" in README, key
        for k in key.split(" / "):
            assert {"?": "question_mark"}.get(k, k) in bound, k


def _readme_section(title: str) -> str:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = text.index(f"### `{title}`")
    end = text.find("\n### ", start + 1)
    return text[start:end if end > 0 else None]


def _table_options(section: str) -> set[str]:
    """The long options named in the first column of the section's option table."""
    rows = [ln for ln in section.splitlines() if ln.startswith("| `--")]
    return {opt for ln in rows for opt in re.findall(r"--[a-z0-9][a-z0-9-]*", ln.split("|")[1])}


def _command_options(path: str) -> set[str]:
    import typer.main

    from aios_cli.main import app

    cmd = typer.main.get_command(app)
    for name in path.split()[1:]:
        cmd = cmd.commands[name]
    return {o for p in cmd.params if p.param_type_name == "option" for o in (*p.opts, *p.secondary_opts)
            if o.startswith("--") and o != "--help"}


@pytest.mark.parametrize("command", ["aios run", "aios top", "aios bench latency", "aios bench throughput",
                                     "aios serve", "aios bench serve", "aios sim attention"])
def test_readme_option_tables_match_the_help(command):
    """Every option `--help` lists is in the README's table for the command, and the table
    names no option the command does not have."""
    documented = _table_options(_readme_section(command))
    assert documented == _command_options(command)
