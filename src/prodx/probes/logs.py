"""The app's logs: known failure signatures, a last line cut off, a log gone silent, and
the kernel log.

Reads bounded tails (``TAIL_BYTES``) of: the profile's logs, well-known service logs
(``kb/data/locations.yaml``) and every ``.log`` file a running process holds open; and the
kernel ring buffer through ``dmesg`` (falling back to kern.log). Never a whole file.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prodx.model import Finding, absent, present, unknown
from prodx.probes.base import Probe, ProbeContext
from prodx.probes.openfiles import open_paths

TAIL_BYTES = 1 << 20
#: Signature hits older than this are history, not the current failure.
RECENT_S = 24 * 3600
#: A log counts as silent when its age exceeds both this and _SILENT_FACTOR × its median gap.
_SILENT_MIN_S = 600
_SILENT_FACTOR = 20
_MIN_LINES_FOR_RHYTHM = 20
#: How long a log without a final newline must stay unchanged to count as cut off.
_SETTLE_S = 0.1
_KERNEL_FINDINGS = ("log.kernel_fs_error", "log.kernel_io_error", "log.kernel_remount_ro", "log.kernel_remounted_ro")
#: Findings about one filesystem: its line names the device, e.g. "EXT4-fs (sdb1): ...".
_PER_FILESYSTEM = {"log.kernel_fs_error": False, "log.kernel_remount_ro": True, "log.kernel_remounted_ro": True}
_KERNEL_DEVICE = re.compile(
    r"(?:-fs|XFS|BTRFS)[^(]*\((?:device )?([\w.-]+)\)"  # EXT4-fs error (device sdb1)
    r"|journal on device ([\w.]+?)(?:-\d+)?[.\s]"  # Aborting journal on device sdb1-8.
)
_DMESG_STAMP = re.compile(r"^\[\s*(\d+)\.\d+\]")
#: The block device of a device-level error line ("I/O error, dev loop3, sector 8",
#: "Buffer I/O error on dev sdb1, logical block 9").
_IO_DEVICE = re.compile(r"I/O error,? (?:on )?dev ([\w.-]+)|I/O error on (?:dev|device) ([\w.-]+)"
                        r"|JBD2: .* for ([\w.]+?)-\d+\.?\s*$")  # JBD2: I/O error when updating journal superblock for loop0-8.
#: A device put to a new use: a loop device attached to an image, a filesystem mounted.
_DEVICE_FRESH = re.compile(r"\b(loop\d+): detected capacity change from 0 to|EXT4-fs \(([\w.-]+)\): mounted filesystem"
                           r"|XFS \(([\w.-]+)\): Mounting")


def matcher(ctx: ProbeContext) -> Any:
    """The compiled signature catalogue of the run's KB, built once."""

    def compute() -> Any:
        from prodx.scanners.logscan import Matcher, Signature

        sigs = [
            Signature(
                id=s["id"],
                finding=s["finding"],
                pattern=s["pattern"],
                description=s["description"],
                ignore_case=bool(s.get("ignore_case", False)),
                examples=tuple(s.get("examples", ())),
            )
            for s in ctx.kb.signatures
        ]
        return Matcher(sigs)

    return ctx.fact("matcher", compute)


#: Scratch space, not where services keep logs: a build's output redirected to /tmp/x.log
#: is not an app log (and is mid-line half the time).
_SCRATCH_DIRS = ("/tmp/", "/var/tmp/", "/dev/shm/", "/run/")


def app_logs(ctx: ProbeContext) -> list[str]:
    """The profile's logs, then ``.log`` files running processes hold open (not deleted,
    not in scratch directories)."""

    def compute() -> list[str]:
        files, _denied = open_paths(ctx)
        held = sorted(
            {
                f.target
                for f, _ in files
                if not f.deleted and f.target.endswith(".log") and not f.target.startswith(_SCRATCH_DIRS)
            }
        )
        return list(dict.fromkeys([*ctx.target.logs, *held]))

    return ctx.fact("app_logs", compute)


def writers(ctx: ProbeContext) -> dict[str, list[str]]:
    """Log path → names of the running processes holding it open."""

    def compute() -> dict[str, list[str]]:
        files, _denied = open_paths(ctx)
        out: dict[str, list[str]] = {}
        for f, pname in files:
            out.setdefault(f.target, []).append(pname)
        return out

    return ctx.fact("log_writers", compute)


def _recent(ts: str | None, now: float) -> bool:
    """True for a timestamp within RECENT_S of now, and for lines with no timestamp."""
    if ts is None:
        return True
    try:
        when = datetime.fromisoformat(ts).timestamp()
    except ValueError:
        return True
    return now - when <= RECENT_S


@dataclass(frozen=True)
class SignatureScan:
    """One scan of every log the signatures probe reads: ``read`` (paths scanned), ``errors``
    (paths that could not be), ``app_level`` (the app's and services' logs, not the system's)
    and ``hits``: one JSON hit per signature and file (``prodx.scanners.logscan``) with
    ``file``, for every signature of the KB whose last line is recent."""

    read: list[str]
    errors: list[str]
    app_level: frozenset[str]
    hits: list[dict[str, Any]]


def signature_scan(ctx: ProbeContext) -> SignatureScan:
    """The bounded tails (``TAIL_BYTES``) of the profile's logs, open ``.log`` files,
    well-known service logs and system logs, scanned once per run for every signature.

    Shared, not rescanned: a Hyperscan scratch space serves one scan at a time, and the
    probes that read these hits run at once.
    """

    def compute() -> SignatureScan:
        from prodx.scanners.logscan import scan_tail

        paths = list(app_logs(ctx))
        for pattern in ctx.kb.locations["service_logs"]:
            paths += [p for p in ctx.host.glob(pattern) if p not in paths]
        app_level = frozenset(paths)
        for pattern in ctx.kb.locations["system_logs"]:
            paths += [p for p in ctx.host.glob(pattern) if p not in paths]
        m = matcher(ctx)
        now = ctx.host.now()
        read, errors, hits = [], [], []
        for path in paths:
            if not ctx.host.exists(path):
                continue
            fs = scan_tail(ctx.host.real_path(path), m, tail_bytes=TAIL_BYTES)
            if fs.error:
                errors.append(f"{path}: {fs.error}")
                continue
            read.append(path)
            hits += [h.to_json() | {"file": path} for h in fs.sorted_hits() if _recent(h.last_ts, now)]
        return SignatureScan(read, errors, app_level, hits)

    return ctx.fact("logs.signature_scan", compute)


def first_error(ctx: ProbeContext) -> dict[str, Any] | None:
    """The earliest error of the last 24 h in the app's and services' logs (not the system
    logs), as a signature hit with ``ts`` (epoch seconds): when the failure at hand began,
    as far as the logs tell. None when none of those logs holds a dated error.

    Every signature counts except the start lines of services (ids ending ``_started``).
    """
    scan = signature_scan(ctx)
    dated = []
    for h in scan.hits:
        if h["file"] in scan.app_level and not h["signature"].endswith("_started") and h["first_ts"]:
            try:
                dated.append(h | {"ts": datetime.fromisoformat(h["first_ts"].replace("Z", "+00:00")).timestamp()})
            except ValueError:
                continue
    return min(dated, key=lambda h: h["ts"]) if dated else None


class LogSignaturesProbe(Probe):
    """Known failure messages in the tails of the app's and services' logs."""

    name = "logs.signatures"
    findings = (
        "log.cache_write_failed",
        "log.connection_refused",
        "log.db_write_failed",
        "log.dns_failure",
        "log.enospc",
        "log.fork_failed",
        "log.io_error",
        "log.oom_kill",
        "log.out_of_memory",
        "log.permission_denied",
        "log.php_memory_exhausted",
        "log.quota_exceeded",
        "log.readonly_fs",
        "log.session_write_failed",
        "log.tls_error",
        "log.too_many_open_files",
        "log.upstream_timeout",
        "log.worker_pool_full",
    )
    cost = 1.0
    deadline_s = 2.0

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        scan = signature_scan(ctx)
        read, errors = scan.read, scan.errors
        hits: dict[str, list[dict[str, Any]]] = {}
        for h in scan.hits:
            if h["finding"] in self.findings:
                hits.setdefault(h["finding"], []).append(h)
        if not read:
            reason = "no log could be read: " + "; ".join(errors) if errors else "no logs found (give them in the profile)"
            yield from (unknown(f, reason) for f in self.findings)
            return
        app_read = [p for p in read if p in scan.app_level]
        for fid in self.findings:
            if fid in hits:
                items = sorted(hits[fid], key=lambda h: -h["count"])
                top = items[0]
                total = sum(h["count"] for h in items)
                when = f", last {top['last_ts']}" if top["last_ts"] else ""
                yield present(
                    fid,
                    f"{total} line(s) in {len({h['file'] for h in items})} log(s), e.g. {top['file']}{when}: {top['example']}",
                    hits=items[:5],
                )
            elif app_read:
                yield absent(fid, f"not in the last {TAIL_BYTES >> 20} MiB of {len(read)} log(s)", logs=read, unreadable=errors)
            else:
                yield unknown(
                    fid,
                    f"only system logs were readable ({', '.join(read)}); the app's and web server's logs are "
                    "not known: give them in a profile",
                )


class LogTailsProbe(Probe):
    """Is an app log cut off mid-line, or silent while its writer runs?"""

    name = "logs.tails"
    findings = ("log.silent", "log.truncated_tail")
    cost = 1.0
    deadline_s = 2.0

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        from prodx.redact import redact
        from prodx.scanners.timestamps import parse_ts

        paths = [p for p in app_logs(ctx) if ctx.host.exists(p)]
        if not paths:
            yield from (unknown(f, "no app logs known or open (give them in the profile)") for f in self.findings)
            return
        now = ctx.host.now()
        running = {p.name for p in ctx.processes()}
        services = [s for s in ctx.target.services if s in running]
        held_by = writers(ctx)
        cut, silent = [], []
        for path in paths:
            try:
                st = ctx.host.stat(path)
                tail = ctx.host.read_tail(path, 64 * 1024)
            except OSError as exc:
                yield from (unknown(f, f"cannot read {path}: {exc.strerror}") for f in self.findings)
                return
            age_s = now - st.st_mtime
            if tail and not tail.endswith(b"\n"):
                last = redact(tail.rsplit(b"\n", 1)[-1][-200:].decode("utf-8", "replace"))
                cut.append({"path": path, "last_line_end": last, "age_s": round(age_s), "size": st.st_size})
            writer = held_by.get(path) or services
            gaps = _gaps([parse_ts(line) for line in tail.split(b"\n")[-200:]])
            if writer and len(gaps) >= _MIN_LINES_FOR_RHYTHM:
                rhythm = statistics.median(gaps)
                if age_s > max(_SILENT_MIN_S, _SILENT_FACTOR * rhythm):
                    silent.append(
                        {"path": path, "age_s": round(age_s), "median_gap_s": rhythm, "writers": sorted(set(writer))}
                    )
        cut = _still_cut(ctx, cut)
        if cut:
            yield present(
                "log.truncated_tail",
                "; ".join(f"{c['path']} ends mid-line: …{c['last_line_end']!r}" for c in cut),
                logs=cut,
            )
        else:
            yield absent("log.truncated_tail", "every app log ends with a complete line", logs=paths)
        if silent:
            yield present(
                "log.silent",
                "; ".join(
                    f"{s['path']} last written {s['age_s'] // 60} min ago, though it usually gets a line every "
                    f"{s['median_gap_s']:.0f} s and {', '.join(s['writers'])} still runs"
                    for s in silent
                ),
                logs=silent,
            )
        else:
            yield absent("log.silent", "no app log has gone quiet against its own rhythm", logs=paths)


def _still_cut(ctx: ProbeContext, cut: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The logs still unchanged a moment later: a writer caught mid-line has moved on."""
    if not cut:
        return cut
    time.sleep(_SETTLE_S)
    out = []
    for item in cut:
        try:
            if ctx.host.stat(item["path"]).st_size == item.pop("size"):
                out.append(item)
        except OSError:
            continue
    return out


def _gaps(stamps: list[str | None]) -> list[float]:
    times = []
    for ts in stamps:
        if ts:
            try:
                times.append(datetime.fromisoformat(ts).timestamp())
            except ValueError:
                continue
    return [max(0.0, b - a) for a, b in zip(times, times[1:])]


class KernelLogProbe(Probe):
    """Filesystem errors, I/O errors and read-only remounts in the kernel log."""

    name = "logs.kernel"
    findings = _KERNEL_FINDINGS
    cost = 1.0
    deadline_s = 2.0

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        lines, source = self._kernel_lines(ctx)
        if lines is None:
            reason = "cannot read the kernel log: dmesg needs root (kernel.dmesg_restrict) and no kern.log is readable"
            yield from (unknown(f, reason) for f in self.findings)
            return
        sigs = [s for s in ctx.kb.signatures if s["finding"] in self.findings]
        compiled = [(s, re.compile(s["pattern"], re.I if s.get("ignore_case") else 0)) for s in sigs]
        mounted = _mounted_devices(ctx)
        fresh = _last_fresh_use(lines)
        hits: dict[str, list[str]] = {}
        for i, line in enumerate(lines):
            for sig, rx in compiled:
                if rx.search(line) and _about_current_mount(sig["finding"], line, mounted) and not _superseded(i, line, fresh, mounted):
                    hits.setdefault(sig["finding"], []).append(line.strip())
                    break
        from prodx.redact import redact

        for fid in self.findings:
            if fid in hits:
                items = hits[fid]
                yield present(fid, f"{len(items)} line(s) in {source}, last: {redact(items[-1])[:300]}", source=source, count=len(items), last_lines=[redact(x)[:300] for x in items[-3:]])
            else:
                yield absent(fid, f"not in {source}", source=source)

    @staticmethod
    def _kernel_lines(ctx: ProbeContext) -> tuple[list[str] | None, str]:
        """Recent kernel lines (within RECENT_S) from dmesg, else the tail of kern.log."""
        result = ctx.host.run(["dmesg"], timeout_s=1.0)
        if result.ok and result.stdout:
            try:
                uptime = float(ctx.host.read_text("/proc/uptime").split()[0])
            except (OSError, ValueError, IndexError):
                uptime = None
            lines = []
            for line in result.stdout.splitlines():
                stamp = _DMESG_STAMP.match(line)
                if uptime is None or not stamp or uptime - int(stamp.group(1)) <= RECENT_S:
                    lines.append(line)
            return lines, "dmesg"
        for pattern in ctx.kb.locations["kernel_logs"]:
            for path in ctx.host.glob(pattern):
                try:
                    text = ctx.host.read_tail(path, TAIL_BYTES).decode("utf-8", "replace")
                except OSError:
                    continue
                return text.splitlines()[1:], path
        return None, ""


def _mounted_devices(ctx: ProbeContext) -> dict[str, bool] | None:
    """Device name (``sdb1``, ``loop0``) → mounted read-only, for every current mount;
    None when the mount table cannot be read."""
    from prodx.probes.mounts import parse_mountinfo

    try:
        table = parse_mountinfo(ctx.host.read_text("/proc/self/mountinfo"))
    except OSError:
        return None
    out: dict[str, bool] = {}
    for m in table:
        name = m.source.rsplit("/", 1)[-1]
        out[name] = out.get(name, True) and m.readonly
    return out


def _last_fresh_use(lines: list[str]) -> dict[str, int]:
    """Device name → index of the last line that shows it put to a new use (attached, mounted)."""
    out = {}
    for i, line in enumerate(lines):
        m = _DEVICE_FRESH.search(line)
        if m:
            out[next(g for g in m.groups() if g)] = i
    return out


def _same_disk(a: str, b: str) -> bool:
    """Whether two kernel device names are one disk or a disk and its partition.

    >>> [_same_disk("sdb", "sdb1"), _same_disk("loop1", "loop1p2"), _same_disk("loop1", "loop10"), _same_disk("sda", "sdb")]
    [True, True, False, False]
    """
    short, long_ = sorted((a, b), key=len)
    if short == long_:
        return True
    rest = long_[len(short):] if long_.startswith(short) else ""
    return bool(re.fullmatch(r"p\d+" if short[-1].isdigit() else r"\d+", rest))


def _superseded(i: int, line: str, fresh: dict[str, int], mounted: dict[str, bool] | None) -> bool:
    """Whether a kernel line about a device is older than that device's present use: the
    device (or its disk) was attached or mounted afresh after it, or it is a loop device
    mounted nowhere now. Loop devices and partitions are reused (another image, a replaced
    disk); their old errors say nothing about what they hold today."""
    m = _IO_DEVICE.search(line) or _KERNEL_DEVICE.search(line)
    name = next((g for g in m.groups() if g), None) if m else None
    if name is None:
        return False
    if any(j > i and _same_disk(name, dev) for dev, j in fresh.items()):
        return True
    if name.startswith("loop") and mounted is not None:
        return not any(_same_disk(name, dev) for dev in mounted)
    return False


def _about_current_mount(finding: str, line: str, mounted: dict[str, bool] | None) -> bool:
    """Whether a kernel line about one filesystem concerns one mounted now (read-only, for a
    remount). Device names are reused (loop0, a replaced sdb), so lines about filesystems
    since unmounted or remounted read-write are history, not the present failure."""
    if finding not in _PER_FILESYSTEM or mounted is None:
        return True
    device = _KERNEL_DEVICE.search(line)
    if device is None:
        return True
    name = device.group(1) or device.group(2)
    return name in mounted and (mounted[name] or not _PER_FILESYSTEM[finding])
