"""The write test (SPEC §3): one small file created, written, fsynced, closed and removed in
each writable path, as the app's user. The only probe that writes; ``--no-write-test``
turns it off.

The errno is classified: ENOSPC is told apart by the filesystem's statvfs (no inodes, the
root reserve, no blocks), EACCES/EPERM names the path component that refuses and its owner
and mode, and a write accepted but failing at fsync or close still counts as failed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prodx.host.base import CallOutcome, UserInfo, WriteResult
from prodx.model import Finding, absent, present, unknown
from prodx.probes.base import Probe, ProbeContext
from prodx.probes.mounts import is_disk_fs, measured_mounts, mount_of
from prodx.probes.permissions import first_denial
from prodx.probes.storage import is_full, is_out_of_inodes, is_reserved_only

_BY_ERRNO = {
    "ENOSPC": "storage.write_enospc",
    "EACCES": "storage.write_eacces",
    "EPERM": "storage.write_eacces",
    "EROFS": "storage.write_erofs",
    "EDQUOT": "storage.write_edquot",
    "EIO": "storage.write_eio",
}
#: Per directory; the child is abandoned after this (a hung mount).
_WRITE_BOUND_S = 1.0


class WriteTestProbe(Probe):
    """Can the app's user create a file in each writable path?"""

    name = "storage.write_test"
    findings = tuple(sorted(set(_BY_ERRNO.values())))
    cost = 1.0
    deadline_s = 2.5
    writes = True

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        user = ctx.target.user
        dirs = [d for d in ctx.target.writable if ctx.host.exists(d)]
        if user is None:
            reason = f"user {ctx.target.user_name!r} is not in /etc/passwd" if ctx.target.user_name else "no app user known"
            yield from (unknown(f, reason) for f in self.findings)
            return
        if not dirs:
            yield from (unknown(f, "no writable path exists to test") for f in self.findings)
            return
        writers = {d: ctx.writer_of(d) or user for d in dirs}
        if not ctx.host.is_root and any(w.uid != ctx.host.effective_uid for w in writers.values()):
            reason = f"needs root to test writes as {user.name} (run with sudo, or --as yourself)"
            yield from (unknown(f, reason) for f in self.findings)
            return
        failures: dict[str, list[dict[str, Any]]] = {}
        tested = []
        for directory in dirs:
            writer = writers[directory]
            result = ctx.host.write_test(directory, writer, _WRITE_BOUND_S)
            tested.append(directory)
            if result.outcome is not CallOutcome.OK or result.ok:
                continue
            fid = _BY_ERRNO.get(result.errno_name)
            if fid:
                failures.setdefault(fid, []).append(self._explain(ctx, result, writer))
        untested = _untested_problem_mounts(ctx, tested)
        for fid in self.findings:
            if fid in failures:
                items = failures[fid]
                yield present(fid, _summary(items), failures=items, user=items[0]["user"])
            elif untested:
                # A clean write in /tmp says nothing about the full filesystem next door.
                yield unknown(
                    fid,
                    f"the paths tested ({', '.join(tested)}) are not on {', '.join(untested)}, which is short of "
                    "space or read-only: give the app's writable paths in a profile",
                )
            else:
                yield absent(fid, f"no {fid.rsplit('_', 1)[1].upper()} writing as {user.name}", tested=tested, user=user.name)

    @staticmethod
    def _explain(ctx: ProbeContext, result: WriteResult, user: UserInfo) -> dict[str, Any]:
        item: dict[str, Any] = {
            "directory": result.directory,
            "errno": result.errno_name,
            "stage": result.stage.value,
        }
        text = f"{result.stage.value}() failed with {result.errno_name}"
        if result.errno_name == "ENOSPC":
            mount = mount_of(result.directory, measured_mounts(ctx))
            if mount and mount.stats and mount.stats.outcome is CallOutcome.OK:
                if is_out_of_inodes(mount):
                    meaning = "no free inodes (blocks are left)"
                elif is_reserved_only(mount):
                    meaning = "only the blocks reserved for root are left"
                elif mount.stats.free_bytes > 0 and mount.stats.avail_bytes > 0:
                    meaning = "blocks are left: a quota, or filesystem metadata space"
                else:
                    meaning = "no free blocks"
                item |= {"mount_point": mount.mount_point, "meaning": meaning}
                text += f" ({meaning} on {mount.mount_point})"
        elif result.errno_name in ("EACCES", "EPERM"):
            denial = first_denial(ctx.host, result.directory, user)
            if denial:
                item |= {"component": denial.path, "owner": denial.owner, "group": denial.group, "mode": denial.mode}
                text += f" ({denial.describe(user.name)})"
            else:
                text += " (mode bits allow it: an ACL, immutable flag or SELinux/AppArmor refuses)"
        if result.stage.value in ("fsync", "close"):
            text += "; the write itself was accepted: delayed allocation failed later"
        item["why"] = text
        item["user"] = user.name
        item["text"] = f"{text}, as {user.name} in {result.directory}"
        return item


def _untested_problem_mounts(ctx: ProbeContext, tested: list[str]) -> list[str]:
    """Mount points that are full, out of inodes or read-only and hold none of ``tested``."""
    mounts = [m for m in measured_mounts(ctx) if m.stats and m.stats.outcome is CallOutcome.OK]
    covered = {m.mount_point for m in (mount_of(d, mounts) for d in tested) if m}
    return [
        m.mount_point
        for m in mounts
        if m.mount_point not in covered
        and (is_full(m) or is_reserved_only(m) or is_out_of_inodes(m) or (m.readonly and is_disk_fs(m)))
    ]


def _summary(items: list[dict[str, Any]]) -> str:
    """One line per distinct failure and user, naming every directory it hit."""
    groups: dict[tuple[str, str], list[str]] = {}
    for item in items:
        groups.setdefault((item["why"], item["user"]), []).append(item["directory"])
    return "; ".join(f"{why} as {user} in {', '.join(dirs)}" for (why, user), dirs in groups.items())
