"""The comma lists a grid command takes (`aios bench latency`, `aios bench spec`): `1,2,4`."""

from __future__ import annotations

from .errors import fail


def parse_list(text: str, flag: str, kind=int, minimum: int = 1) -> list:
    """`1,2,4` -> [1, 2, 4] in the order given, duplicates dropped; one line on bad input."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if kind is int:
            try:
                v = int(part)
            except ValueError:
                fail(f"{flag} takes whole numbers like 1,2,4, got {part!r}")
            if v < minimum:
                fail(f"{flag} values must be {minimum} or more, got {v}")
            if v > 2**31 - 1:
                fail(f"{flag} value {part[:20]}{'…' if len(part) > 20 else ''} is out of range — pass at most {2**31 - 1:,}")
        else:
            v = part
        if v not in out:
            out.append(v)
    if not out:
        fail(f"{flag} is empty — e.g. {flag} {'1,2' if kind is int else 'a,b'}")
    return out
