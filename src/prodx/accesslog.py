"""Pure parsing of web server access logs in the combined (or common) format.

nginx's default ``combined`` format and Apache's ``%h %l %u %t "%r" %>s %b "%{Referer}i"
"%{User-agent}i"`` both write lines like::

    203.0.113.9 - - [10/Oct/2026:13:55:36 +0200] "GET /login HTTP/1.1" 502 157 "-" "curl/8.5.0"

Only the time and the status matter here. Lines in other formats are skipped, not guessed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

_MONTHS = {m: i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}
# The request line is quoted and may itself hold escaped quotes (\"); the status follows it.
_LINE = re.compile(rb'\[(\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] "(?:[^"\\]|\\.)*" (\d{3}) ')


@functools.lru_cache(maxsize=4096)
def _stamp(text: bytes) -> float | None:
    """Epoch seconds of ``10/Oct/2026:13:55:36 +0200`` (cached: a busy log repeats each second)."""
    try:
        day, mon, rest = text.split(b"/", 2)
        year, hh, mm, ss_tz = rest.split(b":", 3)
        ss, tz = ss_tz.split(b" ")
        month = _MONTHS[mon.decode()]
        sign = 1 if tz[:1] == b"+" else -1
        offset = timedelta(hours=int(tz[1:3]), minutes=int(tz[3:5])) * sign
        when = datetime(int(year), month, int(day), int(hh), int(mm), int(ss), tzinfo=timezone(offset))
    except (KeyError, ValueError):
        return None
    return when.timestamp()


def parse_line(line: bytes) -> tuple[float, int] | None:
    """(epoch seconds, HTTP status) of one combined-format line; None if it is not one.

    >>> parse_line(b'1.2.3.4 - - [10/Oct/2026:13:55:36 +0200] "GET / HTTP/1.1" 502 157 "-" "curl"')
    (1791633336.0, 502)
    >>> parse_line(b'[2026-10-10 13:55:36] app.INFO: not an access log') is None
    True
    """
    m = _LINE.search(line)
    if not m:
        return None
    when = _stamp(m.group(1))
    return None if when is None else (when, int(m.group(2)))


@dataclass(frozen=True)
class ErrorRate:
    """Requests and 5xx answers in the recent window and in the baseline window before it."""

    recent_requests: int
    recent_5xx: int
    baseline_requests: int
    baseline_5xx: int
    #: Seconds of the baseline window the data covers (less than asked when the tail is short).
    baseline_covered_s: float
    unparsed_lines: int

    @property
    def recent_share(self) -> float:
        return self.recent_5xx / self.recent_requests if self.recent_requests else 0.0

    @property
    def baseline_share(self) -> float:
        return self.baseline_5xx / self.baseline_requests if self.baseline_requests else 0.0


def error_rate(lines: Iterable[bytes], now: float, recent_s: float = 300, baseline_s: float = 3600) -> ErrorRate:
    """Count requests and 5xx in (now - recent_s, now] and in the ``baseline_s`` before that.

    Lines from the future (a skewed writer) count as recent. Empty input gives all zeros.

    >>> lines = [b'h - - [10/Oct/2026:13:55:36 +0000] "GET / HTTP/1.1" 500 1 "-" "-"',
    ...          b'h - - [10/Oct/2026:13:20:00 +0000] "GET / HTTP/1.1" 200 1 "-" "-"',
    ...          b'garbage']
    >>> r = error_rate(lines, now=parse_line(lines[0])[0] + 10)
    >>> (r.recent_requests, r.recent_5xx, r.baseline_requests, r.baseline_5xx, r.unparsed_lines)
    (1, 1, 1, 0, 1)
    """
    recent_start = now - recent_s
    baseline_start = recent_start - baseline_s
    rr = r5 = br = b5 = bad = 0
    oldest = now
    for line in lines:
        if not line.strip():
            continue
        parsed = parse_line(line)
        if parsed is None:
            bad += 1
            continue
        when, status = parsed
        oldest = min(oldest, when)
        if when > recent_start:
            rr += 1
            r5 += status >= 500
        elif when > baseline_start:
            br += 1
            b5 += status >= 500
    covered = max(0.0, min(baseline_s, recent_start - max(oldest, baseline_start)))
    return ErrorRate(rr, r5, br, b5, covered, bad)
