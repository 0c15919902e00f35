"""Writing files: atomically (a failed write leaves the target as it was and no temporary file
behind), with a normal mode, under one cache directory."""

from __future__ import annotations

import os
import stat

import pytest

from engines.files import atomic_write, cache_dir, check_writable


class Broken(Exception):
    pass


def chunks_then_fail():
    yield "first chunk,"
    yield "second chunk,"
    raise Broken("the disk filled up")


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("the old contents")
    with pytest.raises(Broken):
        atomic_write(target, chunks_then_fail())
    assert target.read_text() == "the old contents"  # never half-written, never replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_a_failed_write_to_a_new_path_creates_nothing(tmp_path):
    with pytest.raises(Broken):
        atomic_write(tmp_path / "new.csv", chunks_then_fail())
    assert list(tmp_path.iterdir()) == []


def test_the_target_is_untouched_until_the_write_is_whole(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    seen = []

    def chunks():
        for part in ("a,", "b,", "c"):
            seen.append(target.read_text())  # what a reader sees mid-write
            yield part

    atomic_write(target, chunks())
    assert seen == ["old", "old", "old"] and target.read_text() == "a,b,c"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_check_writable(tmp_path):
    assert check_writable(tmp_path / "x.csv") is None
    assert "does not exist" in check_writable(tmp_path / "no" / "x.csv")
    assert "is a directory" in check_writable(tmp_path)


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("AIOS_CACHE_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "a"
    monkeypatch.delenv("AIOS_CACHE_DIR")
    assert cache_dir() == tmp_path / "x" / "aios"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert str(cache_dir()).endswith(".cache/aios")
