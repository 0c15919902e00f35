"""Files every layer writes: atomically (nobody ever sees half of one), and under one cache
directory. Standard library only, so engines, profilers and the CLI can all import it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable


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
            if isinstance(data, str):
                f.write(data)
            else:
                for chunk in data:
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
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
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
