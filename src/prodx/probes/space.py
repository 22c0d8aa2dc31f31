"""What fills a filesystem that is full, near full or out of inodes.

Scans each such mount with the space scanner (``prodx.scanners.space``: never crosses into
other mounts, stops at its time budget and says so) and names the kind of the biggest
consumer — a log, a cache, a session folder, a backup — by the hog rules in the KB
(``kb/data/hogs.yaml``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any

from prodx.host.base import CallOutcome
from prodx.model import Finding, absent, present
from prodx.probes.base import Probe, ProbeContext
from prodx.probes.mounts import Mount, measured_mounts
from prodx.probes.storage import is_full, is_low, is_out_of_inodes, is_reserved_only
from prodx.units import fmt_bytes

HOG_FINDINGS = ("storage.hog_backup", "storage.hog_cache", "storage.hog_log", "storage.hog_sessions")
_SCAN_BUDGET_S = 1.6
_CANDIDATES = 3


def short_mounts(ctx: ProbeContext) -> list[Mount]:
    """Mounts that are full, low, down to the root reserve or out of inodes."""
    return [
        m
        for m in measured_mounts(ctx)
        if m.stats
        and m.stats.outcome is CallOutcome.OK
        and (is_full(m) or is_low(m) or is_reserved_only(m) or is_out_of_inodes(m))
    ]


def classify(
    report: Any, rules: list[dict[str, Any]], used_bytes: int, used_inodes: int, prefix: tuple[str, str] = ("", "")
) -> list[dict[str, Any]]:
    """The hog rules that the scan's biggest consumers match, first match per finding.

    Pure function of a ``prodx.space/1`` document (``files_by_bytes``, ``dirs_by_bytes``,
    ``dirs_by_inodes``). ``prefix`` (scanned root, host path) maps scanned paths back to
    the host's. An empty list means no consumer large enough matches any rule.
    """
    scanned_root, host_root = prefix

    def host_path(path: str) -> str:
        return host_root + path[len(scanned_root):] if scanned_root and path.startswith(scanned_root) else path

    hits: dict[str, dict[str, Any]] = {}
    for rule in rules:
        if rule["finding"] in hits:
            continue
        file_res = [re.compile(p) for p in rule.get("files", [])]
        dir_res = [re.compile(p) for p in rule.get("dirs", [])]
        if rule["measure"] == "bytes":
            whole = used_bytes or 1
            consumers = [(host_path(f["path"]), f["bytes"], file_res) for f in report["files_by_bytes"][:_CANDIDATES]]
            consumers += [(host_path(d["path"]), d["bytes"], dir_res) for d in report["dirs_by_bytes"][:_CANDIDATES]]
        else:
            whole = used_inodes or 1
            consumers = [(host_path(d["path"]), d["inodes"], dir_res) for d in report["dirs_by_inodes"][:_CANDIDATES]]
        for path, amount, patterns in consumers:
            share = amount / whole
            if share >= rule["min_share"] and any(p.search(path) for p in patterns):
                hits[rule["finding"]] = {
                    "kind": rule["kind"],
                    "path": path,
                    "measure": rule["measure"],
                    "amount": amount,
                    "share": round(share, 3),
                }
                break
    return [hits[k] | {"finding": k} for k in sorted(hits)]


class SpaceProbe(Probe):
    """Which log, cache, session folder or backup fills the short filesystems?"""

    name = "storage.space"
    findings = HOG_FINDINGS
    cost = 2.0
    deadline_s = 2.5

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        mounts = short_mounts(ctx)
        if not mounts:
            for fid in self.findings:
                yield absent(fid, "no filesystem is short of space or inodes")
            return
        end = time.monotonic() + _SCAN_BUDGET_S
        hits: dict[str, list[dict[str, Any]]] = {}
        scanned = []
        for m in mounts:
            remaining = end - time.monotonic()
            if remaining <= 0.05:
                break
            report = ctx.host.scan_space(m.mount_point, remaining)
            s = m.stats
            assert s is not None
            used_inodes = s.inodes_total - s.inodes_free
            scanned.append({"mount_point": m.mount_point, "partial": report["partial"], "reason": report["partial_reason"]})
            prefix = (report["root"].rstrip("/"), m.mount_point.rstrip("/"))
            for hit in classify(report, ctx.kb.hogs, s.size_bytes - s.free_bytes, used_inodes, prefix):
                hit |= {"mount_point": m.mount_point, "partial": report["partial"]}
                hits.setdefault(hit.pop("finding"), []).append(hit)
        for fid in self.findings:
            if fid in hits:
                yield present(fid, "; ".join(_describe(h) for h in hits[fid]), hogs=hits[fid])
            else:
                yield absent(fid, "the biggest consumers are not of this kind", scanned=scanned)


def _describe(hit: dict[str, Any]) -> str:
    amount = fmt_bytes(hit["amount"]) if hit["measure"] == "bytes" else f"{hit['amount']:,} files"
    partial = " (partial scan)" if hit["partial"] else ""
    return f"{hit['kind']} {hit['path']} holds {amount}, {hit['share']:.0%} of {hit['mount_point']}{partial}"
