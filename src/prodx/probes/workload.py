"""Workload: a surge of requests, cron jobs piling up on each other, backup jobs at work.

Reads, through the host:

- the last ``ACCESS_TAIL_BYTES`` of the access logs (the same ones ``http.access_log``
  reads), combined format, parsed by ``prodx.accesslog``::

      203.0.113.9 - - [10/Oct/2026:13:55:36 +0200] "GET / HTTP/1.1" 200 157 "-" "curl/8.5.0"

  and compares requests per second in the last 5 minutes with the hour before;
- ``/proc/net/tcp{,6}`` (shared with the network probes) for ESTABLISHED sockets on the
  ports web servers listen on, and ``/proc/PID/fd`` to know which listener is a web server's
  (``nginx``, ``apache2``... from ``kb/data/workload.yaml``);
- the process table and ``/proc/PID/stat`` (parent pid) to find cron's descendants
  (``cron`` → ``cron`` → ``/bin/sh -c /srv/rebuild.sh`` → ``/srv/rebuild.sh``) and count runs
  of the same command line alive at once;
- backup and dump processes (``tar czf``, ``pg_dump``, ``mysqldump``, ``rsync``, ``borg``,
  ``restic``... as data in ``kb/data/workload.yaml``), the files they hold open for writing,
  and backup archives written in the last hours in backup folders (``/var/backups``,
  ``/backup*`` and ``backup*``/``dump*`` folders at the top of every mounted disk).

No access log, or one that does not reach back before the last 5 minutes, leaves the surge
unknown; no web server listening leaves the connection count unknown.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prodx.accesslog import ErrorRate, error_rate
from prodx.host.base import CallOutcome
from prodx.model import Finding, absent, present, unknown
from prodx.probes.base import Probe, ProbeContext
from prodx.units import fmt_bytes

RECENT_S = 300
BASELINE_S = 3600
ACCESS_TAIL_BYTES = 4 << 20
#: Reread with this bound when the first tail does not reach back before the recent window.
ACCESS_TAIL_MAX_BYTES = 32 << 20
#: The baseline must cover at least this much of the hour to compare rates.
MIN_BASELINE_COVERED_S = 600
#: A surge: at least this many requests in the recent window...
SURGE_MIN_REQUESTS = 300
#: ...at this many times the baseline rate.
SURGE_FACTOR = 4.0
#: Runs of one cron job alive at once that make a pile-up, not an occasional overrun.
PILEUP_RUNS = 3
#: Established connections to the web server's ports that count as many.
CONNECTIONS_HIGH = 256
#: A backup archive written this recently...
ARCHIVE_RECENT_S = 6 * 3600
#: ...holding at least this share of its filesystem (and at least ARCHIVE_MIN_BYTES).
ARCHIVE_MIN_SHARE = 0.10
ARCHIVE_MIN_BYTES = 1 << 20
_MAX_ENTRIES = 4000
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "busybox"})
_NETWORK_FSTYPES = ("nfs", "nfs4", "cifs", "smb3", "fuse", "ceph", "glusterfs", "9p")
_RULES_PATH = Path(__file__).resolve().parent.parent / "kb" / "data" / "workload.yaml"


@functools.lru_cache(maxsize=1)
def rules() -> dict[str, Any]:
    """``kb/data/workload.yaml``, validated against ``kb/schema/workload.json``."""
    from prodx.kb.loader import load_yaml

    return load_yaml(_RULES_PATH, "workload")


# ---- pure parts ---------------------------------------------------------------------------


def request_rates(rate: ErrorRate, recent_s: float = RECENT_S) -> tuple[float, float | None]:
    """(requests per second in the recent window, in the baseline window); the baseline rate
    is None when the log covers less than MIN_BASELINE_COVERED_S before the recent window.

    >>> request_rates(ErrorRate(3000, 0, 3600, 0, 3600, 0))
    (10.0, 1.0)
    >>> request_rates(ErrorRate(30, 0, 0, 0, 0, 0))
    (0.1, None)
    """
    recent = rate.recent_requests / recent_s
    if rate.baseline_covered_s < MIN_BASELINE_COVERED_S:
        return recent, None
    return recent, rate.baseline_requests / rate.baseline_covered_s


def is_surge(rate: ErrorRate, recent_s: float = RECENT_S) -> bool | None:
    """True when the recent rate is at least SURGE_FACTOR times the baseline's with at least
    SURGE_MIN_REQUESTS requests; None when the baseline is too short to compare.

    >>> is_surge(ErrorRate(3000, 0, 3600, 0, 3600, 0)), is_surge(ErrorRate(400, 0, 3600, 0, 3600, 0))
    (True, False)
    >>> is_surge(ErrorRate(100, 0, 0, 0, 3600, 0)), is_surge(ErrorRate(900, 0, 10, 0, 60, 0)) is None
    (False, True)
    """
    if rate.recent_requests < SURGE_MIN_REQUESTS:
        return False
    recent, baseline = request_rates(rate, recent_s)
    if baseline is None:
        return None
    return recent >= SURGE_FACTOR * baseline


@dataclass(frozen=True)
class Task:
    """One process as the cron judgement needs it."""

    pid: int
    ppid: int
    name: str
    cmdline: tuple[str, ...]
    create_time: float


def cron_runs(tasks: Sequence[Task], daemons: Iterable[str]) -> list[dict[str, Any]]:
    """Command lines that cron started and that run more than once at the same time.

    A cron *run* is the process right below a cron daemon process (real cron forks a child
    ``cron`` per job, which runs ``/bin/sh -c CMD``); processes with the same command line in
    distinct runs are overlapping instances. Groups are sorted by instances, then the job's own
    command (the shallowest below its run that is not a ``sh -c`` wrapper) first; empty when no
    command runs twice.

    >>> t = [Task(1, 0, "cron", ("/usr/sbin/cron",), 0), Task(10, 1, "cron", ("/usr/sbin/cron",), 60),
    ...      Task(11, 10, "sh", ("/bin/sh", "-c", "/srv/rebuild"), 60), Task(12, 11, "rebuild", ("/srv/rebuild",), 60),
    ...      Task(20, 1, "cron", ("/usr/sbin/cron",), 120), Task(21, 20, "sh", ("/bin/sh", "-c", "/srv/rebuild"), 120),
    ...      Task(22, 21, "rebuild", ("/srv/rebuild",), 120), Task(23, 22, "rebuild", ("/srv/rebuild",), 121)]
    >>> [(g["command"], g["instances"], g["pids"]) for g in cron_runs(t, ["cron"])]
    [('/srv/rebuild', 2, [12, 22]), ('/bin/sh -c /srv/rebuild', 2, [11, 21])]
    """
    names = set(daemons)
    by_pid = {t.pid: t for t in tasks}
    groups: dict[tuple[str, ...], dict[int, tuple[Task, int]]] = {}
    for t in tasks:
        if t.name in names or not t.cmdline:
            continue
        run, node, depth = None, t, 0
        while depth < 64:
            parent = by_pid.get(node.ppid)
            if parent is None:
                break
            if parent.name in names:
                run = node.pid
                break
            node, depth = parent, depth + 1
        if run is None:
            continue
        members = groups.setdefault(t.cmdline, {})
        if run not in members or t.create_time < members[run][0].create_time:
            members[run] = (t, depth)
    out = []
    for cmdline, members in groups.items():
        if len(members) < 2:
            continue
        procs = sorted((m[0] for m in members.values()), key=lambda x: (x.create_time, x.pid))
        wrapper = os.path.basename(cmdline[0]) in _SHELLS and len(cmdline) > 1 and cmdline[1] == "-c"
        out.append({"command": shlex.join(cmdline)[:300], "instances": len(procs), "pids": [p.pid for p in procs],
                    "oldest_start": procs[0].create_time, "newest_start": procs[-1].create_time,
                    "wrapper": wrapper, "depth": min(m[1] for m in members.values())})
    out.sort(key=lambda g: (-g["instances"], g["wrapper"], g["depth"], g["oldest_start"], g["command"]))
    return out


def backup_kind(name: str, cmdline: Sequence[str], commands: Sequence[dict[str, Any]]) -> str | None:
    """What a process does as a backup (``archive``, ``dump``...), or None if it is none.

    ``needs_arg`` must appear in the command line: in the first argument as a letter for
    tar-style bundled options (``czf``), else as a whole word.

    >>> cmds = [{"name": "tar", "kind": "archive", "needs_arg": "c"}, {"name": "pg_dump", "kind": "dump"}]
    >>> backup_kind("tar", ["tar", "czf", "/backup/site.tgz", "/srv"], cmds), backup_kind("pg_dump", ["pg_dump", "shop"], cmds)
    ('archive', 'dump')
    >>> backup_kind("tar", ["tar", "xzf", "release.tgz"], cmds) is None, backup_kind("tar", ["tar", "--create", "-f", "x"], cmds)
    (True, 'archive')
    """
    for c in commands:
        if c["name"] != name and c["name"] != os.path.basename(cmdline[0] if cmdline else ""):
            continue
        need = c.get("needs_arg")
        if not need:
            return c["kind"]
        args = list(cmdline[1:])
        if name in ("tar", "bsdtar") and need == "c":
            first = args[0] if args else ""
            bundled = first and not first.startswith("--") and "c" in first.lstrip("-") and first.lstrip("-").isalpha()
            if bundled or "--create" in args or "-c" in args:
                return c["kind"]
            continue
        if need in args:
            return c["kind"]
    return None


def is_write_mode(fdinfo: str) -> bool:
    """Whether ``/proc/PID/fdinfo/FD`` shows the file open for writing (O_WRONLY or O_RDWR).

    >>> is_write_mode("pos:\\t4096\\nflags:\\t0100001\\nmnt_id:\\t29\\n"), is_write_mode("flags:\\t0100000\\n")
    (True, False)
    """
    for line in fdinfo.splitlines():
        if line.startswith("flags:"):
            try:
                return int(line.split()[1], 8) & 0o3 in (0o1, 0o2)
            except (IndexError, ValueError):
                return False
    return False


def established_on(sockets: Iterable[Any], ports: set[int]) -> dict[int, int]:
    """{port: ESTABLISHED sockets whose local port is ``port``} (the server's side only).

    >>> from prodx.netparse import TcpSocket
    >>> s = [TcpSocket("127.0.0.1", 80, "127.0.0.1", 50000, "ESTABLISHED", 0, 0, 0, 1),
    ...      TcpSocket("127.0.0.1", 50000, "127.0.0.1", 80, "ESTABLISHED", 0, 0, 0, 2),
    ...      TcpSocket("0.0.0.0", 80, "0.0.0.0", 0, "LISTEN", 0, 0, 0, 3)]
    >>> established_on(s, {80, 443})
    {80: 1, 443: 0}
    """
    out = {p: 0 for p in sorted(ports)}
    for s in sockets:
        if s.state == "ESTABLISHED" and s.local_port in out:
            out[s.local_port] += 1
    return out


# ---- traffic ------------------------------------------------------------------------------


class TrafficProbe(Probe):
    """Is the request rate far above the hour before; are many connections open to the web server?"""

    name = "workload.traffic"
    findings = ("workload.request_surge", "workload.web_connections_high")
    cost = 1.0
    deadline_s = 2.0

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        yield self._surge(ctx)
        yield self._connections(ctx)

    @staticmethod
    def _surge(ctx: ProbeContext) -> Finding:
        from prodx.probes.http import ACCESS_LOGS, access_logs

        fid = "workload.request_surge"
        logs = access_logs(ctx)
        if not logs:
            return unknown(fid, "no access log found (looked in " + ", ".join(ACCESS_LOGS)
                           + "); name yours in the profile's logs to compare request rates")
        now = ctx.host.now()
        rates: dict[str, ErrorRate] = {}
        problems: list[str] = []
        for path in logs:
            try:
                rates[path] = _rate_of(ctx, path, now)
            except FileNotFoundError:
                continue
            except PermissionError:
                problems.append(f"{path}: permission denied (run as root or as the web server's user)")
        if not rates:
            return unknown(fid, "; ".join(problems) or "the access logs vanished while read")
        evidence = {}
        verdicts = {}
        for path, r in rates.items():
            recent, base = request_rates(r)
            evidence[path] = {"recent_requests": r.recent_requests, "recent_rps": round(recent, 2),
                              "baseline_requests": r.baseline_requests,
                              "baseline_rps": None if base is None else round(base, 3),
                              "baseline_covered_s": round(r.baseline_covered_s)}
            verdicts[path] = is_surge(r)
        up = [p for p, v in verdicts.items() if v]
        if up:
            e = evidence[up[0]]
            factor = e["recent_rps"] / e["baseline_rps"] if e["baseline_rps"] else float("inf")
            times = f"{factor:.0f}×" if factor != float("inf") else "far above"
            return present(fid, f"{up[0]}: {e['recent_requests']:,} requests in the last {RECENT_S // 60} min "
                                f"({e['recent_rps']:.1f}/s), {times} the {e['baseline_rps']:.2f}/s of the hour before",
                           logs=evidence)
        short = [p for p, v in verdicts.items() if v is None]
        if short:
            return unknown(fid, f"{', '.join(short)}: {SURGE_MIN_REQUESTS}+ requests in the last {RECENT_S // 60} min, but "
                                f"the log reaches less than {MIN_BASELINE_COVERED_S // 60} min further back (new or just "
                                "rotated): no baseline to compare with", logs=evidence)
        return absent(fid, f"no access log shows {SURGE_FACTOR:.0f}× the request rate of the hour before in the "
                           f"last {RECENT_S // 60} min", logs=evidence)

    @staticmethod
    def _connections(ctx: ProbeContext) -> Finding:
        from prodx.probes.network import socket_owners, tcp_sockets

        fid = "workload.web_connections_high"
        try:
            sockets = tcp_sockets(ctx)
        except OSError as exc:
            return unknown(fid, f"cannot read /proc/net/tcp: {exc.strerror or exc}")
        servers = set(rules()["web_servers"])
        owners = socket_owners(ctx)
        ports: dict[int, str] = {}
        for s in sockets:
            if s.state != "LISTEN":
                continue
            for proc in owners.by_inode.get(s.inode, []):
                if proc.name in servers or proc.name.split(":")[0] in servers:
                    ports[s.local_port] = proc.name
        if not ports:
            if owners.denied:
                return unknown(fid, f"cannot tell which listening socket is the web server's: {len(owners.denied)} "
                                    "process(es)' /proc/PID/fd unreadable (run as root)")
            return unknown(fid, "no web server (" + ", ".join(sorted(servers)) + ") listens on a TCP port")
        counts = established_on(sockets, set(ports))
        total = sum(counts.values())
        listing = ", ".join(f"{n} on :{p} ({ports[p]})" for p, n in counts.items())
        if total >= CONNECTIONS_HIGH:
            return present(fid, f"{total:,} established connections to the web server: {listing}",
                           connections=counts, servers=ports, threshold=CONNECTIONS_HIGH)
        return absent(fid, f"{total:,} established connections to the web server ({listing}); "
                           f"{CONNECTIONS_HIGH} count as many", connections=counts, servers=ports)


def _rate_of(ctx: ProbeContext, path: str, now: float) -> ErrorRate:
    tail_bytes = ACCESS_TAIL_BYTES
    while True:
        tail = ctx.host.read_tail(path, tail_bytes)
        lines = tail.split(b"\n")
        full = len(tail) == tail_bytes
        if full:
            lines = lines[1:]  # the first line of a bounded tail is cut off
        rate = error_rate(lines, now, RECENT_S, BASELINE_S)
        if not full or rate.baseline_covered_s >= MIN_BASELINE_COVERED_S or tail_bytes >= ACCESS_TAIL_MAX_BYTES:
            return rate
        tail_bytes = ACCESS_TAIL_MAX_BYTES


# ---- cron -----------------------------------------------------------------------------------


class CronProbe(Probe):
    """Do several runs of the same cron job execute at once?"""

    name = "workload.cron"
    findings = ("workload.cron_overlap", "workload.cron_pileup")
    cost = 1.0
    deadline_s = 2.0

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        from prodx.probes.processes import ProcTableUnreadable, proc_table

        fid = "workload.cron_overlap"
        try:
            table = proc_table(ctx)
        except ProcTableUnreadable as exc:
            yield from (unknown(f, f"cannot read the process table: {exc}") for f in self.findings)
            return
        daemons = rules()["cron_daemons"]
        tasks = [Task(p.info.pid, p.stat.ppid, p.info.name, p.info.cmdline, p.info.create_time)
                 for p in table if p.stat.state not in ("Z", "X")]
        running = [t for t in tasks if t.name in daemons]
        if not running:
            # systemd timers never start a unit that is still running: only cron can overlap.
            note = "no cron daemon runs (" + ", ".join(daemons) + "), so no cron job can overlap"
            yield from (absent(f, note) for f in self.findings)
            return
        groups = cron_runs(tasks, daemons)
        now = ctx.host.now()
        for g in groups:
            g["oldest_age_s"] = round(now - g.pop("oldest_start"))
            g["newest_age_s"] = round(now - g.pop("newest_start"))
        if groups:
            top = groups[0]
            yield present(fid, f"{top['instances']} runs of the cron job `{top['command']}` at once "
                               f"(pids {', '.join(map(str, top['pids'][:8]))}); the oldest started "
                               f"{_age(top['oldest_age_s'])} ago, the newest {_age(top['newest_age_s'])} ago",
                          jobs=groups[:5])
        else:
            yield absent(fid, "no cron job runs more than once at a time", cron_pids=[t.pid for t in running][:5])
        piled = [g for g in groups if g["instances"] >= PILEUP_RUNS]
        if piled:
            yield present("workload.cron_pileup", f"{piled[0]['instances']} runs of `{piled[0]['command']}` pile up "
                                                  f"(at least {PILEUP_RUNS} alive at once)", jobs=piled[:5])
        else:
            yield absent("workload.cron_pileup", f"no cron job has {PILEUP_RUNS} or more runs alive at once")


def _writing(job: dict[str, Any]) -> str:
    files = [f"{w['path']} ({fmt_bytes(w['size_bytes'])})" for w in job["writing"][:2]]
    return f", writing {', '.join(files)}" if files else ""


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


# ---- backups --------------------------------------------------------------------------------


class BackupProbe(Probe):
    """Is a backup or dump job running, and has a big backup archive just been written?"""

    name = "workload.backup"
    findings = ("workload.backup_running", "workload.backup_archive_recent")
    cost = 1.0
    deadline_s = 2.0

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        jobs = self._jobs(ctx)
        now = ctx.host.now()
        if jobs:
            yield present("workload.backup_running", "; ".join(
                f"{j['name']} (pid {j['pid']}, {j['kind']}) running for {_age(now - j['start'])}: {j['command']}"
                + _writing(j) for j in jobs[:3]),
                jobs=[{k: v for k, v in j.items() if k != "start"} | {"age_s": round(now - j["start"])} for j in jobs[:5]])
        else:
            yield absent("workload.backup_running", "no backup or dump process runs")
        yield self._archives(ctx, jobs, now)

    @staticmethod
    def _jobs(ctx: ProbeContext) -> list[dict[str, Any]]:
        from prodx.probes.openfiles import all_open_files
        from prodx.redact import redact

        commands = rules()["backup_commands"]
        jobs = []
        for p in ctx.processes():
            kind = backup_kind(p.name, p.cmdline, commands)
            if kind:
                jobs.append({"pid": p.pid, "name": p.name, "kind": kind, "user": p.user, "start": p.create_time,
                             "command": redact(shlex.join(p.cmdline))[:300], "writing": []})
        if jobs:
            from prodx.probes.mounts import measured_mounts, mount_of

            local = [m for m in measured_mounts(ctx) if not m.fstype.startswith(_NETWORK_FSTYPES)]
            files, _denied = all_open_files(ctx)
            pids = {j["pid"]: j for j in jobs}
            for f, proc in files:
                if proc.pid not in pids or f.fd < 1 or not f.target.startswith("/") or f.deleted \
                        or f.target.startswith(("/dev/", "/proc/", "/sys/")) or mount_of(f.target, local) is None:
                    continue
                try:
                    if not is_write_mode(ctx.host.read_text(f"/proc/{proc.pid}/fdinfo/{f.fd}", 4096)):
                        continue
                    st = ctx.host.stat(f.target)
                except OSError:
                    continue
                if st.st_mode & 0o170000 == 0o100000:
                    pids[proc.pid]["writing"].append({"path": f.target, "size_bytes": st.st_size, "fd": f.fd})
            for j in jobs:
                j["writing"].sort(key=lambda w: -w["size_bytes"])
        return sorted(jobs, key=lambda j: (j["start"], j["pid"]))

    @staticmethod
    def _archives(ctx: ProbeContext, jobs: list[dict[str, Any]], now: float) -> Finding:
        from prodx.probes.mounts import measured_mounts, mount_of

        fid = "workload.backup_archive_recent"
        mounts = [m for m in measured_mounts(ctx) if m.stats and m.stats.outcome is CallOutcome.OK
                  and not m.fstype.startswith(_NETWORK_FSTYPES)]
        patterns = [re.compile(p) for h in ctx.kb.hogs if h["finding"] == "storage.hog_backup" for p in h.get("files", [])]
        dirs: list[str] = []
        for pattern in rules()["backup_dirs"]:
            dirs += ctx.host.glob(pattern) if any(c in pattern for c in "*?[") else [pattern]
        for m in mounts:
            for name in ("backup*", "dump*", "*/backup*"):
                dirs += ctx.host.glob(os.path.join(m.mount_point, name))
        candidates: dict[str, str] = {}
        budget = [_MAX_ENTRIES]
        for d in dict.fromkeys(dirs):
            if mount_of(d, mounts) is None:
                continue
            for path in _files_under(ctx, d, depth=2, budget=budget):
                candidates.setdefault(path, d)
        for j in jobs:
            for w in j["writing"]:
                candidates.setdefault(w["path"], f"held open by {j['name']} (pid {j['pid']})")
        hits, looked = [], 0
        for path, where in candidates.items():
            in_backup_dir = not where.startswith("held open")
            if not in_backup_dir and not any(p.search(path) for p in patterns):
                continue
            m = mount_of(path, mounts)
            if m is None or m.stats is None:
                continue
            try:
                st = ctx.host.stat(path)
            except OSError:
                continue
            looked += 1
            size = st.st_blocks * 512 if st.st_blocks else st.st_size
            if now - st.st_mtime <= ARCHIVE_RECENT_S and size >= max(ARCHIVE_MIN_BYTES, ARCHIVE_MIN_SHARE * m.stats.size_bytes):
                hits.append({"path": path, "size_bytes": size, "age_s": round(now - st.st_mtime),
                             "mount_point": m.mount_point, "share_pct": round(100 * size / max(1, m.stats.size_bytes), 1),
                             "found": where})
        hits.sort(key=lambda h: -h["size_bytes"])
        if hits:
            return present(fid, "; ".join(f"{h['path']}: {fmt_bytes(h['size_bytes'])} ({h['share_pct']}% of "
                                          f"{h['mount_point']}), written {_age(h['age_s'])} ago" for h in hits[:3]),
                           archives=hits[:5])
        return absent(fid, f"no backup archive written in the last {ARCHIVE_RECENT_S // 3600} h holds "
                           f"{ARCHIVE_MIN_SHARE:.0%} of its filesystem", looked_in=list(dict.fromkeys(dirs))[:20],
                      files_checked=looked)


def _files_under(ctx: ProbeContext, directory: str, depth: int, budget: list[int]) -> Iterable[str]:
    """Regular-file paths under ``directory`` down to ``depth`` levels, at most budget[0] entries."""
    try:
        names = ctx.host.listdir(directory)
    except OSError:
        return
    for name in names:
        if budget[0] <= 0:
            return
        budget[0] -= 1
        path = os.path.join(directory, name)
        try:
            st = ctx.host.lstat(path)
        except OSError:
            continue
        if st.st_mode & 0o170000 == 0o100000:
            yield path
        elif st.st_mode & 0o170000 == 0o040000 and depth > 1:
            yield from _files_under(ctx, path, depth - 1, budget)

