"""Processes and limits: expected services running, restarts and crash loops, zombies, open
files against their limits, system file handles, the pid and task limits, and PHP-FPM pools
with every worker busy.

Reads, through the host:

- the process table (``host.processes()``) and ``/proc/PID/stat`` of each process
  (``4242 (php-fpm8.2) S 1 4242 ... 3 ...``: state, parent, threads);
- ``/proc/PID/limits`` (``Max open files  1024  524288  files``) and the names in
  ``/proc/PID/fd`` (counted, not followed);
- ``/proc/sys/fs/file-nr`` (``2016  0  9223372036854775807``), ``/proc/sys/kernel/pid_max``,
  ``/proc/sys/kernel/threads-max``, ``/proc/loadavg`` (``0.1 0.2 0.3 2/412 9999``: 412 tasks),
  ``/proc/uptime``, ``/proc/PID/cgroup`` of the services (every process without a profile)
  and their pids cgroups' ``pids.max`` / ``pids.current`` / ``pids.events`` (``max 12``:
  forks refused at the limit), v1 or v2 (``prodx.probes.cgroups``);
- ``systemctl show -p NRestarts -p ActiveState -p SubState UNIT`` when systemd is PID 1, else
  the tails of the services' own logs for start and crash lines (signatures with finding
  ``process.crash_loop`` in ``kb/data/signatures/processes.yaml``);
- for PHP-FPM: the master's title ``php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)``,
  that file and the pool files it includes (``pm``, ``pm.max_children``, ``listen``), the
  pool's children ``php-fpm: pool www`` and each child's ``/proc/PID/wchan`` (an idle worker
  waits in accept: ``__skb_wait_for_more_packets`` on a unix socket, ``inet_csk_accept`` on
  TCP), and the listen queue from ``ss -Hlx`` / ``ss -Hltn``.

Without a profile naming services, the service findings are unknown (discovery will fill
``Target.services``). Without root, other users' fd tables and wait channels are unreadable:
findings that needed them are unknown, never absent.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prodx.host.base import HostAccessDenied, ProcessInfo
from prodx.model import Finding, absent, present, unknown
from prodx.probes.base import Probe, ProbeContext
from prodx.probes.cgroups import cgroup_layout, cgroups_holding, parse_flat_keyed, parse_limit

#: A service whose master started less than this ago (on a host up longer) restarted recently.
RECENT_RESTART_S = 600
#: Window in which start and crash lines of one service count towards a crash loop.
CRASH_WINDOW_S = 600
#: Starts (or crashes) within the window that make a crash loop; systemd's NRestarts likewise.
CRASH_LOOP_EVENTS = 3
#: Share of a limit in use that counts as "near".
NEAR = 0.9
#: A process needs at least this many fds to count as near its limit (not a sandboxed helper).
MIN_FDS = 32
#: Zombies that count as "many": one or two are a parent between fork and wait.
MANY_ZOMBIES = 10
_LOG_TAIL_BYTES = 256 * 1024
_UNLIMITED = None
_FPM_MASTER = re.compile(r"^php-fpm[0-9.]*: master process \((.+)\)\s*$")
_FPM_POOL = re.compile(r"^php-fpm[0-9.]*: pool (\S+)")
_INTERPRETER = re.compile(r"^(python[0-9.]*|perl|ruby[0-9.]*|node|nodejs|php[0-9.]*|bash|sh)$")
#: Kernel functions an idle FPM worker sleeps in: accept() on a unix or a TCP socket.
_ACCEPT_WCHANS = ("skb_wait_for_more_packets", "inet_csk_accept", "unix_accept", "inet_accept")


# ---- pure parsers ------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/PID/stat that probes use."""

    state: str
    ppid: int
    threads: int


def parse_proc_stat(text: str) -> ProcStat | None:
    """State, parent and thread count from ``/proc/PID/stat``; None if it is malformed.

    The command name (field 2) may hold spaces and parentheses: split after the last ')'.

    >>> parse_proc_stat("4242 (php-fpm: pool (x)) S 4200 4200 4200 0 -1 4194560 1 0 0 0 0 0 0 0 "
    ...                 "20 0 3 0 123 0 0")
    ProcStat(state='S', ppid=4200, threads=3)
    """
    rest = text[text.rfind(")") + 2 :].split()
    if len(rest) < 18:
        return None
    try:
        return ProcStat(rest[0], int(rest[1]), int(rest[17]))
    except ValueError:
        return None


def parse_limits(text: str) -> dict[str, tuple[int | None, int | None]]:
    """``/proc/PID/limits`` as {name: (soft, hard)}; None stands for unlimited.

    >>> parse_limits('''Limit                     Soft Limit           Hard Limit           Units
    ... Max processes             96365                96365                processes
    ... Max open files            1024                 524288               files
    ... Max locks                 unlimited            unlimited            locks''')["Max open files"]
    (1024, 524288)
    """
    out: dict[str, tuple[int | None, int | None]] = {}
    for line in text.splitlines()[1:]:
        m = re.match(r"^(\S.*?)\s{2,}(\S+)\s+(\S+)", line)
        if not m:
            continue

        def num(v: str) -> int | None:
            return None if v == "unlimited" else int(v) if v.isdigit() else None

        out[m.group(1)] = (num(m.group(2)), num(m.group(3)))
    return out


def parse_file_nr(text: str) -> tuple[int, int]:
    """(allocated file handles, fs.file-max) from ``/proc/sys/fs/file-nr``.

    >>> parse_file_nr("2016\\t0\\t9223372036854775807\\n")
    (2016, 9223372036854775807)
    """
    allocated, _free, maximum = (int(x) for x in text.split()[:3])
    return allocated, maximum


def parse_loadavg_tasks(text: str) -> int:
    """The number of tasks (threads) that exist, from ``/proc/loadavg``.

    >>> parse_loadavg_tasks("0.10 0.20 0.30 2/412 9999\\n")
    412
    """
    return int(text.split()[3].split("/")[1])


def fpm_config_of(title: str) -> str | None:
    """The config path in a PHP-FPM master's process title; None for other processes.

    >>> fpm_config_of("php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)")
    '/etc/php/8.2/fpm/php-fpm.conf'
    >>> fpm_config_of("php-fpm: pool www") is None
    True
    """
    m = _FPM_MASTER.match(title)
    return m.group(1) if m else None


def parse_fpm_config(text: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    """(include patterns, {pool: {key: value}}) from a php-fpm.conf or pool file.

    ``$pool`` in a value is replaced by the pool's name, as PHP-FPM does.

    >>> parse_fpm_config('''[global]
    ... ; a comment
    ... include=/etc/php/8.2/fpm/pool.d/*.conf
    ... [www]
    ... pm = dynamic
    ... pm.max_children = 5
    ... listen = /run/php/$pool.sock''')
    (['/etc/php/8.2/fpm/pool.d/*.conf'], {'www': {'pm': 'dynamic', 'pm.max_children': '5', 'listen': '/run/php/www.sock'}})
    """
    includes: list[str] = []
    pools: dict[str, dict[str, str]] = {}
    section = "global"
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            if section != "global":
                pools.setdefault(section, {})
            continue
        if "=" not in line:
            continue
        key, value = (x.strip() for x in line.split("=", 1))
        value = value.strip("\"'")
        if key == "include":
            includes.append(value)
        elif section != "global":
            pools[section][key] = value.replace("$pool", section)
    return includes, pools


def parse_ss_queues(text: str) -> dict[str, int]:
    """{local address: connections waiting to be accepted} from ``ss -Hlx`` or ``ss -Hltn``.

    For a listening socket ``Recv-Q`` is the accept queue: requests no worker has taken yet.

    >>> parse_ss_queues("u_str LISTEN 3 4096 /run/php/php8.2-fpm.sock 107006 * 0\\n"
    ...                 "LISTEN 0 511 127.0.0.1:9000 0.0.0.0:*\\n")
    {'/run/php/php8.2-fpm.sock': 3, '127.0.0.1:9000': 0}
    """
    out: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if "LISTEN" not in fields:
            continue
        i = fields.index("LISTEN")
        if len(fields) > i + 3 and fields[i + 1].isdigit():
            out[fields[i + 3]] = int(fields[i + 1])
    return out


def service_key(name: str) -> str:
    """A service name as a process is called: ``php8.2-fpm(.service)`` → ``php-fpm8.2``.

    >>> service_key("php8.2-fpm.service"), service_key("nginx")
    ('php-fpm8.2', 'nginx')
    """
    name = name.removesuffix(".service")
    m = re.fullmatch(r"php([0-9.]+)-fpm", name)
    return f"php-fpm{m.group(1)}" if m else name


def runs_as(proc: ProcessInfo, service: str) -> bool:
    """Whether ``proc`` is (part of) ``service``: by its name (comm, 15 characters), the
    name of its executable, or the first words of its command line (``php-fpm: master``,
    ``/usr/bin/python3 /usr/bin/gunicorn``).

    >>> runs_as(ProcessInfo(1, "python3", cmdline=("/usr/bin/python3", "/srv/venv/bin/gunicorn", "app")), "gunicorn")
    True
    >>> runs_as(ProcessInfo(3, "python3", cmdline=("python3", "tool.py", "gunicorn")), "gunicorn")
    False
    >>> runs_as(ProcessInfo(2, "php-fpm8.2", cmdline=("php-fpm: pool www",)), "php8.2-fpm")
    True
    """
    key = service_key(service)
    names = {proc.name, os.path.basename(proc.exe)}
    argv = [a for a in proc.cmdline if a.strip()]
    if argv:
        names.add(os.path.basename(argv[0].split(":", 1)[0].split()[0]))
    if len(argv) > 1 and _INTERPRETER.match(os.path.basename(argv[0])):
        script = argv[2] if argv[1] == "-m" and len(argv) > 2 else argv[1]
        names.add(os.path.basename(script))
    return key in names or key[:15] == proc.name or (key == "php-fpm" and any(n.startswith("php-fpm") for n in names))


def is_interpreter(name: str) -> bool:
    """Whether a process name is a bare interpreter or runtime (``python3``, ``node``,
    ``php``, ``java``, ``sh``), which says nothing of the program it runs.

    >>> is_interpreter("python3.11"), is_interpreter("java"), is_interpreter("php-fpm8.2")
    (True, True, False)
    """
    return bool(_INTERPRETER.match(name)) or name == "java"


def is_idle_wchan(wchan: str) -> bool | None:
    """Whether a worker's wait channel is accept() (idle); None when it tells nothing
    (``0``: running on a CPU, or unreadable without privilege).

    >>> is_idle_wchan("__skb_wait_for_more_packets"), is_idle_wchan("hrtimer_nanosleep"), is_idle_wchan("0")
    (True, False, None)
    """
    wchan = wchan.strip()
    if not wchan or wchan == "0":
        return None
    return any(w in wchan for w in _ACCEPT_WCHANS)


# ---- facts shared by the probes ------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    """One process with the fields of its /proc/PID/stat."""

    info: ProcessInfo
    stat: ProcStat


class ProcTableUnreadable(Exception):
    """No /proc/PID/stat could be read: the view of the host is incomplete."""


def proc_table(ctx: ProbeContext) -> list[Proc]:
    """Every process with its state, parent and threads; raises ProcTableUnreadable when
    the host shows processes but none of their /proc/PID/stat."""

    def compute() -> list[Proc]:
        infos = ctx.processes()
        out = []
        for info in infos:
            try:
                st = parse_proc_stat(ctx.host.read_text(f"/proc/{info.pid}/stat", 4096))
            except OSError:
                continue  # exited while we looked
            if st is not None:
                out.append(Proc(info, st))
        if infos and not out:
            raise ProcTableUnreadable("no /proc/PID/stat could be read")
        return out

    return ctx.fact("process.table", compute)


def _table_or_reason(ctx: ProbeContext) -> tuple[list[Proc], str]:
    try:
        return proc_table(ctx), ""
    except ProcTableUnreadable as exc:
        return [], f"cannot read the process table: {exc}"


def service_processes(ctx: ProbeContext, table: list[Proc]) -> dict[str, list[Proc]]:
    """Expected service → its live (not zombie) processes, oldest first."""
    out: dict[str, list[Proc]] = {}
    for svc in ctx.target.services:
        procs = [p for p in table if p.stat.state not in ("Z", "X") and runs_as(p.info, svc)]
        out[svc] = sorted(procs, key=lambda p: (p.info.create_time, p.info.pid))
    return out


def _uptime_s(ctx: ProbeContext) -> float | None:
    try:
        return float(ctx.host.read_text("/proc/uptime").split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts).isoformat(timespec="seconds")


# ---- services --------------------------------------------------------------------------------


class ServicesProbe(Probe):
    """Are the expected services running; did they restart recently; are they crash-looping?"""

    name = "process.services"
    findings = ("process.service_down", "process.recent_restart", "process.crash_loop")
    cost = 1.0
    deadline_s = 2.0

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        if not ctx.target.services:
            reason = "no expected services known (name them in the profile's services)"
            yield from (unknown(f, reason) for f in self.findings)
            return
        table, why = _table_or_reason(ctx)
        if why:
            yield from (unknown(f, why) for f in self.findings)
            return
        by_service = service_processes(ctx, table)
        down = [s for s, procs in by_service.items() if not procs]
        running = {s: procs[0] for s, procs in by_service.items() if procs}
        if down:
            yield present(
                "process.service_down",
                f"not running: {', '.join(down)} (expected by the profile; no live process has that name)",
                down=down, running={s: p.info.pid for s, p in running.items()},
            )
        else:
            yield absent("process.service_down", f"every expected service runs: {', '.join(running)}",
                         running={s: p.info.pid for s, p in running.items()})
        yield self._recent_restart(ctx, running)
        yield self._crash_loop(ctx, by_service)

    @staticmethod
    def _recent_restart(ctx: ProbeContext, running: dict[str, Proc]) -> Finding:
        fid = "process.recent_restart"
        if not running:
            return unknown(fid, "none of the expected services runs")
        uptime = _uptime_s(ctx)
        if uptime is None:
            return unknown(fid, "cannot read /proc/uptime to tell a restart from the boot")
        now = ctx.host.now()
        recent = []
        for svc, master in running.items():
            age = now - master.info.create_time
            # Started with the host is a boot, not a restart.
            if 0 <= age < RECENT_RESTART_S and uptime > age + 60:
                recent.append({"service": svc, "pid": master.info.pid, "started": _iso(master.info.create_time),
                               "age_s": round(age)})
        if recent:
            return present(fid, "; ".join(f"{r['service']} (pid {r['pid']}) started {r['age_s']} s ago, "
                                          f"the host {round(uptime) // 60} min ago" for r in recent),
                           services=recent, uptime_s=round(uptime))
        return absent(fid, f"no expected service started in the last {RECENT_RESTART_S // 60} min "
                           "(or all started with the host)", uptime_s=round(uptime))

    def _crash_loop(self, ctx: ProbeContext, by_service: dict[str, list[Proc]]) -> Finding:
        try:
            init = ctx.host.read_text("/proc/1/comm").strip()
        except OSError:
            init = ""
        from_systemd = self._systemd_restarts(ctx, by_service) if init == "systemd" else None
        from_logs = self._log_restarts(ctx, by_service, init)
        # Either source seeing the loop is enough: a service started by hand is not systemd's.
        for found in (from_systemd, from_logs):
            if found is not None and found.present:
                return found
        return from_systemd if from_systemd is not None and from_logs.state.value == "unknown" else from_logs

    @staticmethod
    def _systemd_restarts(ctx: ProbeContext, by_service: dict[str, list[Proc]]) -> Finding | None:
        looping, seen = [], {}
        for svc, procs in by_service.items():
            unit = f"{service_key(svc)}.service"
            if procs:
                try:
                    for line in ctx.host.read_text(f"/proc/{procs[0].info.pid}/cgroup").splitlines():
                        last = line.rsplit("/", 1)[-1]
                        if last.endswith(".service"):
                            unit = last
                            break
                except OSError:
                    pass
            r = ctx.host.run(["systemctl", "show", "-p", "NRestarts", "-p", "ActiveState", "-p", "SubState", unit], 1.0)
            if not r.ok:
                continue
            props = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
            seen[unit] = props
            restarts = int(props.get("NRestarts", "0") or 0)
            if restarts >= CRASH_LOOP_EVENTS or props.get("SubState") == "auto-restart":
                looping.append({"service": svc, "unit": unit, "restarts": restarts, **props})
        if looping:
            return present("process.crash_loop", "; ".join(
                f"{x['unit']}: restarted {x['restarts']} times by systemd, now {x.get('ActiveState')}/{x.get('SubState')}"
                for x in looping), units=looping)
        if seen:
            return absent("process.crash_loop", "systemd restarted none of the services repeatedly", units=seen)
        return None

    def _log_restarts(self, ctx: ProbeContext, by_service: dict[str, list[Proc]], init: str) -> Finding:
        from prodx.scanners.timestamps import parse_ts

        logs = list(ctx.target.logs)
        for procs in by_service.values():
            if procs:
                try:
                    held = ctx.host.open_files(procs[0].info.pid)
                except (HostAccessDenied, ProcessLookupError, OSError):
                    continue
                logs += [f.target for f in held if f.target.endswith(".log") and not f.deleted and f.target not in logs]
        sigs = [(s, re.compile(s["pattern"], re.I if s.get("ignore_case") else 0))
                for s in ctx.kb.signatures if s["finding"] == "process.crash_loop"]
        now = ctx.host.now()
        starts: dict[str, list[str]] = {}
        crashes: dict[str, list[str]] = {}
        read = []
        for path in logs:
            try:
                tail = ctx.host.read_tail(path, _LOG_TAIL_BYTES)
            except OSError:
                continue
            read.append(path)
            for line in tail.split(b"\n"):
                for sig, rx in sigs:
                    text = line[:4096].decode("utf-8", "replace")
                    if not rx.search(text):
                        continue
                    ts = parse_ts(line)
                    if ts is None:
                        break
                    try:
                        age = now - datetime.fromisoformat(ts).timestamp()
                    except ValueError:
                        break
                    if 0 <= age <= CRASH_WINDOW_S:
                        bucket = starts if sig["id"].endswith("_started") else crashes
                        bucket.setdefault(path, []).append(text.strip()[:200])
                    break
        if not read:
            where = "systemd is not PID 1" if init != "systemd" else "systemctl did not answer"
            return unknown("process.crash_loop", f"{where} and no log of the services could be read "
                                                 "(give them in the profile's logs)")
        n_starts = sum(map(len, starts.values()))
        n_crashes = sum(map(len, crashes.values()))
        evidence: dict[str, Any] = {"logs": read, "window_s": CRASH_WINDOW_S, "starts": n_starts, "crashes": n_crashes}
        if n_starts >= CRASH_LOOP_EVENTS or n_crashes >= CRASH_LOOP_EVENTS:
            example = next(iter((crashes or starts).values()))[-1]
            return present("process.crash_loop",
                           f"{n_starts} start(s) and {n_crashes} crash(es) in the last {CRASH_WINDOW_S // 60} min "
                           f"of {', '.join(sorted(set(starts) | set(crashes)))}, e.g. {example}",
                           **evidence, examples={p: v[-3:] for p, v in (crashes | starts).items()})
        return absent("process.crash_loop",
                      f"{n_starts} start(s), {n_crashes} crash(es) in the last {CRASH_WINDOW_S // 60} min of the services' logs",
                      **evidence)


# ---- limits ----------------------------------------------------------------------------------


class LimitsProbe(Probe):
    """Zombies, open files against each process's limit and the system's, pid and task limits."""

    name = "process.limits"
    findings = (
        "process.zombies",
        "process.fd_near_limit",
        "process.system_fd_exhausted",
        "process.pid_near_limit",
        "process.pids_limit_hit",
        "process.threads_high",
    )
    cost = 1.0
    deadline_s = 2.0

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        yield self._system_fds(ctx)
        table, why = _table_or_reason(ctx)
        if why:
            yield from (unknown(f, why) for f in ("process.zombies", "process.fd_near_limit", "process.pid_near_limit",
                                                  "process.pids_limit_hit", "process.threads_high"))
            return
        yield self._zombies(table)
        limits: dict[int, dict[str, tuple[int | None, int | None]]] = {}
        for p in table:
            try:
                limits[p.info.pid] = parse_limits(ctx.host.read_text(f"/proc/{p.info.pid}/limits", 8192))
            except OSError:
                continue
        yield self._fds(ctx, table, limits)
        yield from self._pids(ctx, table)
        yield self._threads(table, limits)

    @staticmethod
    def _system_fds(ctx: ProbeContext) -> Finding:
        fid = "process.system_fd_exhausted"
        try:
            allocated, maximum = parse_file_nr(ctx.host.read_text("/proc/sys/fs/file-nr"))
        except (OSError, ValueError):
            return unknown(fid, "cannot read /proc/sys/fs/file-nr")
        share = allocated / maximum if maximum else 0.0
        if share >= NEAR:
            return present(fid, f"{allocated:,} of {maximum:,} file handles in use system-wide ({share:.0%}, fs.file-max)",
                           allocated=allocated, file_max=maximum)
        return absent(fid, f"{allocated:,} file handles in use of fs.file-max {maximum:,}", allocated=allocated, file_max=maximum)

    @staticmethod
    def _zombies(table: list[Proc]) -> Finding:
        fid = "process.zombies"
        zombies = [p for p in table if p.stat.state == "Z"]
        names = {p.info.pid: p.info.name for p in table}
        by_parent: dict[int, int] = {}
        for z in zombies:
            by_parent[z.stat.ppid] = by_parent.get(z.stat.ppid, 0) + 1
        parents = [{"ppid": pid, "parent": names.get(pid, "?"), "zombies": n}
                   for pid, n in sorted(by_parent.items(), key=lambda x: (-x[1], x[0]))]
        if len(zombies) >= MANY_ZOMBIES:
            top = parents[0]
            return present(fid, f"{len(zombies)} zombie processes; most ({top['zombies']}) are children of "
                                f"{top['parent']} (pid {top['ppid']}), which does not wait() for them",
                           count=len(zombies), parents=parents[:10])
        return absent(fid, f"{len(zombies)} zombie process(es)", count=len(zombies), parents=parents[:10])

    @staticmethod
    def _fds(ctx: ProbeContext, table: list[Proc], limits: dict[int, dict[str, Any]]) -> Finding:
        fid = "process.fd_near_limit"
        near, denied, checked = [], 0, 0
        for p in table:
            if p.stat.state == "Z":
                continue
            soft = limits.get(p.info.pid, {}).get("Max open files", (None, None))[0]
            try:
                count = len(ctx.host.listdir(f"/proc/{p.info.pid}/fd"))
            except PermissionError:
                denied += 1
                continue
            except OSError:
                continue  # exited, or a kernel thread
            checked += 1
            if soft and count >= MIN_FDS and count >= NEAR * soft:
                near.append({"pid": p.info.pid, "process": p.info.name, "user": p.info.user,
                             "open_fds": count, "soft_limit": soft,
                             "hard_limit": limits[p.info.pid]["Max open files"][1]})
        if near:
            near.sort(key=lambda x: -x["open_fds"] / x["soft_limit"])
            return present(fid, "; ".join(f"{n['process']} (pid {n['pid']}) has {n['open_fds']} of {n['soft_limit']} "
                                          "open files (soft RLIMIT_NOFILE)" for n in near[:5]), processes=near[:20])
        if denied:
            return unknown(fid, f"needs root to count other users' /proc/PID/fd ({denied} processes unreadable)")
        if not checked:
            return unknown(fid, "no /proc/PID/fd could be read")
        return absent(fid, f"no process uses {NEAR:.0%} of its open-files limit ({checked} checked)")

    @staticmethod
    def _pids(ctx: ProbeContext, table: list[Proc]) -> Iterable[Finding]:
        """process.pid_near_limit (tasks against pid_max / threads-max, or a cgroup's
        pids.current against its pids.max) and process.pids_limit_hit (the kernel refused
        forks at a cgroup's pids.max: pids.events ``max``)."""
        fid, hit_id = "process.pid_near_limit", "process.pids_limit_hit"
        try:
            pid_max = int(ctx.host.read_text("/proc/sys/kernel/pid_max").split()[0])
            threads_max = int(ctx.host.read_text("/proc/sys/kernel/threads-max").split()[0])
        except (OSError, ValueError, IndexError):
            pid_max = threads_max = 0
        try:
            tasks = parse_loadavg_tasks(ctx.host.read_text("/proc/loadavg"))
        except (OSError, ValueError, IndexError):
            tasks = sum(p.stat.threads for p in table)
        groups, why = _pids_groups(ctx, table)
        near: list[dict[str, Any]] = []
        limit = min(pid_max, threads_max)
        if limit and tasks >= NEAR * limit:
            near.append({"scope": "system", "tasks": tasks, "limit": limit, "pid_max": pid_max, "threads_max": threads_max})
        refused, limited = [], 0
        for cg in groups:
            if cg["max"] is None:
                continue
            limited += 1
            if cg["current"] >= NEAR * cg["max"]:
                near.append({"scope": f"cgroup {cg['cgroup']} ({', '.join(cg['processes'][:3])})", "tasks": cg["current"],
                             "limit": cg["max"], "cgroup": cg["cgroup"], "version": cg["version"]})
            if cg["refused"]:
                refused.append(cg)
        if near:
            yield present(fid, "; ".join(f"{h['scope']}: {h['tasks']:,} tasks of a limit of {h['limit']:,}" for h in near),
                          limits=near)
        elif not limit:
            yield unknown(fid, "cannot read /proc/sys/kernel/pid_max and threads-max")
        else:
            yield absent(fid, f"{tasks:,} tasks of pid_max {pid_max:,} / threads-max {threads_max:,}; no cgroup near its "
                              f"pids.max ({limited} with a limit)", tasks=tasks, pid_max=pid_max, threads_max=threads_max)
        if refused:
            refused.sort(key=lambda c: -c["refused"])
            yield present(hit_id, "; ".join(
                f"cgroup {c['cgroup']} ({', '.join(c['processes'][:3])}) refused {c['refused']:,} fork(s) at pids.max "
                f"{c['max']:,} ({c['current']:,} tasks now)" for c in refused[:3]), cgroups=refused[:10])
        elif why:
            yield unknown(hit_id, why)
        else:
            yield absent(hit_id, f"no cgroup counted a fork refused at its pids.max ({limited} of {len(groups)} with a limit)")

    @staticmethod
    def _threads(table: list[Proc], limits: dict[int, dict[str, Any]]) -> Finding:
        fid = "process.threads_high"
        per_uid: dict[int, int] = {}
        for p in table:
            per_uid[p.info.uid] = per_uid.get(p.info.uid, 0) + p.stat.threads
        hits: dict[int, dict[str, Any]] = {}
        for p in table:
            uid = p.info.uid
            soft = limits.get(p.info.pid, {}).get("Max processes", (None, None))[0]
            # RLIMIT_NPROC binds no root process (CAP_SYS_RESOURCE); it counts a user's threads.
            if uid <= 0 or not soft or per_uid[uid] < NEAR * soft:
                continue
            if uid not in hits or soft < hits[uid]["limit"]:
                heaviest = max((q for q in table if q.info.uid == uid), key=lambda q: q.stat.threads)
                hits[uid] = {"user": p.info.user or str(uid), "uid": uid, "threads": per_uid[uid], "limit": soft,
                             "bound_pid": p.info.pid, "bound_process": p.info.name,
                             "most_threads": {"pid": heaviest.info.pid, "process": heaviest.info.name,
                                              "threads": heaviest.stat.threads}}
        if hits:
            return present(fid, "; ".join(
                f"user {h['user']} runs {h['threads']:,} threads against its Max processes {h['limit']:,} "
                f"(RLIMIT_NPROC of {h['bound_process']}, pid {h['bound_pid']}); most in {h['most_threads']['process']} "
                f"(pid {h['most_threads']['pid']}, {h['most_threads']['threads']:,} threads)" for h in hits.values()),
                users=list(hits.values()))
        busiest = max(table, key=lambda q: q.stat.threads, default=None)
        return absent(fid, "no user's threads near its Max processes limit",
                      most_threads={"pid": busiest.info.pid, "process": busiest.info.name,
                                    "threads": busiest.stat.threads} if busiest else {})


def _pids_groups(ctx: ProbeContext, table: list[Proc]) -> tuple[list[dict[str, Any]], str]:
    """pids.max, pids.current and the refused forks (pids.events ``max``) of the cgroups
    holding the profile's services (every process's without a profile), v1 ``pids``
    controller or v2; ``max`` None for no limit. ([], why) when none can be read."""
    try:
        layout = cgroup_layout(ctx)
    except OSError as exc:
        return [], f"cannot read /proc/self/mountinfo ({exc.strerror})"
    if layout.hierarchy_for("pids") is None:
        return [], "no pids cgroup controller is mounted (neither v1 nor in the v2 hierarchy)"
    procs = [p.info for p in table if p.stat.state not in ("Z", "X")]
    if ctx.target.services_from_profile:
        procs = [p for p in procs if any(runs_as(p, s) for s in ctx.target.services)] or procs
    out = []
    for (version, d), names in sorted(cgroups_holding(ctx, procs, "pids").items()):
        try:
            maximum = parse_limit(ctx.host.read_text(f"{d}/pids.max"))
            current = int(ctx.host.read_text(f"{d}/pids.current").strip())
        except (OSError, ValueError):
            continue  # the root cgroup has neither file; a cgroup removed meanwhile
        try:
            events = parse_flat_keyed(ctx.host.read_text(f"{d}/pids.events"))
        except OSError:
            events = {}  # before Linux 4.2
        out.append({"cgroup": d, "version": version, "processes": names[:10], "current": current, "max": maximum,
                    "refused": events.get("max", 0)})
    return out, ("" if out else "cannot read pids.max of the examined processes' cgroups")


# ---- worker pools ------------------------------------------------------------------------


class WorkerPoolsProbe(Probe):
    """Has a PHP-FPM pool every worker it may have, all busy?"""

    name = "process.worker_pools"
    findings = ("process.worker_pool_saturated",)
    cost = 1.0
    deadline_s = 2.0

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        fid = "process.worker_pool_saturated"
        table, why = _table_or_reason(ctx)
        if why:
            yield unknown(fid, why)
            return
        masters = [(p, fpm_config_of(p.info.cmdline[0])) for p in table
                   if p.info.cmdline and fpm_config_of(p.info.cmdline[0]) and p.stat.state != "Z"]
        if not masters:
            yield unknown(fid, "no PHP-FPM master runs; other pools (Apache, gunicorn) are judged from their "
                               "logs (log.worker_pool_full)")
            return
        queues = _listen_queues(ctx)
        pools, problems = [], []
        for master, conf in masters:
            assert conf is not None
            try:
                configured = fpm_pools(ctx, conf)
            except OSError as exc:
                problems.append(f"cannot read {conf} of php-fpm master {master.info.pid}: {exc.strerror or exc}")
                continue
            children = [p for p in table if p.stat.ppid == master.info.pid and p.stat.state != "Z"]
            for name, cfg in configured.items():
                pools.append(_pool_state(ctx, master, name, cfg, children, queues))
        saturated = [p for p in pools if p["saturated"] is True]
        if saturated:
            yield present(fid, "; ".join(
                f"pool {p['pool']} (php-fpm master {p['master_pid']}): {p['children']} of pm.max_children "
                f"{p['max_children']} workers, {p['busy']} busy" + (f", {p['queued']} request(s) waiting in {p['listen']}"
                                                                     if p["queued"] else "")
                for p in saturated), pools=pools)
        elif any(p["saturated"] is None for p in pools) or problems:
            reasons = problems + [p["why"] for p in pools if p["saturated"] is None]
            yield unknown(fid, "; ".join(reasons), pools=pools)
        else:
            yield absent(fid, "; ".join(f"pool {p['pool']}: {p['children']} of {p['max_children']} workers, "
                                        f"{p['busy']} busy" for p in pools), pools=pools)


def fpm_pools(ctx: ProbeContext, conf: str) -> dict[str, dict[str, str]]:
    """{pool: settings} from a PHP-FPM config and the files it includes (one level of
    globs; relative includes are taken from the config's directory)."""
    includes, pools = parse_fpm_config(ctx.host.read_text(conf))
    for pattern in includes:
        if not pattern.startswith("/"):
            pattern = os.path.join(os.path.dirname(conf), pattern)
        paths = ctx.host.glob(pattern) if any(c in pattern for c in "*?[") else [pattern]
        for path in paths:
            _inc, more = parse_fpm_config(ctx.host.read_text(path))
            for name, cfg in more.items():
                pools.setdefault(name, {}).update(cfg)
    return pools


def _listen_queues(ctx: ProbeContext) -> dict[str, int] | None:
    queues: dict[str, int] = {}
    answered = False
    for argv in (["ss", "-Hlx"], ["ss", "-Hltn"]):
        r = ctx.host.run(argv, 1.0)
        if r.ok:
            answered = True
            queues.update(parse_ss_queues(r.stdout))
    return queues if answered else None


def _listen_key(listen: str) -> list[str]:
    """Addresses ``ss`` may print for an FPM ``listen`` value."""
    if listen.startswith("/"):
        return [listen]
    if listen.isdigit():
        return [f"*:{listen}", f"0.0.0.0:{listen}", f"[::]:{listen}"]
    return [listen]


def _pool_state(ctx: ProbeContext, master: Proc, name: str, cfg: dict[str, str], children: list[Proc],
                queues: dict[str, int] | None) -> dict[str, Any]:
    mine = [c for c in children if (m := _FPM_POOL.match(c.info.cmdline[0] if c.info.cmdline else "")) and m.group(1) == name]
    try:
        max_children = int(cfg.get("pm.max_children", ""))
    except ValueError:
        max_children = 0
    listen = cfg.get("listen", "")
    queued = None
    if queues is not None and listen:
        queued = next((queues[k] for k in _listen_key(listen) if k in queues), None)
    busy = idle = unreadable = 0
    for c in mine:
        if c.stat.state == "R":
            busy += 1
            continue
        try:
            verdict = is_idle_wchan(ctx.host.read_text(f"/proc/{c.info.pid}/wchan", 256))
        except OSError:
            verdict = None
        if verdict is None:
            unreadable += 1
        elif verdict:
            idle += 1
        else:
            busy += 1
    state: dict[str, Any] = {"pool": name, "master_pid": master.info.pid, "pm": cfg.get("pm", ""), "max_children": max_children,
                             "children": len(mine), "busy": busy, "idle": idle, "listen": listen, "queued": queued or 0}
    if not max_children:
        return state | {"saturated": None, "why": f"pool {name} sets no pm.max_children"}
    if len(mine) < max_children or idle:
        return state | {"saturated": False}
    if busy == len(mine) or queued:
        return state | {"saturated": True}
    return state | {"saturated": None,
                    "why": f"pool {name} has all {max_children} workers but their wait channels are unreadable "
                           "(needs root to read /proc/PID/wchan) and no request is queued"}
