"""Every file descriptor of every process, read once per run and shared by probes.

Reads ``/proc/PID/fd/*`` through the host. Processes of other users need root; their pids
are returned apart so a probe can say its finding is ``unknown`` rather than absent.
"""

from __future__ import annotations

from prodx.host.base import HostAccessDenied, OpenFile
from prodx.probes.base import ProbeContext


def all_open_files(ctx: ProbeContext) -> tuple[list[tuple[OpenFile, str]], list[int]]:
    """(open file, process name) for every readable descriptor, and the unreadable pids."""

    def compute() -> tuple[list[tuple[OpenFile, str]], list[int]]:
        out: list[tuple[OpenFile, str]] = []
        denied: list[int] = []
        for proc in ctx.processes():
            try:
                files = ctx.host.open_files(proc.pid)
            except HostAccessDenied:
                denied.append(proc.pid)
                continue
            except (ProcessLookupError, OSError):
                continue  # exited while we looked
            out += [(f, proc.name) for f in files if f.target.startswith("/")]
        return out, denied

    return ctx.fact("open_files", compute)
