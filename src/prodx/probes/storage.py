"""Filesystem space, inodes, the root reserve and read-only state of every relevant mount.

Reads /proc/self/mountinfo, /etc/fstab and statvfs(3) of each mount point (in bounded child
processes: a dead NFS server must not hang the run).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prodx.host.base import CallOutcome
from prodx.model import Finding, absent, present, unknown
from prodx.probes.base import Probe, ProbeContext
from prodx.probes.mounts import Mount, fstab_options, is_disk_fs, measured_mounts, mount_of
from prodx.units import fmt_bytes

_MIB = 1 << 20
_GIB = 1 << 30


def is_full(m: Mount) -> bool:
    """No room even for root: free < max(2 MiB, min(1 % of the size, 1 GiB)).

    ext4 keeps a few hundred KiB it never hands out, so a tiny filesystem filled to ENOSPC by
    root still shows some free blocks: hence the 2 MiB floor.
    """
    s = m.stats
    return bool(s and s.size_bytes and s.free_bytes < max(2 * _MIB, min(s.size_bytes // 100, _GIB)))


def is_low(m: Mount) -> bool:
    """Less than 5 % of the size left for unprivileged users."""
    s = m.stats
    return bool(s and s.size_bytes and s.avail_bytes < s.size_bytes * 0.05)


def is_reserved_only(m: Mount) -> bool:
    """Unprivileged users see (almost) nothing while root's reserve still has room."""
    s = m.stats
    if not (s and s.size_bytes):
        return False
    nothing = max(256 * 1024, min(s.size_bytes // 500, 256 * _MIB))
    return s.avail_bytes < nothing and s.free_bytes - s.avail_bytes >= nothing and not is_full(m)


def is_out_of_inodes(m: Mount) -> bool:
    """Free inodes below max(16, min(0.2 % of all, 5000)); filesystems without a fixed
    inode table (btrfs reports 0) never count."""
    s = m.stats
    if not (s and s.inodes_total):
        return False
    return s.inodes_avail < max(16, min(s.inodes_total // 500, 5000))


def mount_evidence(m: Mount) -> dict[str, Any]:
    """The mount and, when its statvfs answered, its space and inodes."""
    s = m.stats
    if s is None or s.outcome is not CallOutcome.OK:
        return {"mount_point": m.mount_point, "fstype": m.fstype, "source": m.source, "readonly": m.readonly,
                "statvfs": s.outcome.value if s else "not tried"}
    used = s.size_bytes - s.free_bytes
    return {
        "mount_point": m.mount_point,
        "fstype": m.fstype,
        "source": m.source,
        "size_bytes": s.size_bytes,
        "used_bytes": used,
        "free_bytes": s.free_bytes,
        "avail_bytes": s.avail_bytes,
        "reserved_bytes": s.reserved_bytes,
        "inodes_total": s.inodes_total,
        "inodes_free": s.inodes_free,
        "readonly": m.readonly,
    }


def _space_line(m: Mount) -> str:
    s = m.stats
    assert s is not None
    return (
        f"{m.mount_point} ({m.fstype} on {m.source}): {fmt_bytes(s.avail_bytes)} available to users, "
        f"{fmt_bytes(s.free_bytes)} free for root, of {fmt_bytes(s.size_bytes)}"
    )


class StorageMountsProbe(Probe):
    """Space, inodes, reserve and read-only state of every relevant mount."""

    name = "storage.mounts"
    findings = (
        "storage.full",
        "storage.low_space",
        "storage.reserved_only",
        "storage.inodes_exhausted",
        "storage.readonly",
        "storage.mount_hung",
    )
    cost = 1.0
    deadline_s = 2.0

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        mounts = measured_mounts(ctx)
        ok = [m for m in mounts if m.stats and m.stats.outcome is CallOutcome.OK]
        hung = [m for m in mounts if m.stats and m.stats.outcome is CallOutcome.HUNG]
        answered = [m for m in mounts if m.stats and m.stats.outcome is not CallOutcome.HUNG]
        checked = [m.mount_point for m in ok]
        if ok:
            yield from self._space(ok, checked)
        else:
            # Unknown is not absent: with no statvfs answer, nothing was checked.
            why = _no_answer(mounts)
            for fid in ("storage.full", "storage.low_space", "storage.reserved_only", "storage.inodes_exhausted"):
                yield unknown(fid, why)
        yield from self._readonly(ctx, mounts)
        if hung:
            yield present(
                "storage.mount_hung",
                "statvfs did not return for " + ", ".join(m.describe() for m in hung),
                mounts=[{"mount_point": m.mount_point, "fstype": m.fstype, "source": m.source} for m in hung],
            )
        elif answered:
            yield absent("storage.mount_hung", "every mount answered statvfs", checked=[m.mount_point for m in answered])
        else:
            yield unknown("storage.mount_hung", _no_answer(mounts))
        if not ok:
            return
        inodes = [m for m in ok if is_out_of_inodes(m)]
        if inodes:
            yield present(
                "storage.inodes_exhausted",
                "; ".join(
                    f"{m.mount_point}: {m.stats.inodes_avail:,} of {m.stats.inodes_total:,} inodes free"
                    for m in inodes
                    if m.stats
                ),
                mounts=[mount_evidence(m) for m in inodes],
            )
        else:
            yield absent("storage.inodes_exhausted", "every filesystem has free inodes", checked=checked)

    def _readonly(self, ctx: ProbeContext, mounts: list[Mount]) -> Iterable[Finding]:
        """Read-only state is the mount table's (mountinfo), so every mount is judged, whether or
        not its statvfs answered."""
        if not mounts:
            yield unknown("storage.readonly", "the mount table lists no filesystem to judge")
            return
        fstab = fstab_options(ctx)
        must_write = {mp for mp in (self._holder(p, mounts) for p in ctx.target.writable + ctx.target.logs) if mp}
        readonly = [
            m
            for m in mounts
            if m.readonly
            and (m.mount_point in must_write or (is_disk_fs(m) and "ro" not in fstab.get(m.mount_point, set())))
        ]
        if readonly:
            yield present(
                "storage.readonly",
                "; ".join(f"{m.describe()} is mounted read-only" for m in readonly),
                mounts=[mount_evidence(m) | {"fstab_options": sorted(fstab.get(m.mount_point, []))} for m in readonly],
            )
        else:
            yield absent("storage.readonly", "no filesystem that should be writable is read-only",
                         checked=[m.mount_point for m in mounts])

    @staticmethod
    def _holder(path: str, mounts: list[Mount]) -> str:
        m = mount_of(path, mounts)
        return m.mount_point if m else ""

    @staticmethod
    def _space(ok: list[Mount], checked: list[str]) -> Iterable[Finding]:
        for fid, test, none_text in (
            ("storage.full", is_full, "every filesystem has free blocks for root"),
            ("storage.low_space", is_low, "every filesystem has at least 5 % available"),
            ("storage.reserved_only", is_reserved_only, "no filesystem is down to its root reserve"),
        ):
            hits = [m for m in ok if test(m)]
            if hits:
                yield present(fid, "; ".join(_space_line(m) for m in hits), mounts=[mount_evidence(m) for m in hits])
            else:
                yield absent(fid, none_text, checked=checked)


def _no_answer(mounts: list[Mount]) -> str:
    """Why no filesystem could be measured: none listed, or each mount's statvfs outcome."""
    if not mounts:
        return "the mount table lists no filesystem to measure"
    outcomes = sorted({m.stats.outcome.value if m.stats else "not tried" for m in mounts})
    return f"statvfs answered for none of the {len(mounts)} mounts ({', '.join(outcomes)})"
