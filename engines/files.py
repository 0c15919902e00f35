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


# Names of this process's own standard streams: written through sys.stdout / sys.stderr, in
# place, whatever they point at (a terminal, a pipe, or a regular file `> out.txt` that must not
# be renamed over or truncated).
STANDARD_STREAMS = {"-": "stdout", "/dev/stdout": "stdout", "/dev/fd/1": "stdout", "/proc/self/fd/1": "stdout",
                    "/dev/stderr": "stderr", "/dev/fd/2": "stderr", "/proc/self/fd/2": "stderr"}
_TEXT = {"encoding": "utf-8", "errors": "surrogateescape", "newline": ""}  # a non-UTF-8 name round-trips


def standard_stream(path: str | os.PathLike) -> str | None:
    """"stdout" or "stderr" when `path` names one of this process's standard streams, or is the
    very file one is redirected to (`--trace F > F`: written after the results, like `-`)."""
    name = STANDARD_STREAMS.get(os.fspath(path))
    if name:
        return name
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    for which, stream in (("stdout", sys.stdout), ("stderr", sys.stderr)):
        try:
            if os.path.samestat(st, os.fstat(stream.fileno())):
                return which
        except (OSError, ValueError, AttributeError):  # no real file behind the stream (tests)
            continue
    return None


def is_stream(path: str | os.PathLike) -> bool:
    """A standard stream, or an existing character device, pipe or socket (/dev/null, a FIFO),
    symlinks followed: a target that is written in place, never renamed over."""
    if standard_stream(path):
        return True
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def write_output(path: str | os.PathLike, data: str | Iterable[str]) -> None:
    """An export: a standard stream through Python's own; a device or pipe in place, so /dev/null
    stays a device; a regular file atomically (`atomic_write`), at the file a symlink points to
    (the link stays a link). OSError (a full disk, a vanished directory) goes to the caller."""
    which = standard_stream(path)
    if which:
        stream = sys.stdout if which == "stdout" else sys.stderr
        for chunk in _chunks(data):
            stream.write(chunk)
        stream.flush()
        return
    target = os.path.realpath(path)
    if is_stream(target):
        with open(target, "w", **_TEXT) as f:
            for chunk in _chunks(data):
                f.write(chunk)
    else:
        atomic_write(target, data)


def atomic_write(path: str | os.PathLike, data: str | Iterable[str]) -> None:
    """Write `data` (a string, or string chunks so a large file is never held whole) to a
    temporary file beside `path`, then rename it over `path`. The temporary name is short, so
    any name that fits the file system fits it too."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=".aios-", suffix=".tmp", dir=directory)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the file a normal mode
        with os.fdopen(fd, "w", **_TEXT) as f:
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
    if standard_stream(path):
        return None
    try:
        if is_stream(path):
            return None if os.access(path, os.W_OK) else f"{path} is not writable"
        p = Path(os.path.realpath(path))
        if len(p.name.encode("utf-8", "surrogateescape")) > 255:
            return f"the file name {p.name[:40]}… is longer than a file name can be (255 bytes)"
        parent = p.parent
        if parent.exists() and not parent.is_dir():
            return f"{parent} is a file, not a directory"
        if not parent.is_dir():
            return f"directory {parent} does not exist"
        if p.is_dir():
            return f"{path} is a directory"
        if not os.access(parent, os.W_OK):
            return f"directory {parent} is not writable"
    except (OSError, ValueError) as e:  # a path the file system cannot even look up (too long, say)
        return getattr(e, "strerror", None) or str(e)
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
