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


def make_spec_app():
    """The frozen session speculating with exit:6: the speculation panel under the layers, and
    the decode tab's draft rounds (the first six layers) beside the target's passes."""
    from aios_cli.tui.app import TopApp
    from aios_cli.tui.view import SpecStat
    from tests.top_fixture import FixedSampler, frozen_session, synthetic_step

    s = frozen_session()
    s.v.speculate = "exit:6"
    s._draft_layers = 6
    for i in range(8):
        st = synthetic_step(6, "draft", 20 + 5 * i, 0, 30 + 5 * i, 0.5 * i)
        st.engine, st.emitted = "draft", 0
        s._on_step(st, None)
    s._spec = SpecStat(3, 4, False, k=4, rounds=9, drafted=36, accepted=29, hist=[1, 0, 2, 1, 5], emitted=38,
                       draft_s=0.0412, target_s=0.0977)
    return TopApp(s, sampler=FixedSampler(), clock=lambda: 0.0)


def test_speculation_layout(snap_compare):
    assert snap_compare(make_spec_app(), terminal_size=(120, 40))
