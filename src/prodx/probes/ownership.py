"""Owners and modes of the writable paths and what lies under them.

Reads ``stat`` of each writable path, of the folders leading to it, and of entries below
it (at most ``_MAX_DEPTH`` levels and ``_MAX_ENTRIES`` entries per path). Finds the
classic "cache folder recreated by root while the app runs as www-data".
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterable
from typing import Any

from prodx.host.base import UserInfo
from prodx.model import Finding, absent, present, unknown
from prodx.probes.base import Probe, ProbeContext
from prodx.probes.permissions import allows, first_denial

_MAX_DEPTH = 3
_MAX_ENTRIES = 5000
_MAX_SAMPLES = 10


def _mismatches(ctx: ProbeContext, root: str, user: UserInfo, budget_end: float) -> tuple[list[dict[str, Any]], bool]:
    """Entries under ``root`` the user does not own and cannot write; and whether the walk
    was cut short by its entry or time budget."""
    host = ctx.host
    out: list[dict[str, Any]] = []
    stack = [(root, 0)]
    seen = 0
    while stack:
        path, depth = stack.pop()
        try:
            names = host.listdir(path)
        except OSError:
            continue  # vanished or unreadable: the write test and path check speak for it
        for name in names:
            seen += 1
            if seen > _MAX_ENTRIES or time.monotonic() > budget_end:
                return out, True
            child = f"{path.rstrip('/')}/{name}"
            try:
                st = host.lstat(child)
            except OSError:
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            if not (is_dir or stat.S_ISREG(st.st_mode)):
                continue
            need = 3 if is_dir else 2
            if st.st_uid != user.uid and not allows(st, user, need):
                out.append(
                    {
                        "path": child,
                        "owner": host.user_name(st.st_uid),
                        "group": host.group_name(st.st_gid),
                        "mode": stat.filemode(st.st_mode),
                        "mtime": int(st.st_mtime),
                        "kind": "dir" if is_dir else "file",
                    }
                )
            if is_dir and depth + 1 < _MAX_DEPTH:
                stack.append((child, depth + 1))
    return out, False


class OwnershipProbe(Probe):
    """Do owners and modes let the app's user write where it must?"""

    name = "storage.ownership"
    findings = ("storage.path_denied", "storage.owner_mismatch")
    cost = 1.0
    deadline_s = 2.0

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        user = ctx.target.user
        dirs = [d for d in ctx.target.writable if ctx.host.exists(d)]
        if user is None or not ctx.target.writable_from_profile:
            reason = "the app's writable paths are not known: give them in a profile ([app] writable)"
            yield from (unknown(f, reason) for f in self.findings)
            return
        denials = []
        for d in dirs:
            writer = ctx.writer_of(d) or user
            denial = first_denial(ctx.host, d, writer)
            if denial:
                denials.append(denial.__dict__ | {"writable": d, "text": denial.describe(writer.name)})
        if denials:
            yield present("storage.path_denied", "; ".join(x["text"] for x in denials), denials=denials, user=user.name)
        else:
            yield absent("storage.path_denied", f"{user.name} may write every writable path by its mode bits", checked=dirs)
        end = time.monotonic() + self.deadline_s / 2
        found: list[dict[str, Any]] = []
        partial = False
        for d in dirs:
            if ctx.host.stat(d).st_mode & stat.S_ISVTX:
                continue  # a sticky shared folder (/tmp): other users' files are expected there
            items, cut = _mismatches(ctx, d, ctx.writer_of(d) or user, end)
            found += items
            partial = partial or cut
        if found:
            found.sort(key=lambda x: (x["path"].count(os.sep), x["path"]))
            sample = found[:_MAX_SAMPLES]
            first = sample[0]
            yield present(
                "storage.owner_mismatch",
                f"{len(found)} entr{'y' if len(found) == 1 else 'ies'} under the writable paths not writable by "
                f"{user.name}, e.g. {first['path']} ({first['mode']} {first['owner']}:{first['group']})",
                entries=sample,
                count=len(found),
                partial=partial,
                user=user.name,
            )
        elif partial:
            yield unknown("storage.owner_mismatch", "the walk under the writable paths ran out of its budget")
        else:
            yield absent("storage.owner_mismatch", f"everything under the writable paths is writable by {user.name}", checked=dirs)
