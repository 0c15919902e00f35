"""Layout snapshots of `aios top` at 120x40 and 80x24 (pytest-textual-snapshot; Textual is
pinned in the `test` extra, since another Textual version draws differently).

The session is frozen (tests/top_fixture.py): real panels over fixed numbers. After a layout
change, look at the new SVGs and accept them with `pytest tests/test_top_snapshots.py
--snapshot-update`."""

from __future__ import annotations

import pytest

pytest.importorskip("pytest_textual_snapshot")


def make_app():
    from aios_cli.tui.app import TopApp
    from tests.top_fixture import FixedSampler, frozen_session

    return TopApp(frozen_session(), sampler=FixedSampler(), clock=lambda: 0.0)


@pytest.mark.parametrize("size", [(120, 40), (80, 24)], ids=["120x40", "80x24"])
def test_layout(snap_compare, size):
    assert snap_compare(make_app(), terminal_size=size)


def test_share_metric_and_prefill_tab(snap_compare):
    assert snap_compare(make_app(), terminal_size=(120, 40), press=["m", "l"])


def test_help_screen(snap_compare):
    assert snap_compare(make_app(), terminal_size=(80, 24), press=["question_mark"])
