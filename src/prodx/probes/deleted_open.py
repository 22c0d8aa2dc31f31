"""Deleted files that processes still hold open, and the space they pin per filesystem.

Reads ``/proc/PID/fd/*`` links (``/var/log/app.log (deleted)``) and stats the unlinked
inode through the link. Other users' processes need root; without it the finding is
``unknown`` unless what we could read already shows the problem.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from prodx.host.base import OpenFile
from prodx.model import Finding, absent, present, unknown
from prodx.probes.base import Probe, ProbeContext
from prodx.probes.mounts import Mount, measured_mounts
from prodx.probes.openfiles import open_paths
from prodx.units import fmt_bytes

_GIB = 1 << 30
#: Share of a filesystem pinned by deleted files that makes the finding present.
_SHARE = 0.05


def _dev_key(dev: int) -> str:
    """``st_dev`` as mountinfo's major:minor."""
    return f"{os.major(dev)}:{os.minor(dev)}"


def held_open(ctx: ProbeContext) -> tuple[list[tuple[OpenFile, str]], list[int]]:
    """Every deleted regular file held open, with its process name; and the unreadable pids."""
    files, denied = open_paths(ctx)
    return [(f, p) for f, p in files if f.deleted and f.allocated_bytes > 0], denied


class DeletedOpenProbe(Probe):
    """Is space pinned by deleted files that are still open?"""

    name = "storage.deleted_open"
    findings = ("storage.deleted_open_large",)
    cost = 1.0
    deadline_s = 2.0

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        files, denied = held_open(ctx)
        mounts = {m.device: m for m in measured_mounts(ctx)}
        per_mount: dict[str, list[tuple[OpenFile, str]]] = {}
        for f, pname in files:
            per_mount.setdefault(_dev_key(f.dev), []).append((f, pname))
        large: list[dict[str, Any]] = []
        for dev, items in sorted(per_mount.items()):
            mount: Mount | None = mounts.get(dev)
            held = sum(f.allocated_bytes for f, _ in items)
            size = mount.stats.size_bytes if mount and mount.stats else 0
            if held >= _GIB or (size and held >= size * _SHARE):
                top = sorted(items, key=lambda x: -x[0].allocated_bytes)[:5]
                large.append(
                    {
                        "mount_point": mount.mount_point if mount else f"device {dev}",
                        "held_bytes": held,
                        "size_bytes": size,
                        "files": [
                            {"pid": f.pid, "process": p, "fd": f.fd, "path": f.target, "bytes": f.allocated_bytes}
                            for f, p in top
                        ],
                    }
                )
        if large:
            text = "; ".join(
                f"{x['mount_point']}: {fmt_bytes(x['held_bytes'])} held by deleted files, e.g. "
                f"{x['files'][0]['path']} open in {x['files'][0]['process']} (pid {x['files'][0]['pid']})"
                for x in large
            )
            yield present("storage.deleted_open_large", text, mounts=large)
        elif denied:
            yield unknown(
                "storage.deleted_open_large",
                f"needs root to read other users' /proc/PID/fd ({len(denied)} processes unreadable)",
            )
        else:
            total = sum(f.allocated_bytes for f, _ in files)
            yield absent("storage.deleted_open_large", f"deleted files still open hold {fmt_bytes(total)} in all")
