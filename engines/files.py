"""Files every layer writes: atomically (nobody ever sees half of one), and under one cache
directory. Standard library only, so engines, profilers and the CLI can all import it."""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Iterable


def _chunks(data: str | Iterable[str]) -> Iterable[str]:
    return (data,) if isinstance(data, str) else data


def is_stream(path: str | os.PathLike) -> bool:
    """`-`, or an existing character device or pipe (/dev/stdout, /dev/null, a FIFO): a target
    that is written in place, never renamed over."""
    if str(path) == "-":
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def write_output(path: str | os.PathLike, data: str | Iterable[str]) -> None:
    """An export: a regular file atomically (`atomic_write`); a stream (`is_stream`) in place,
    so /dev/null stays a device. OSError (a full disk, a vanished directory) goes to the caller."""
    if str(path) == "-":
        for chunk in _chunks(data):
            sys.stdout.write(chunk)
        sys.stdout.flush()
    elif is_stream(path):
        with open(path, "w", encoding="utf-8", newline="") as f:
            for chunk in _chunks(data):
                f.write(chunk)
    else:
        atomic_write(path, data)


def atomic_write(path: str | os.PathLike, data: str | Iterable[str]) -> None:
    """Write `data` (a string, or string chunks so a large file is never held whole) to a
    temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the file a normal mode
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            for chunk in _chunks(data):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def check_writable(path: str | os.PathLike) -> str | None:
    """None if `path` can be written, else why not (checked before a run starts)."""
    if is_stream(path):
        return None if str(path) == "-" or os.access(path, os.W_OK) else f"{path} is not writable"
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        return f"{parent} is a file, not a directory"
    if not parent.is_dir():
        return f"directory {parent} does not exist"
    if p.is_dir():
        return f"{p} is a directory"
    if not os.access(parent, os.W_OK):
        return f"directory {parent} is not writable"
    return None


def cache_dir() -> Path:
    """``$AIOS_CACHE_DIR``, else ``$XDG_CACHE_HOME/aios``, else ``~/.cache/aios``."""
    env = os.environ.get("AIOS_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "aios"
    return Path.home() / ".cache" / "aios"
