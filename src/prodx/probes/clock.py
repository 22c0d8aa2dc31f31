"""The system clock: is it synchronised by NTP, and how far off is it?

Asks, in turn, whichever of these the host has (argv, never a shell, 1 s each):

- ``timedatectl show -p NTPSynchronized`` when systemd runs (/run/systemd/system):
  ``NTPSynchronized=yes``
- ``chronyc -n tracking``: ``System time     : 0.000012 seconds slow of NTP time`` and
  ``Leap status     : Normal`` (``Not synchronised`` when chronyd has no source)
- ``ntpq -pn``: the peer marked ``*`` is the one ntpd follows; column 9 is its offset in ms
- the kernel's own state through ``adjtimex(2)`` with modes 0 (read-only), via
  ``ctx.host.observe("adjtimex", [], ...)``: the STA_UNSYNC bit, which every NTP client clears
  while it disciplines the clock, and maxerror.

Only the NTP tools measure an offset; with the kernel's state alone ``clock.offset_large``
stays unknown. No source at all leaves both findings unknown.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prodx.model import Finding, absent, present, unknown
from prodx.probes.base import Probe, ProbeContext

OFFSET_LIMIT_S = 1.0
COMMAND_S = 1.0
STA_UNSYNC = 0x0040
TIME_ERROR = 5
_CHRONYC = ("/usr/bin/chronyc", "/bin/chronyc")
_NTPQ = ("/usr/bin/ntpq", "/usr/sbin/ntpq", "/bin/ntpq")


@dataclass(frozen=True)
class ClockReading:
    """What one source says: synchronised (None if it cannot tell), offset in seconds (None
    if it does not measure one), and its own words."""

    source: str
    synchronised: bool | None
    offset_s: float | None
    detail: str


def parse_timedatectl(text: str) -> ClockReading:
    """
    >>> parse_timedatectl("NTPSynchronized=no\\n").synchronised
    False
    """
    m = re.search(r"^NTPSynchronized=(yes|no)", text, re.M)
    return ClockReading("timedatectl", None if not m else m.group(1) == "yes", None, text.strip()[:200])


def parse_chronyc_tracking(text: str) -> ClockReading:
    """
    >>> r = parse_chronyc_tracking("Reference ID    : C0A80001 (192.168.0.1)\\n"
    ...     "System time     : 2.500000000 seconds slow of NTP time\\nLeap status     : Normal\\n")
    >>> (r.synchronised, r.offset_s)
    (True, -2.5)
    >>> parse_chronyc_tracking("Reference ID    : 00000000 ()\\nLeap status     : Not synchronised\\n").synchronised
    False
    """
    leap = re.search(r"^Leap status\s*:\s*(.+)$", text, re.M)
    synced = None if not leap else leap.group(1).strip().lower() != "not synchronised"
    off = re.search(r"^System time\s*:\s*([\d.]+) seconds (fast|slow)", text, re.M)
    offset = None if not off else float(off.group(1)) * (1 if off.group(2) == "fast" else -1)
    detail = "; ".join(line.strip() for line in text.splitlines() if line.startswith(("Reference ID", "System time", "Leap status")))
    return ClockReading("chronyc", synced, offset, detail)


def parse_ntpq_peers(text: str) -> ClockReading:
    """
    >>> text = ("     remote           refid      st t when poll reach   delay   offset  jitter\\n"
    ...         "==============================================================================\\n"
    ...         "*192.0.2.10      .GPS.            1 u   33   64  377    0.512 -1500.25   0.101\\n")
    >>> r = parse_ntpq_peers(text)
    >>> (r.synchronised, r.offset_s)
    (True, -1.50025)
    >>> parse_ntpq_peers(text.replace("*", " ")).synchronised
    False
    """
    for line in text.splitlines():
        if line.startswith("*"):
            cols = line[1:].split()
            try:
                return ClockReading("ntpq", True, float(cols[8]) / 1000, line.strip())
            except (IndexError, ValueError):
                return ClockReading("ntpq", True, None, line.strip())
    peers = [ln for ln in text.splitlines() if ln[:1] in " +-x.#o" and re.match(r"^.\d|^.[a-zA-Z]", ln)]
    return ClockReading("ntpq", False if peers else None, None, f"no system peer among {len(peers)} peer(s)")


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h> (glibc, 64-bit and 32-bit alike: C long and int).
    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long), ("time_usec", ctypes.c_long), ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
        ("_pad", ctypes.c_int * 11),
    ]


def read_adjtimex() -> dict[str, Any]:
    """The kernel's NTP state: adjtimex(2) with modes = 0 only reads it."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    tx = _Timex()
    tx.modes = 0
    state = libc.adjtimex(ctypes.byref(tx))
    if state < 0:
        return {"error": f"adjtimex failed: errno {ctypes.get_errno()}"}
    return {"state": state, "status": tx.status, "maxerror_us": tx.maxerror, "esterror_us": tx.esterror, "error": ""}


def kernel_reading(data: dict[str, Any]) -> ClockReading | None:
    """
    >>> kernel_reading({"state": 5, "status": 0x41, "maxerror_us": 16000000, "error": ""}).synchronised
    False
    >>> kernel_reading({"state": 0, "status": 0x2001, "maxerror_us": 40000, "error": ""}).synchronised
    True
    """
    if data.get("error"):
        return None
    unsync = bool(data["status"] & STA_UNSYNC) or data["state"] == TIME_ERROR
    detail = (f"adjtimex: state {data['state']}{' (TIME_ERROR)' if data['state'] == TIME_ERROR else ''}, "
              f"status 0x{data['status']:04x}{' (STA_UNSYNC)' if data['status'] & STA_UNSYNC else ''}, "
              f"maxerror {data['maxerror_us'] / 1e6:.3f} s")
    return ClockReading("kernel", not unsync, None, detail)


class ClockProbe(Probe):
    """NTP synchronisation and clock offset, from the NTP client in use or the kernel."""

    name = "clock.ntp"
    findings = ("clock.unsynchronised", "clock.offset_large")
    cost = 1.0
    deadline_s = 2.0

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        host = ctx.host
        readings: list[ClockReading] = []
        if host.exists("/run/systemd/system"):
            r = host.run(["timedatectl", "show", "-p", "NTPSynchronized"], COMMAND_S)
            if r.ok:
                readings.append(parse_timedatectl(r.stdout))
        chronyc = next((p for p in _CHRONYC if host.exists(p)), None)
        if chronyc:
            r = host.run([chronyc, "-n", "tracking"], COMMAND_S)
            if r.ok:
                readings.append(parse_chronyc_tracking(r.stdout))
        ntpq = next((p for p in _NTPQ if host.exists(p)), None)
        if ntpq:
            r = host.run([ntpq, "-pn"], COMMAND_S)
            if r.ok:
                readings.append(parse_ntpq_peers(r.stdout))
        kernel = kernel_reading(host.observe("adjtimex", [], read_adjtimex))
        daemons = [r for r in readings if r.synchronised is not None]
        evidence = {"sources": {r.source: r.detail for r in [*readings, *([kernel] if kernel else [])]}}

        if daemons:
            unsynced = [r for r in daemons if not r.synchronised]
            if unsynced:
                yield present("clock.unsynchronised", f"{unsynced[0].source}: not synchronised ({unsynced[0].detail})", **evidence)
            else:
                yield absent("clock.unsynchronised", f"{daemons[0].source}: synchronised", **evidence)
        elif kernel is not None:
            if kernel.synchronised:
                yield absent("clock.unsynchronised", "the kernel clock is disciplined by NTP", **evidence)
            else:
                yield present("clock.unsynchronised", "no NTP client keeps this clock in sync (" + kernel.detail
                              + "; no chronyd, ntpd or systemd-timesyncd answered)", **evidence)
        else:
            yield unknown("clock.unsynchronised", "no NTP client (timedatectl, chronyc, ntpq) answered and adjtimex "
                          "could not be read", **evidence)

        measured = [r for r in readings if r.offset_s is not None]
        if not measured:
            yield unknown("clock.offset_large", "no NTP client here measures the offset (install chrony and run "
                          "`chronyc tracking`, or compare `date -u` with a trusted clock)", **evidence)
        else:
            worst = max(measured, key=lambda r: abs(r.offset_s or 0.0))
            off = worst.offset_s or 0.0
            direction = "ahead" if off > 0 else "behind"
            if abs(off) > OFFSET_LIMIT_S:
                yield present("clock.offset_large", f"{worst.source}: the clock is {abs(off):.3f} s {direction} of NTP time",
                              offset_s=off, **evidence)
            else:
                yield absent("clock.offset_large", f"{worst.source}: offset {off:+.6f} s", offset_s=off, **evidence)
