"""Formatting numbers for people: bytes, counts and durations."""

from __future__ import annotations


def fmt_bytes(n: float) -> str:
    """Binary units, three significant digits.

    >>> fmt_bytes(0), fmt_bytes(1536), fmt_bytes(38 * 2**30)
    ('0 B', '1.50 KiB', '38.0 GiB')
    """
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            if unit == "B":
                return f"{int(value)} B"
            if value >= 100:
                return f"{value:.0f} {unit}"
            return f"{value:.2f} {unit}" if value < 10 else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def fmt_pct(part: float, whole: float) -> str:
    """``part`` as a percentage of ``whole``; "n/a" when ``whole`` is 0.

    >>> fmt_pct(1, 3)
    '33.3 %'
    """
    return f"{100.0 * part / whole:.1f} %" if whole else "n/a"


def fmt_duration(seconds: float) -> str:
    """A duration in the unit a person reads.

    >>> fmt_duration(5), fmt_duration(600), fmt_duration(7200)
    ('5 s', '10 min', '2.0 h')
    """
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200 - 1:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
