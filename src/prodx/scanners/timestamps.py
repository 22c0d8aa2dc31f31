"""Timestamps of log lines: the common formats at line start or in brackets, to ISO-8601.

Reads one line (bytes) and returns an ISO-8601 string, or None when no known format is
found. Recognised, with a sample each::

    2024-03-02T10:41:07.123+00:00 ...     ISO-8601 (also with a space, ms, Z, UTC, +0000)
    [2024-03-02 10:41:07] production.ERROR Laravel / Monolog / gunicorn, bracketed ISO
    2024/03/02 10:41:07 [error] ...       nginx error log
    1.2.3.4 - - [02/Mar/2024:10:41:07 +0000] "GET / ..."   nginx/Apache access log
    Mar  2 10:41:07 web1 kernel: ...      syslog (no year: taken from a hint, see below)
    [Sat Mar 02 10:41:07.123456 2024] ... Apache error log
    [02-Mar-2024 10:41:07 UTC] PHP ...    PHP error log and PHP-FPM
    1234:M 02 Mar 2024 10:41:07.123 # ... Redis

Kernel ring-buffer stamps (``[12345.678901]``, seconds since boot) are not wall-clock time
and give None.

>>> parse_ts(b"2024/03/02 10:41:07 [crit] 1#0: x")
'2024-03-02T10:41:07'
>>> parse_ts(b"Dec 31 23:59:59 web1 cron: x", year_hint=2025, month_hint=1)
'2024-12-31T23:59:59'
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_MON = r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TZ = r"(Z|UTC|GMT|[+-]\d\d:?\d\d)"

# Only the head of a line is decoded and searched: timestamps live there.
_HEAD_BYTES = 96

_ISO = re.compile(
    r"^\[?(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))? ?" + _TZ + r"?")
_NGINX = re.compile(r"^(\d{4})/(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d)")
_ACCESS = re.compile(r"\[(\d\d)/" + _MON + r"/(\d{4}):(\d\d):(\d\d):(\d\d) ([+-]\d{4})\]")
_SYSLOG = re.compile(r"^" + _MON + r" {1,2}(\d{1,2}) (\d\d):(\d\d):(\d\d)")
_APACHE = re.compile(
    r"^\[\w{3} " + _MON + r" (\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))? (\d{4})\]")
_PHP = re.compile(r"^\[(\d\d)-" + _MON + r"-(\d{4}) (\d\d):(\d\d):(\d\d)(?: ([A-Za-z_/+-]+))?\]")
_REDIS = re.compile(r"^\d+:[A-Z] (\d\d) " + _MON + r" (\d{4}) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?")


def _tz(text: str | None) -> timezone | None:
    if not text:
        return None
    if text in ("Z", "UTC", "GMT"):
        return timezone.utc
    if text[0] in "+-":
        digits = text[1:].replace(":", "")
        if len(digits) == 4 and digits.isdigit():
            delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
            return timezone(-delta if text[0] == "-" else delta)
    return None


def _micro(frac: str | None) -> int:
    return int((frac or "0")[:6].ljust(6, "0"))


def _iso(year: int, month: int, day: int, hh: int, mm: int, ss: int,
         micro: int = 0, tz: timezone | None = None) -> str | None:
    try:
        return datetime(year, month, day, hh, mm, ss, micro, tzinfo=tz).isoformat()
    except ValueError:
        return None


def parse_ts(line: bytes, *, year_hint: int | None = None, month_hint: int = 12) -> str | None:
    """The wall-clock time a log line carries, as ISO-8601.

    Args:
        line: the raw line (any bytes; only its head is looked at).
        year_hint: the year for formats without one (syslog); usually the file's mtime year.
            None means the current year (and month).
        month_hint: the month of the file's mtime; a syslog line from a later month than
            this is taken to be from the year before (December lines in a January file).

    Returns:
        The timestamp, with its UTC offset when the line has one; None when no known format
        is found (continuation lines, stack traces, kernel ring-buffer seconds).
    """
    head = line[:_HEAD_BYTES].decode("latin-1").lstrip()
    if not head:
        return None
    first = head[0]
    if first.isdigit():
        if m := _ISO.match(head):
            y, mo, d, h, mi, s, frac, tz = m.groups()
            return _iso(int(y), int(mo), int(d), int(h), int(mi), int(s), _micro(frac), _tz(tz))
        if m := _NGINX.match(head):
            return _iso(*(int(g) for g in m.groups()))
        if m := _REDIS.match(head):
            d, mon, y, h, mi, s, frac = m.groups()
            return _iso(int(y), _MONTHS[mon], int(d), int(h), int(mi), int(s), _micro(frac))
    elif first == "[":
        if m := _ISO.match(head):
            y, mo, d, h, mi, s, frac, tz = m.groups()
            return _iso(int(y), int(mo), int(d), int(h), int(mi), int(s), _micro(frac), _tz(tz))
        if m := _PHP.match(head):
            d, mon, y, h, mi, s, tz = m.groups()
            return _iso(int(y), _MONTHS[mon], int(d), int(h), int(mi), int(s), 0, _tz(tz))
        if m := _APACHE.match(head):
            mon, d, h, mi, s, frac, y = m.groups()
            return _iso(int(y), _MONTHS[mon], int(d), int(h), int(mi), int(s), _micro(frac))
    elif m := _SYSLOG.match(head):
        mon, d, h, mi, s = m.groups()
        month = _MONTHS[mon]
        if year_hint is None:
            now = datetime.now()
            year_hint, month_hint = now.year, now.month
        year = year_hint
        if month > month_hint:
            year -= 1
        return _iso(year, month, int(d), int(h), int(mi), int(s))
    if m := _ACCESS.search(head):
        d, mon, y, h, mi, s, tz = m.groups()
        return _iso(int(y), _MONTHS[mon], int(d), int(h), int(mi), int(s), 0, _tz(tz))
    return None
