"""Numbers as the tables and panels print them: the one set of formatters."""

from __future__ import annotations

import math


def fmt_t(s: float | None) -> str:
    """Seconds with a unit that fits: `1.23 s`, `4.56 ms`, `7.8 µs`."""
    if s is None:
        return "n/a"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} µs"


def fmt_time(s: float | None) -> str:
    """`fmt_t` without the space, for tight columns."""
    return "n/a" if s is None or not math.isfinite(s) else fmt_t(s).replace(" ", "")


def time_unit(seconds: float) -> tuple[float, str]:
    """(scale, unit) that shows `seconds` with a few significant digits."""
    return (1.0, "s") if seconds >= 1 else (1e3, "ms") if seconds >= 1e-3 else (1e6, "µs")


def fmt_bytes(n) -> str:
    if n is None:
        return "n/a"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def fmt_ms(s) -> str:
    return "n/a" if s is None else f"{s * 1e3:.3f}"


def fmt_num(x, spec=".1f", suffix="") -> str:
    return "n/a" if x is None else f"{x:{spec}}{suffix}"


def fmt_pct(x) -> str:
    """A fraction as a percentage: 0.123 -> `12.3%`."""
    return "n/a" if x is None else f"{100 * x:.1f}%"


def fmt_rate(x: float | None, unit: str = "tok/s") -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    spec = ".0f" if x >= 100 else ".1f" if x >= 10 else ".2f"
    return f"{x:{spec}} {unit}".rstrip()


def fmt_sig(x: float) -> str:
    """Three significant digits, never scientific notation: 0.0123, 4.56, 789, 24,000."""
    if x >= 1000:
        return f"{x:,.0f}"
    return f"{x:.3g}" if x >= 1e-3 or x == 0 else f"{x:.2e}"


def fmt_ratio(x: float) -> str:
    """A speedup: `1,234×`, `12×`, `0.45×` (below 1, its digits, never `0×`)."""
    return f"{x:,.0f}×" if x >= 10 else f"{x:.2g}×"


def fmt_n(n: int) -> str:
    """A size: `10M`, `512k`, `4,097`."""
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000:,}M"
    if n >= 10_000 and n % 1_000 == 0:
        return f"{n // 1_000:,}k"
    return f"{n:,}"
