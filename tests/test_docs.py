"""The README lists every exported column exactly as the code writes them (one source of
truth in the code; this keeps the docs from drifting)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aios_cli.compare.kernels import RESULT_COLUMNS
from aios_cli.compare.passes import PASSES_COLUMNS
from engines.config import PRESETS
from profilers.export import EVENT_COLUMNS, SUMMARY_COLUMNS

README = re.sub(r"\s+", " ", (Path(__file__).resolve().parents[1] / "README.md").read_text())


@pytest.mark.parametrize("columns", [EVENT_COLUMNS, SUMMARY_COLUMNS, RESULT_COLUMNS, PASSES_COLUMNS],
                         ids=["events", "summary", "compare", "prefill-decode"])
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
