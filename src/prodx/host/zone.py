"""The host's time zone, recorded with a capture and used when it is replayed.

Many logs (syslog, nginx's error log, PHP's) write local times without an offset; prodx reads
them as the host's local time. A capture replayed on another machine must read them in the
captured host's zone, or the same kernel line is hours older or younger depending on who
replays it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ZONEINFO = Path("/usr/share/zoneinfo")


def this_zone() -> dict[str, Any]:
    """The zone of the machine running prodx: its IANA ``name`` ("" when it cannot be told:
    TZ, the /etc/localtime link, /etc/timezone), its ``abbreviation`` and its ``utc_offset_s``
    now (east of UTC positive)."""
    name = os.environ.get("TZ", "").lstrip(":")
    if not name or "/" not in name:
        try:
            target = os.readlink("/etc/localtime")
            name = target.split("zoneinfo/", 1)[1] if "zoneinfo/" in target else ""
        except OSError:
            name = ""
    if not name:
        try:
            name = Path("/etc/timezone").read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            name = ""
    now = time.localtime()
    return {"name": name, "abbreviation": now.tm_zone or "", "utc_offset_s": int(now.tm_gmtoff or 0)}


def tz_value(zone: dict[str, Any]) -> str:
    """The TZ value that makes this process read local times as ``zone`` does: its IANA name
    when this machine has it, else a fixed POSIX offset (DST changes are then not known).

    >>> tz_value({"name": "No/Such_Zone", "abbreviation": "JST", "utc_offset_s": 9 * 3600})
    '<JST>-09:00'
    >>> tz_value({"name": "", "utc_offset_s": -(5 * 3600 + 1800)})
    '<UTC-0530>+05:30'
    """
    name = str(zone.get("name") or "")
    if name and ".." not in name and (ZONEINFO / name).is_file():
        return name
    offset = int(zone.get("utc_offset_s") or 0)
    sign = "-" if offset >= 0 else "+"  # POSIX counts west of UTC as positive
    hours, minutes = divmod(abs(offset) // 60, 60)
    abbreviation = "".join(c for c in str(zone.get("abbreviation") or "") if c.isalnum() or c in "+-")
    if len(abbreviation) < 3:
        abbreviation = f"UTC{'+' if offset >= 0 else '-'}{hours:02d}{minutes:02d}"
    return f"<{abbreviation}>{sign}{hours:02d}:{minutes:02d}"


@contextmanager
def local_time_of(zone: dict[str, Any] | None) -> Iterator[None]:
    """Within the block, local times are ``zone``'s (TZ set, then restored); nothing changes
    for None (a capture that did not record its zone)."""
    if not zone:
        yield
        return
    before = os.environ.get("TZ")
    os.environ["TZ"] = tz_value(zone)
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = before
        time.tzset()
