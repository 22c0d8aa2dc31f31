"""Every file descriptor of every process, read once per run and shared by probes.

Reads ``/proc/PID/fd/*`` through the host (files, ``socket:[40417]``, pipes...). Processes of
other users need root; their pids are returned apart so a probe can say its finding is
``unknown`` rather than absent.
"""

from __future__ import annotations

from prodx.host.base import HostAccessDenied, OpenFile, ProcessInfo
from prodx.probes.base import ProbeContext


def all_open_files(ctx: ProbeContext) -> tuple[list[tuple[OpenFile, ProcessInfo]], list[int]]:
    """(descriptor, its process) for every readable descriptor, and the unreadable pids."""

    def compute() -> tuple[list[tuple[OpenFile, ProcessInfo]], list[int]]:
        out: list[tuple[OpenFile, ProcessInfo]] = []
        denied: list[int] = []
        for proc in ctx.processes():
            try:
                files = ctx.host.open_files(proc.pid)
            except HostAccessDenied:
                denied.append(proc.pid)
                continue
            except (ProcessLookupError, OSError):
                continue  # exited while we looked
            out += [(f, proc) for f in files]
        return out, denied

    return ctx.fact("open_files", compute)


def open_paths(ctx: ProbeContext) -> tuple[list[tuple[OpenFile, str]], list[int]]:
    """(file, process name) for descriptors naming a path, and the unreadable pids."""
    files, denied = all_open_files(ctx)
    return [(f, proc.name) for f, proc in files if f.target.startswith("/")], denied
