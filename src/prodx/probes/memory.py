"""Memory: what is available, swap use and swap-in rate, PSI memory pressure, the largest
process, OOM-killer events with their victims, and cgroup memory limits that were hit.

Reads:

- ``/proc/meminfo``: ``MemTotal:  24684084 kB`` / ``MemAvailable: 24092860 kB`` / ``SwapTotal`` ...
- ``/proc/pressure/memory`` (PSI): ``some avg10=0.00 avg60=0.00 avg300=0.00 total=0``
- ``pswpin`` of ``/proc/vmstat`` and ``/proc/PID/stat`` from the two samples the CPU probes
  take (``prodx.probes.cpu.proc_samples``), then ``VmRSS`` of ``/proc/PID/status`` for the largest
- the kernel log: ``dmesg`` (``[ 5934.105855] Out of memory: Killed process 4321 (php-fpm8.2) ...``,
  ``oom-kill:constraint=CONSTRAINT_MEMCG,...,task=php-fpm8.2,pid=4321,uid=33``), else
  ``journalctl -k``, else kern.log (``kb/data/locations.yaml``)
- ``/proc/self/mountinfo`` (where the cgroup hierarchies are, ``prodx.probes.cgroups``),
  ``/proc/PID/cgroup`` of the profile's services (every process without a profile) and their
  memory cgroups' files: v2 ``memory.max``, ``memory.current``, ``memory.peak``,
  ``memory.events`` / ``memory.events.local`` (``max 12``, ``oom 1``, ``oom_kill 1``),
  ``memory.swap.max``, ``memory.swap.current``; v1 ``memory.limit_in_bytes``,
  ``memory.usage_in_bytes``, ``memory.max_usage_in_bytes``, ``memory.failcnt``,
  ``memory.oom_control`` (``under_oom 0`` / ``oom_kill 1``) and ``memory.memsw.*`` where swap
  is accounted
- for the OOM kills, whether each bears on what fails now: the victim's cgroup (does it still
  exist?), the running processes and the app's services, and the first error in the app's
  logs (``prodx.probes.logs.first_error``)
- for growth: ``/proc/PID/stat`` of the processes that grew between the two CPU samples, read
  once more ``GROWTH_RECHECK_S`` later with ``VmRSS``/``VmHWM``/``RssAnon`` of
  ``/proc/PID/status``

A slow leak needs samples hours apart: until watch mode keeps history,
``memory.growing_process`` is always unknown, with that reason. What one look can see is a
process growing fast right now (``memory.process_growing_now``) and a worker far larger than
its siblings (``memory.worker_outgrown``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from prodx.host.base import NotCaptured, ProcessInfo
from prodx.model import Finding, absent, present, unknown
from prodx.probes.base import Probe, ProbeContext
from prodx.probes.cgroups import cgroup_layout, cgroups_holding, parse_flat_keyed, parse_limit
from prodx.probes.cpu import USER_HZ, parse_pid_stat, proc_samples, read_psi, read_volatile
from prodx.probes.processes import is_interpreter, runs_as
from prodx.units import fmt_bytes

_KIB = 1024
#: MemAvailable below this share of MemTotal: the kernel is about to reclaim hard or OOM-kill.
AVAILABLE_LOW_PCT = 10.0
#: Swap used at or above this share of the swap space.
SWAP_USED_HIGH_PCT = 50.0
#: Pages swapped in per second over the sample: 256 pages is 1 MiB/s with 4 KiB pages.
SWAPIN_HIGH_PAGES_S = 256.0
#: PSI memory thresholds (% of wall time).
PSI_MEM_SOME_AVG10_PCT = 10.0
PSI_MEM_SOME_AVG60_PCT = 5.0
PSI_MEM_FULL_AVG10_PCT = 5.0
#: One process holding at least this share of RAM.
HOG_PCT = 50.0
#: OOM kills older than this are history.
RECENT_S = 24 * 3600
#: A kill more than this long before the first error in the app's logs did not start the
#: failure at hand: what a kill breaks (a 502, a reset connection, a database restarting)
#: shows in the logs within seconds, and 10 min covers a log that only notices on its next use.
KILL_LEAD_S = 600.0
#: A process is growing now when its resident memory rose at least this fast in each of two
#: intervals (the CPU samples, then a recheck) and stands at its peak (VmHWM): 1 MiB/s is
#: 3.5 GiB an hour, a leak that takes a small VM down within the day ...
GROWTH_MIN_BYTES_S = float(1 << 20)
#: ... after at least this long alive: start-up (loading code, a first request) is over, as
#: for a runaway (prodx.probes.cpu.RUNAWAY_MIN_AGE_S) ...
GROWTH_MIN_AGE_S = 30.0
#: ... and at a pace that accounts for its size: its RSS lies between these multiples of
#: pace × age, as if it had grown so all its life. A burst (a heavy request, a file read into
#: memory) is far faster than that pace; a process that got big at start and creeps now
#: (a JVM committing its heap) is far larger.
GROWTH_STEADY = (0.5, 4.0)
#: A limited cgroup within this share of its limit is "at" it ...
CGROUP_FULL_SHARE = 0.9
#: ... and thrashes when its processes take this many major page faults a second (pages read
#: back from swap or re-read from files they were evicted from): 1 MiB/s with 4 KiB pages,
#: the threshold memory.swapping_in uses for the whole machine ...
CGROUP_MAJFAULTS_S = 256.0
#: ... over this sample.
CGROUP_SAMPLE_S = 0.4
#: Seconds between the second CPU sample and the recheck of the processes that grew.
GROWTH_RECHECK_S = 0.4
#: A worker is bloated when it holds at least this many times the median of its siblings
#: (same name, same parent) ...
BLOAT_FACTOR = 4.0
#: ... with at least this many siblings around it to compare with ...
BLOAT_MIN_SIBLINGS = 3
#: ... and at least this much private memory (a 40 MiB worker beside 8 MiB ones is no leak).
BLOAT_MIN_BYTES = 64 << 20


# ---- parsing (pure) -----------------------------------------------------------------------


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo (or /proc/PID/status) as bytes per numeric field; fields without a
    unit (HugePages_Total) as is, non-numeric ones (Name, State) left out.

    >>> m = parse_meminfo("MemTotal:       24684084 kB\\nHugePages_Total:       0\\nName:\\tphp-fpm8.2\\n")
    >>> m
    {'MemTotal': 25276502016, 'HugePages_Total': 0}
    """
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if not fields or not fields[0].isdigit():
            continue
        value = int(fields[0])
        out[key.strip()] = value * _KIB if len(fields) > 1 and fields[1] == "kB" else value
    return out


def parse_vmstat(text: str) -> dict[str, int]:
    """/proc/vmstat counters by name.

    >>> parse_vmstat("pswpin 12\\npswpout 40\\n")["pswpin"]
    12
    """
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[name] = int(value)
    return out


_DMESG_STAMP = re.compile(r"^\[\s*(\d+(?:\.\d+)?)\]\s*")
_ISO_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:[+-]\d\d:?\d\d|Z)?)\s")
_SYSLOG_STAMP = re.compile(r"^([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d)\s")
#: "Out of memory: Killed process 4321 (php-fpm8.2) total-vm:..., anon-rss:987654kB, ..."; the
#: "Memory cgroup out of memory:" form, and before 5.0 "Kill process N (x) score S or sacrifice child".
_KILLED = re.compile(r"(Memory cgroup out of memory|Out of memory)?:? ?Kill(?:ed)? process (\d+) \((.+?)\)(?=[ ,]|$)")
_ANON_RSS = re.compile(r"anon-rss:(\d+)kB")
#: "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,task_memcg=/a,task=x,pid=1,uid=0"
_OOM_KILL = re.compile(r"oom-kill:(\S+)")


@dataclass(frozen=True)
class KernelLine:
    """One kernel log line: when (seconds since the epoch, None if unknown) and its text."""

    when: float | None
    text: str


def kernel_lines_from_dmesg(text: str, now: float, uptime_s: float | None) -> list[KernelLine]:
    """``dmesg`` output with each boot-relative stamp turned into epoch seconds.

    Hazard: the stamp does not advance while the machine is suspended, so on laptops and
    paused VMs the times come out early (dmesg(1) says the same of ``-T``).

    >>> kernel_lines_from_dmesg("[  100.500000] hello\\n", now=1000.0, uptime_s=200.0)
    [KernelLine(when=900.5, text='hello')]
    """
    out = []
    for line in text.splitlines():
        m = _DMESG_STAMP.match(line)
        when = now - uptime_s + float(m.group(1)) if m and uptime_s is not None else None
        out.append(KernelLine(when, line[m.end():] if m else line))
    return out


def kernel_lines_from_log(text: str, now: float) -> list[KernelLine]:
    """Lines of kern.log / ``journalctl -k -o short-iso`` with ISO or classic syslog stamps
    (``Mar  2 10:41:07``, read in the year that puts them at most a day ahead of ``now``).

    >>> now = datetime(2024, 3, 2, 12, tzinfo=timezone.utc).timestamp()
    >>> ln = kernel_lines_from_log("2024-03-02T10:41:07+00:00 web1 kernel: Out of memory\\n", now)[0]
    >>> now - ln.when
    4733.0
    """
    out = []
    local_year = datetime.fromtimestamp(now).year
    for line in text.splitlines():
        when = None
        m = _ISO_STAMP.match(line)
        if m:
            try:
                stamp = datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
                when = stamp.timestamp()
            except ValueError:
                pass
        else:
            m = _SYSLOG_STAMP.match(line)
            if m:
                try:
                    stamp = datetime.strptime(f"{local_year} {m.group(1)}", "%Y %b %d %H:%M:%S")
                    when = stamp.timestamp()
                    if when > now + 86400:  # December's lines read in January
                        when = stamp.replace(year=local_year - 1).timestamp()
                except ValueError:
                    pass
        out.append(KernelLine(when, line))
    return out


def oom_victims(lines: list[KernelLine]) -> list[dict[str, Any]]:
    """Processes the OOM killer killed, one per pid, in the order killed; empty when none.

    Each has ``pid``, ``name``, ``when`` (epoch s or None), and where the kernel said so
    ``anon_rss_bytes``, ``constraint`` (CONSTRAINT_MEMCG: a cgroup limit; CONSTRAINT_NONE:
    the whole machine), ``memcg`` (the victim's cgroup) and ``limit_memcg`` (the cgroup whose
    limit was hit, for a cgroup OOM).

    >>> v = oom_victims([KernelLine(5.0, "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,"
    ...     "mems_allowed=0,oom_memcg=/lab,task_memcg=/lab,task=php-fpm8.2,pid=4321,uid=33"),
    ...     KernelLine(5.0, "Memory cgroup out of memory: Killed process 4321 (php-fpm8.2) total-vm:9000kB, "
    ...     "anon-rss:8000kB, file-rss:0kB, shmem-rss:0kB, UID:33 pgtables:60kB oom_score_adj:0")])
    >>> v == [{"pid": 4321, "name": "php-fpm8.2", "when": 5.0, "constraint": "CONSTRAINT_MEMCG",
    ...        "memcg": "/lab", "limit_memcg": "/lab", "anon_rss_bytes": 8192000}]
    True
    """
    victims: dict[int, dict[str, Any]] = {}
    for line in lines:
        m = _OOM_KILL.search(line.text)
        if m:
            fields = dict(p.partition("=")[::2] for p in m.group(1).split(",") if "=" in p)
            if fields.get("pid", "").isdigit():
                v = victims.setdefault(int(fields["pid"]), {"pid": int(fields["pid"]), "name": fields.get("task", ""), "when": line.when})
                v["constraint"] = fields.get("constraint", "")
                v["memcg"] = fields.get("task_memcg", "")
                if fields.get("oom_memcg"):
                    v["limit_memcg"] = fields["oom_memcg"]
            continue
        m = _KILLED.search(line.text)
        if m:
            pid = int(m.group(2))
            v = victims.setdefault(pid, {"pid": pid, "name": m.group(3), "when": line.when})
            if m.group(1) == "Memory cgroup out of memory":
                v.setdefault("constraint", "CONSTRAINT_MEMCG")
            rss = _ANON_RSS.search(line.text)
            if rss:
                v["anon_rss_bytes"] = int(rss.group(1)) * _KIB
    return list(victims.values())


# ---- probes -------------------------------------------------------------------------------


def judge_kill(victim: dict[str, Any], *, cgroup_exists: bool | None, service: str | None, live: int,
               first_error: tuple[float, str] | None) -> tuple[bool, str]:
    """Whether one OOM kill bears on what is failing now, and why, judged as an SRE would
    without history: does the victim belong to something running or expected now, and did the
    kill come before the failure began?

    It belongs when its cgroup still exists (``cgroup_exists``; None when the kernel named
    none, or only the root), when its name is that of a ``service`` the app runs (profile or
    discovery), or when ``live`` processes of its name run now (a bare interpreter name says
    nothing of the program, so the caller counts none for it). It bears on the failure unless
    it came more than ``KILL_LEAD_S`` before the first error in the app's logs
    (``first_error``: epoch seconds and where).

    >>> v = {"pid": 4321, "name": "php-fpm8.2", "when": 1000.0, "memcg": "/system.slice/php8.2-fpm.service"}
    >>> judge_kill(v, cgroup_exists=True, service="php8.2-fpm", live=3, first_error=(1005.0, "/var/log/nginx/error.log"))[1]
    "its cgroup /system.slice/php8.2-fpm.service still exists; it is part of the service php8.2-fpm; 3 process(es) named php-fpm8.2 run now; the first error in the app's logs followed 5 s later"
    >>> judge_kill(v | {"name": "lab-worker", "memcg": "/lab"}, cgroup_exists=False, service=None, live=0, first_error=None)
    (False, 'its cgroup /lab is gone and nothing named lab-worker runs now or is a service of the app')
    >>> judge_kill(v, cgroup_exists=True, service=None, live=3, first_error=(1000.0 + 7200, "/srv/app/var/log/prod.log"))
    (False, "its cgroup /system.slice/php8.2-fpm.service still exists, but it came 2.0 h before the first error in the app's logs (/srv/app/var/log/prod.log)")
    """
    name, when = victim.get("name", "?"), victim.get("when")
    belongs = []
    if cgroup_exists:
        belongs.append(f"its cgroup {victim.get('memcg')} still exists")
    if service:
        belongs.append(f"it is part of the service {service}")
    if live:
        belongs.append(f"{live} process(es) named {name} run now")
    if not belongs:
        gone = f"its cgroup {victim.get('memcg')} is gone and " if cgroup_exists is False else ""
        return False, f"{gone}nothing named {name} runs now or is a service of the app"
    if first_error is not None and when is not None:
        lead = first_error[0] - when
        if lead > KILL_LEAD_S:
            return False, f"{belongs[0]}, but it came {_span(lead)} before the first error in the app's logs ({first_error[1]})"
        order = (f"the first error in the app's logs followed {_span(lead)} later" if lead >= 0
                 else f"it came {_span(-lead)} after the first error in the app's logs")
        return True, "; ".join(belongs) + "; " + order
    return True, "; ".join(belongs)


def _span(seconds: float) -> str:
    """A duration in the unit a person reads.

    >>> _span(5), _span(600), _span(7200)
    ('5 s', '10 min', '2.0 h')
    """
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200 - 1:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def siblings_outgrown(rss: dict[int, int], groups: dict[tuple[Any, ...], list[int]]) -> list[dict[str, Any]]:
    """Workers holding far more memory than their siblings: in each group of at least
    ``BLOAT_MIN_SIBLINGS`` processes sharing name and parent, the largest when it holds at
    least ``BLOAT_FACTOR`` times the median of the others and ``BLOAT_MIN_BYTES``; worst
    first, empty when none. ``groups`` is keyed by (name, parent pid, ...) and ``rss`` is
    pid → bytes (processes without memory left out).

    >>> rss = {10: 300 << 20, 11: 40 << 20, 12: 35 << 20, 13: 38 << 20, 20: 50 << 20, 21: 60 << 20, 22: 55 << 20}
    >>> out = siblings_outgrown(rss, {("php-fpm8.2", 9): [10, 11, 12, 13], ("gunicorn", 19): [20, 21, 22]})
    >>> [(o["name"], o["pid"], o["times_median"]) for o in out]
    [('php-fpm8.2', 10, 7.9)]
    """
    out = []
    for key, pids in groups.items():
        name, ppid = key[0], key[1]
        sized = sorted((rss[p], p) for p in pids if rss.get(p))
        if len(sized) < BLOAT_MIN_SIBLINGS:
            continue
        top, pid = sized[-1]
        others = [r for r, _ in sized[:-1]]
        median = others[len(others) // 2] if len(others) % 2 else (others[len(others) // 2 - 1] + others[len(others) // 2]) / 2
        if top >= BLOAT_MIN_BYTES and median > 0 and top >= BLOAT_FACTOR * median:
            out.append({"key": key, "name": name, "pid": pid, "ppid": ppid, "bytes": top, "siblings": len(others),
                        "siblings_median_bytes": int(median), "times_median": round(top / median, 1)})
    return sorted(out, key=lambda o: -o["times_median"])


def meminfo(ctx: ProbeContext) -> dict[str, int]:
    """/proc/meminfo of the host, read once per run (OSError when unreadable)."""
    return ctx.fact("memory.meminfo", lambda: parse_meminfo(read_volatile(ctx, "/proc/meminfo")))


class MemoryUsageProbe(Probe):
    """Available memory, swap use and PSI memory pressure; memory growth (needs history)."""

    name = "memory.usage"
    findings = ("memory.available_low", "memory.growing_process", "memory.pressure", "memory.swap_used_high")
    cost = 1.0
    deadline_s = 1.0

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        yield unknown(
            "memory.growing_process",
            "needs history: a single look cannot tell a slow leak from a large steady process "
            "(watch mode will compare samples over hours; memory.process_growing_now and memory.worker_outgrown "
            "are what one look sees); meanwhile compare `ps -o pid,rss,etime,comm` an hour apart",
        )
        psi, why = read_psi(ctx, "memory")
        if psi is None:
            yield unknown("memory.pressure", why)
        else:
            some, full = psi.get("some", {}), psi.get("full", {})
            text = (f"tasks stalled on memory {some.get('avg10', 0):.1f} % of the last 10 s "
                    f"({some.get('avg60', 0):.1f} % over 1 min); all tasks stalled {full.get('avg10', 0):.1f} % (PSI)")
            high = (some.get("avg10", 0) >= PSI_MEM_SOME_AVG10_PCT or some.get("avg60", 0) >= PSI_MEM_SOME_AVG60_PCT
                    or full.get("avg10", 0) >= PSI_MEM_FULL_AVG10_PCT)
            yield (present if high else absent)("memory.pressure", text, psi=psi)
        try:
            mi = meminfo(ctx)
        except OSError as exc:
            for fid in ("memory.available_low", "memory.swap_used_high"):
                yield unknown(fid, f"cannot read /proc/meminfo ({exc.strerror or exc})")
            return
        total = mi.get("MemTotal", 0)
        if "MemAvailable" in mi:
            avail, how = mi["MemAvailable"], "MemAvailable"
        else:  # kernels before 3.14: the estimate free(1) used then
            avail, how = mi.get("MemFree", 0) + mi.get("Buffers", 0) + mi.get("Cached", 0), "MemFree + Buffers + Cached"
        if not total:
            yield unknown("memory.available_low", "/proc/meminfo has no MemTotal")
        else:
            pct = 100.0 * avail / total
            text = f"{fmt_bytes(avail)} of {fmt_bytes(total)} RAM available ({pct:.1f} %)"
            ev = {"available_bytes": avail, "total_bytes": total, "available_pct": round(pct, 1), "measure": how}
            yield (present if pct < AVAILABLE_LOW_PCT else absent)("memory.available_low", text, **ev)
        swap_total, swap_free = mi.get("SwapTotal", 0), mi.get("SwapFree", 0)
        if not swap_total:
            yield absent("memory.swap_used_high", "no swap configured", swap_total_bytes=0)
        else:
            used = swap_total - swap_free
            pct = 100.0 * used / swap_total
            text = f"{fmt_bytes(used)} of {fmt_bytes(swap_total)} swap in use ({pct:.1f} %)"
            yield (present if pct >= SWAP_USED_HIGH_PCT else absent)(
                "memory.swap_used_high", text, swap_used_bytes=used, swap_total_bytes=swap_total, swap_used_pct=round(pct, 1)
            )


class MemoryActivityProbe(Probe):
    """Swap-in rate over two samples, the process holding the most RAM, a process growing
    now, and a worker far larger than its siblings."""

    name = "memory.activity"
    findings = ("memory.process_growing_now", "memory.process_hog", "memory.swapping_in", "memory.worker_outgrown")
    cost = 1.0
    deadline_s = 2.0

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        try:
            mi = meminfo(ctx)
        except OSError as exc:
            for fid in self.findings:
                yield unknown(fid, f"cannot read /proc/meminfo ({exc.strerror or exc})")
            return
        s = proc_samples(ctx)
        first, second = s["first"], s["second"]
        if not (first["vmstat"] and second["vmstat"]) or s["elapsed_s"] <= 0:
            yield unknown("memory.swapping_in", "cannot read /proc/vmstat twice")
        else:
            a, b = parse_vmstat(first["vmstat"]), parse_vmstat(second["vmstat"])
            rate = (b.get("pswpin", 0) - a.get("pswpin", 0)) / s["elapsed_s"]
            majfault = (b.get("pgmajfault", 0) - a.get("pgmajfault", 0)) / s["elapsed_s"]
            ev = {"pswpin_per_s": round(rate, 1), "pgmajfault_per_s": round(majfault, 1), "interval_s": s["elapsed_s"],
                  "swap_total_bytes": mi.get("SwapTotal", 0)}
            if not mi.get("SwapTotal", 0) and "pswpin" not in b:
                yield absent("memory.swapping_in", "no swap configured", **ev)
            else:
                text = (f"{rate:.0f} pages/s swapped in over {s['elapsed_s']:.1f} s "
                        f"({majfault:.0f} major page faults/s)")
                yield (present if rate >= SWAPIN_HIGH_PAGES_S else absent)("memory.swapping_in", text, **ev)
        page = _page_size(ctx, second["pids"])
        yield from self._hog(ctx, second["pids"], mi.get("MemTotal", 0))
        yield from _growing_now(ctx, s, page)
        yield from _outgrown(ctx, second["pids"], page)

    @staticmethod
    def _hog(ctx: ProbeContext, pids: dict[str, str], total: int) -> Iterable[Finding]:
        if not pids or not total:
            yield unknown("memory.process_hog", "cannot read /proc/PID/stat or MemTotal")
            return
        ranked = []
        for text in pids.values():
            try:
                st = parse_pid_stat(text)
            except (ValueError, IndexError):
                continue
            ranked.append((-st.rss_pages, st.pid, st.comm))
        ranked.sort()
        biggest = []
        # The stat rss is in pages of unknown size; VmRSS in /proc/PID/status is in kB.
        for _neg, pid, comm in ranked[:3]:
            try:
                status = parse_meminfo(read_volatile(ctx, f"/proc/{pid}/status", 8192))
            except OSError:
                continue
            if "VmRSS" in status:
                biggest.append({"pid": pid, "name": comm, "rss_bytes": status["VmRSS"],
                                "rss_pct": round(100.0 * status["VmRSS"] / total, 1)})
        if not biggest:
            yield unknown("memory.process_hog", "cannot read VmRSS of the largest processes (/proc/PID/status)")
            return
        biggest.sort(key=lambda p: -p["rss_bytes"])
        top = biggest[0]
        text = f"largest process {top['name']} (pid {top['pid']}) holds {fmt_bytes(top['rss_bytes'])}, {top['rss_pct']:.1f} % of RAM"
        yield (present if top["rss_pct"] >= HOG_PCT else absent)("memory.process_hog", text, processes=biggest)




def _page_size(ctx: ProbeContext, pids: dict[str, str]) -> int:
    """The page size /proc/PID/stat counts RSS in, from VmRSS of the largest process (4 KiB
    when it cannot be told): stat gives pages, status gives kB."""
    best = None
    for text in pids.values():
        try:
            st = parse_pid_stat(text)
        except (ValueError, IndexError):
            continue
        if best is None or st.rss_pages > best.rss_pages:
            best = st
    if best is None or best.rss_pages <= 0:
        return 4096
    try:
        vmrss = parse_meminfo(read_volatile(ctx, f"/proc/{best.pid}/status", 8192)).get("VmRSS", 0)
    except OSError:
        return 4096
    ratio = vmrss / best.rss_pages
    return min((4096, 16384, 65536), key=lambda size: abs(size - ratio))


def _recheck(host: Any, pids: list[int]) -> dict[str, Any]:
    """Two reads of RSS (stat pages, VmRSS, VmHWM, RssAnon) of ``pids``, GROWTH_RECHECK_S apart."""

    def snap() -> dict[str, Any]:
        out = {}
        for pid in pids:
            try:
                st = parse_pid_stat(host.read_text(f"/proc/{pid}/stat", 4096))
                status = parse_meminfo(host.read_text(f"/proc/{pid}/status", 8192))
            except (OSError, ValueError, IndexError):
                continue  # exited
            out[str(pid)] = {"start_ticks": st.start_ticks, "rss_pages": st.rss_pages, "vmrss_bytes": status.get("VmRSS"),
                             "vmhwm_bytes": status.get("VmHWM"), "rss_anon_bytes": status.get("RssAnon")}
        return out

    t0 = time.monotonic()
    before = snap()
    time.sleep(GROWTH_RECHECK_S)
    t1 = time.monotonic()
    return {"elapsed_s": round(t1 - t0, 4), "before": before, "after": snap()}


def _growing_now(ctx: ProbeContext, s: dict[str, Any], page: int) -> Iterable[Finding]:
    """memory.process_growing_now: grew at GROWTH_MIN_BYTES_S over the CPU samples, again over
    a recheck, stands at its peak, and is as large as that pace over its life (GROWTH_STEADY)."""
    fid = "memory.process_growing_now"
    first, second, elapsed = s["first"]["pids"], s["second"]["pids"], s["elapsed_s"]
    try:
        uptime = float((s["second"]["uptime"] or "").split()[0])
    except (ValueError, IndexError):
        yield unknown(fid, "cannot read /proc/uptime: the age of the processes is unknown")
        return
    candidates = []
    for key, text in second.items():
        try:
            a, b = parse_pid_stat(first[key]), parse_pid_stat(text)
        except (KeyError, ValueError, IndexError):
            continue
        age = uptime - b.start_ticks / USER_HZ
        if a.start_ticks == b.start_ticks and age >= GROWTH_MIN_AGE_S and (b.rss_pages - a.rss_pages) * page >= GROWTH_MIN_BYTES_S * elapsed:
            candidates.append({"pid": b.pid, "name": b.comm, "age_s": round(age), "start_ticks": b.start_ticks,
                               "grew_bytes": (b.rss_pages - a.rss_pages) * page})
    window = f"over {elapsed:.1f} s"
    if not candidates:
        yield absent(fid, f"no process alive {GROWTH_MIN_AGE_S:.0f} s or more grew by {fmt_bytes(GROWTH_MIN_BYTES_S)}/s {window} "
                          "(a slow leak needs samples hours apart)", interval_s=elapsed)
        return
    candidates = sorted(candidates, key=lambda c: -c["grew_bytes"])[:10]
    try:
        again = ctx.host.observe("memory.growth_recheck", {"pids": [c["pid"] for c in candidates], "after_s": GROWTH_RECHECK_S},
                                 lambda: _recheck(ctx.host, [c["pid"] for c in candidates]))
    except NotCaptured as exc:
        yield unknown(fid, f"processes grew over the CPU samples, but {exc}")
        return
    growing = []
    for c in candidates:
        b, a = again["before"].get(str(c["pid"])), again["after"].get(str(c["pid"]))
        if not a or not b or a["start_ticks"] != c["start_ticks"] or b["start_ticks"] != c["start_ticks"]:
            continue  # exited, or the pid was reused
        grew = (a["rss_pages"] - b["rss_pages"]) * page
        peak, now_rss = a.get("vmhwm_bytes") or 0, a.get("vmrss_bytes") or 0
        if grew < GROWTH_MIN_BYTES_S * again["elapsed_s"] or peak - now_rss > max(1 << 20, peak // 100):
            continue
        rate = (c["grew_bytes"] + grew) / (elapsed + again["elapsed_s"])
        lifelong = now_rss / (rate * c["age_s"])
        c |= {"rss_bytes": now_rss, "peak_bytes": peak, "rss_anon_bytes": a.get("rss_anon_bytes"),
              "grew_recheck_bytes": grew, "rate_bytes_s": round(rate), "size_over_pace_x_age": round(lifelong, 2)}
        if GROWTH_STEADY[0] <= lifelong <= GROWTH_STEADY[1]:
            growing.append(c)
    if not growing:
        yield absent(fid, f"{len(candidates)} process(es) grew {window}, but not again {again['elapsed_s']:.1f} s later to "
                          "a new peak, or not at a pace that accounts for their size (a burst, not steady growth)",
                     interval_s=elapsed, candidates=candidates)
        return
    growing.sort(key=lambda g: -g["rate_bytes_s"])
    top = growing[0]
    yield present(
        fid,
        "; ".join(f"{g['name']} (pid {g['pid']}) grows at {fmt_bytes(g['rate_bytes_s'])}/s in two intervals, to "
                  f"{fmt_bytes(g['rss_bytes'])} (its peak) after {_span(g['age_s'])}: as if it had grown so all its life"
                  for g in growing[:3]),
        processes=growing, interval_s=elapsed, recheck_s=again["elapsed_s"], largest_rate_bytes_s=top["rate_bytes_s"],
    )


def _outgrown(ctx: ProbeContext, pids: dict[str, str], page: int) -> Iterable[Finding]:
    """memory.worker_outgrown: one worker of a pool (same parent, same command line) holding
    BLOAT_FACTOR times its siblings' median, measured on private memory (RssAnon), since the
    shared pages a worker touched count in its RSS too."""
    fid = "memory.worker_outgrown"
    cmdlines = {p.pid: p.cmdline for p in ctx.processes()}
    rss: dict[int, int] = {}
    groups: dict[tuple[Any, ...], list[int]] = {}
    for text in pids.values():
        try:
            st = parse_pid_stat(text)
            ppid = int(text.rpartition(")")[2].split()[1])
        except (ValueError, IndexError):
            continue
        if st.rss_pages <= 0 or ppid <= 2:  # kernel threads; daemons of init are not one pool
            continue
        rss[st.pid] = st.rss_pages * page
        groups.setdefault((st.comm, ppid, cmdlines.get(st.pid, ())), []).append(st.pid)
    pools = {k: v for k, v in groups.items() if len(v) >= BLOAT_MIN_SIBLINGS}
    if not pools:
        yield unknown(fid, f"no pool of {BLOAT_MIN_SIBLINGS} or more workers (same parent, same command line) to compare")
        return
    flagged = siblings_outgrown(rss, pools)
    confirmed = []
    for f in flagged[:3]:
        members = sorted(pools[f["key"]], key=lambda p: -rss[p])[:17]
        anon = {}
        for pid in members:
            try:
                value = parse_meminfo(read_volatile(ctx, f"/proc/{pid}/status", 8192)).get("RssAnon")
            except OSError:
                continue
            if value:
                anon[pid] = value
        confirmed += siblings_outgrown(anon, {f["key"]: list(anon)})
    if confirmed:
        top = confirmed[0]
        yield present(fid, f"{top['name']} (pid {top['pid']}) holds {fmt_bytes(top['bytes'])} of private memory, "
                           f"{top['times_median']:.1f}× the median of its {top['siblings']} siblings ({fmt_bytes(top['siblings_median_bytes'])})",
                      workers=[{k: v for k, v in c.items() if k != "key"} for c in confirmed])
        return
    yield absent(fid, f"no worker holds {BLOAT_FACTOR:.0f}× its siblings' median in {len(pools)} pool(s) compared",
                 pools=sorted({k[0] for k in pools}))


@dataclass(frozen=True)
class OomKills:
    """The OOM kills of the last 24 h in the kernel log, split by whether they bear on what
    fails now (each victim carries ``bears_on_now`` and ``why``). ``source`` is empty and
    ``tried`` says why when no kernel log could be read."""

    source: str
    covers_s: float | None
    bearing: list[dict[str, Any]]
    unrelated: list[dict[str, Any]]
    first_error: dict[str, Any] | None
    tried: list[str]


def oom_kills(ctx: ProbeContext) -> OomKills:
    """The run's OOM kills, judged once (:func:`judge_kill`) for every probe that needs them."""

    def compute() -> OomKills:
        from prodx.probes.logs import first_error

        now = ctx.host.now()
        lines, source, tried = _kernel_log(ctx, now)
        if lines is None:
            return OomKills("", None, [], [], None, tried)
        oldest = next((ln.when for ln in lines if ln.when is not None), None)
        victims = [v for v in oom_victims(lines) if v["when"] is None or now - v["when"] <= RECENT_S]
        if not victims:
            return OomKills(source, now - oldest if oldest else None, [], [], None, tried)
        first = first_error(ctx)
        onset = (first["ts"], first["file"]) if first else None
        procs = ctx.processes()
        live: dict[str, int] = {}
        for p in procs:
            live[p.name[:15]] = live.get(p.name[:15], 0) + 1
        try:
            memory = cgroup_layout(ctx).hierarchy_for("memory")
        except OSError:
            memory = None
        bearing, unrelated = [], []
        for v in victims:
            memcg = v.get("memcg", "")
            exists = ctx.host.exists(memory.dir_of(memcg)) if memory is not None and memcg not in ("", "/") else None
            service = next((svc for svc in ctx.target.services if runs_as(ProcessInfo(v["pid"], v["name"]), svc)), None)
            count = 0 if is_interpreter(v["name"]) else live.get(v["name"][:15], 0)
            v["bears_on_now"], v["why"] = judge_kill(v, cgroup_exists=exists, service=service, live=count, first_error=onset)
            if v["when"] is not None:
                v["ago_s"] = round(now - v["when"])
                v["at"] = datetime.fromtimestamp(v["when"], timezone.utc).isoformat(timespec="seconds")
            (bearing if v["bears_on_now"] else unrelated).append(v)
        return OomKills(source, now - oldest if oldest else None, bearing, unrelated, first, tried)

    return ctx.fact("memory.oom_kills", compute)


def _kills_text(victims: list[dict[str, Any]]) -> str:
    last = victims[-1]
    when = f" {_span(last['ago_s'])} ago" if "ago_s" in last else ""
    scope = {"CONSTRAINT_MEMCG": " at a cgroup memory limit", "CONSTRAINT_NONE": " (the whole machine ran out)"}.get(
        last.get("constraint", ""), "")
    names = sorted({v["name"] for v in victims})
    return (f"{len(victims)} process(es) ({', '.join(names)}); last {last['name']} (pid {last['pid']}){when}{scope}: "
            f"{last['why']}")


class OomKillerProbe(Probe):
    """OOM-killer victims in the kernel log of the last 24 hours, split into the kills that
    bear on what fails now and the earlier or unrelated ones."""

    name = "memory.oom_killer"
    findings = ("memory.oom_kill_recent", "memory.oom_kill_unrelated")
    cost = 1.0
    deadline_s = 2.0

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        kills = oom_kills(ctx)
        if not kills.source:
            why = ("cannot read the kernel log: " + "; ".join(kills.tried)
                   + " (run as root, or add the user to the adm or systemd-journal group)")
            yield from (unknown(fid, why) for fid in self.findings)
            return
        covers = f", which goes back {kills.covers_s / 3600:.1f} h" if kills.covers_s else ""
        common = {"source": kills.source}
        if kills.first_error:
            common["first_error"] = {k: kills.first_error[k] for k in ("file", "first_ts", "signature", "example")}
        if kills.bearing:
            yield present("memory.oom_kill_recent", "the OOM killer killed " + _kills_text(kills.bearing),
                          victims=kills.bearing[-10:], count=len(kills.bearing), **common)
        elif kills.unrelated:
            yield absent("memory.oom_kill_recent", f"no OOM kill in {kills.source} bears on what fails now; "
                                                   f"{len(kills.unrelated)} earlier or unrelated kill(s)", **common)
        else:
            yield absent("memory.oom_kill_recent", f"no OOM kill in {kills.source} in the last 24 h{covers}", **common)
        if kills.unrelated:
            yield present("memory.oom_kill_unrelated", "earlier or unrelated OOM kills: " + _kills_text(kills.unrelated),
                          victims=kills.unrelated[-10:], count=len(kills.unrelated), **common)
        else:
            yield absent("memory.oom_kill_unrelated", f"no earlier or unrelated OOM kill in {kills.source} in the last 24 h{covers}",
                         **common)
def _kernel_log(ctx: ProbeContext, now: float) -> tuple[list[KernelLine] | None, str, list[str]]:
    """The kernel log's lines with times: dmesg, else journalctl -k, else kern.log."""
    tried = []
    result = ctx.host.run(["dmesg"], timeout_s=1.0)
    if result.ok and result.stdout:
        try:
            uptime: float | None = float(ctx.host.read_text("/proc/uptime").split()[0])
        except (OSError, ValueError, IndexError):
            uptime = None
        return kernel_lines_from_dmesg(result.stdout, now, uptime), "dmesg", tried
    tried.append(f"dmesg: {(result.stderr or result.error or 'no output').strip()[:120]}")
    result = ctx.host.run(["journalctl", "-k", "-q", "--no-pager", "-o", "short-iso", "--since", "-24h"], timeout_s=1.5)
    if result.ok and result.stdout.strip():
        return kernel_lines_from_log(result.stdout, now), "journalctl -k", tried
    tried.append(f"journalctl -k: {(result.stderr or result.error or 'no output').strip()[:120]}")
    for pattern in ctx.kb.locations["kernel_logs"]:
        for path in ctx.host.glob(pattern):
            try:
                text = ctx.host.read_tail(path, 1 << 20).decode("utf-8", "replace")
            except OSError as exc:
                tried.append(f"{path}: {exc.strerror}")
                continue
            return kernel_lines_from_log("\n".join(text.splitlines()[1:]), now), path, tried
    return None, "", tried


class CgroupMemoryProbe(Probe):
    """Memory limits of the services' cgroups (every process's without a profile), v1 or v2:
    the OOMs the kernel counted at them or logged for them, and a cgroup thrashing at its limit."""

    name = "memory.cgroups"
    findings = ("memory.cgroup_limit_hit", "memory.cgroup_thrashing")
    cost = 1.0
    deadline_s = 2.0

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        fid = "memory.cgroup_limit_hit"
        logged = self._logged(ctx)
        try:
            layout = cgroup_layout(ctx)
        except OSError as exc:
            yield self._verdict(fid, [], logged, [], 0, f"cannot read /proc/self/mountinfo ({exc.strerror})")
            return
        if layout.hierarchy_for("memory") is None:
            why = ("no memory cgroup hierarchy is mounted (neither cgroup2 with the memory controller nor a v1 memory "
                   "controller under /sys/fs/cgroup)")
            yield self._verdict(fid, [], logged, [], 0, why)
            yield unknown("memory.cgroup_thrashing", why)
            return
        procs = ctx.processes()
        # Without a profile's list, discovery knows only the stacks it recognises: every
        # process's cgroup is examined, so an app it does not know is not missed.
        wanted = set(ctx.target.services) if ctx.target.services_from_profile else set()
        chosen = [p for p in procs if any(runs_as(p, s) for s in wanted)] if wanted else procs
        if wanted and not chosen:
            why = f"none of the services {', '.join(sorted(wanted))} is running: no cgroup to examine"
            yield self._verdict(fid, [], logged, [], 0, why)
            yield unknown("memory.cgroup_thrashing", why)
            return
        groups = cgroups_holding(ctx, chosen, "memory")
        if not groups and wanted:
            # The services' processes exited (a restart) between the listing and the read.
            groups = cgroups_holding(ctx, procs, "memory")
        limited, hit, unreadable = [], [], []
        for (version, path), names in sorted(groups.items()):
            info = read_memory_cgroup(ctx, version, path)
            if info is None:
                continue  # no memory files here (the v2 root, or a v2 cgroup without +memory)
            if "error" in info:
                unreadable.append(info["error"])
                continue
            info["processes"] = names[:10]
            if info["limit_bytes"] is not None:
                limited.append(info)
            if info["limit_hit"]:
                hit.append(info)
        why = ""
        if not groups:
            why = "cannot read /proc/PID/cgroup of the examined processes (needs root for other users' processes?)"
        elif unreadable and not limited and not hit:
            why = "cannot read the cgroups' memory files: " + "; ".join(unreadable[:3])
        yield self._verdict(fid, hit, logged, limited, len(groups), why)
        yield self._thrashing(ctx, limited, why)

    @staticmethod
    def _thrashing(ctx: ProbeContext, limited: list[dict[str, Any]], why: str) -> Finding:
        """memory.cgroup_thrashing: a limited cgroup at its limit taking CGROUP_MAJFAULTS_S
        major faults a second over a sample of its memory.stat."""
        fid = "memory.cgroup_thrashing"
        full = [i for i in limited if i["limit_bytes"] and i["usage_bytes"] >= CGROUP_FULL_SHARE * i["limit_bytes"]]
        if not full:
            if why and not limited:
                return unknown(fid, why)
            return absent(fid, f"no cgroup within {100 * (1 - CGROUP_FULL_SHARE):.0f} % of its memory limit "
                               f"({len(limited)} with a limit)")
        dirs = [i["cgroup"] for i in full[:10]]
        try:
            sample = ctx.host.observe("memory.cgroup_faults", {"cgroups": dirs, "interval_s": CGROUP_SAMPLE_S},
                                      lambda: _sample_faults(ctx.host, dirs))
        except NotCaptured as exc:
            return unknown(fid, f"cgroups at their limit, but {exc}")
        thrashing = []
        for info in full[:10]:
            rate = sample["rates"].get(info["cgroup"])
            if rate is not None:
                info["majfaults_per_s"] = rate
                if rate >= CGROUP_MAJFAULTS_S:
                    thrashing.append(info)
        if thrashing:
            top = max(thrashing, key=lambda i: i["majfaults_per_s"])
            swap = f", {fmt_bytes(top['swap_bytes'])} of it in swap" if top.get("swap_bytes") else ""
            return present(fid, f"cgroup {top['cgroup']} ({', '.join(top['processes'][:3])}) holds "
                                f"{fmt_bytes(top['usage_bytes'])} of its {fmt_bytes(top['limit_bytes'])} limit{swap} and takes "
                                f"{top['majfaults_per_s']:.0f} major page faults/s: its working set does not fit",
                           cgroups=thrashing, interval_s=sample["interval_s"])
        return absent(fid, f"{len(full)} cgroup(s) at their memory limit, none paging in "
                           f"{CGROUP_MAJFAULTS_S:.0f} pages/s", cgroups=full[:10], interval_s=sample["interval_s"])

    @staticmethod
    def _logged(ctx: ProbeContext) -> list[dict[str, Any]]:
        """Kills at a cgroup limit that the kernel logged, among those bearing on now."""
        return [v for v in oom_kills(ctx).bearing if v.get("constraint") == "CONSTRAINT_MEMCG"]

    @staticmethod
    def _verdict(fid: str, hit: list[dict[str, Any]], logged: list[dict[str, Any]], limited: list[dict[str, Any]],
                 examined: int, why: str) -> Finding:
        if hit:
            top = max(hit, key=lambda i: (i["oom_kills"], i["ooms"]))
            peak = f", peak {fmt_bytes(top['peak_bytes'])}" if top.get("peak_bytes") else ""
            limit = fmt_bytes(top["limit_bytes"]) if top["limit_bytes"] is not None else "memory + swap"
            return present(
                fid,
                f"cgroup {top['cgroup']} (v{top['version']}: {', '.join(top['processes'][:3])}) hit its memory limit of "
                f"{limit}: {top['oom_kills']} OOM kill(s) counted{peak}, "
                f"{fmt_bytes(top['usage_bytes'])} in use now",
                cgroups=hit[:10], logged=logged[-5:],
            )
        if logged:
            last = logged[-1]
            return present(
                fid,
                f"the kernel logged an OOM kill at the memory limit of cgroup {last.get('limit_memcg') or last.get('memcg')}: "
                f"{last['name']} (pid {last['pid']}) killed with CONSTRAINT_MEMCG",
                cgroups=[], logged=logged[-5:],
            )
        if why:
            return unknown(fid, why)
        if limited:
            return absent(fid, f"{len(limited)} cgroup(s) with a memory limit, none counted an OOM", cgroups=limited[:10])
        return absent(fid, f"no memory limit on the {examined} cgroup(s) of the examined processes; none counted an OOM")


def _sample_faults(host: Any, dirs: list[str]) -> dict[str, Any]:
    """Major page faults per second of each cgroup in ``dirs`` over CGROUP_SAMPLE_S (its
    memory.stat ``pgmajfault``, v1 ``total_pgmajfault``: the cgroup and those below it)."""

    def faults() -> dict[str, int]:
        out = {}
        for d in dirs:
            try:
                stat = parse_flat_keyed(host.read_text(f"{d}/memory.stat"))
            except OSError:
                continue
            value = stat.get("total_pgmajfault", stat.get("pgmajfault"))
            if value is not None:
                out[d] = value
        return out

    t0 = time.monotonic()
    first = faults()
    time.sleep(CGROUP_SAMPLE_S)
    elapsed = time.monotonic() - t0
    second = faults()
    return {"interval_s": round(elapsed, 4),
            "rates": {d: round((second[d] - first[d]) / elapsed, 1) for d in first if d in second and elapsed > 0}}


def read_memory_cgroup(ctx: ProbeContext, version: int, d: str) -> dict[str, Any] | None:
    """Limit, usage, peak, swap and OOM counters of the memory cgroup at directory ``d``, the
    same keys for v1 and v2; None without memory files there; {"error": why} when they cannot
    be read.

    ``limit_hit`` is True when the cgroup has a limit of its own and the kernel counted an OOM
    at it: v2 ``oom`` in memory.events.local (or an OOM kill in a limited cgroup), v1 an OOM
    kill or ``under_oom``. A kill counted in a cgroup without a limit of its own proves
    nothing about limits (a machine-wide OOM counts there too).
    """
    host = ctx.host

    # Read, not tested with exists(): a capture replays what was read.
    def text(name: str) -> str | None:
        try:
            return host.read_text(f"{d}/{name}")
        except FileNotFoundError:
            return None

    def num(name: str) -> int | None:
        raw = text(name)
        return None if raw is None else int(raw.strip() or 0)

    def limit(name: str) -> int | None:
        raw = text(name)
        return None if raw is None else parse_limit(raw)

    try:
        if version == 2:
            raw_events = text("memory.events")
            if raw_events is None:
                return None
            events = parse_flat_keyed(raw_events)
            raw_local = text("memory.events.local")  # since Linux 5.2
            local = parse_flat_keyed(raw_local) if raw_local is not None else None
            own = local if local is not None else events
            info = {"cgroup": d, "version": 2, "limit_bytes": limit("memory.max"), "usage_bytes": num("memory.current") or 0,
                    "peak_bytes": num("memory.peak"), "max_events": events.get("max", 0), "ooms": own.get("oom", 0),
                    "oom_kills": own.get("oom_kill", 0), "swap_limit_bytes": limit("memory.swap.max"),
                    "swap_bytes": num("memory.swap.current")}
            info["limit_hit"] = bool((local is not None and info["ooms"] > 0)
                                     or (info["limit_bytes"] is not None and (info["ooms"] or info["oom_kills"])))
            return info
        raw_control = text("memory.oom_control")
        if raw_control is None:
            return {"error": f"{d}: memory files missing"}
        control = parse_flat_keyed(raw_control)
        usage = num("memory.usage_in_bytes") or 0
        memsw_limit, memsw_usage = limit("memory.memsw.limit_in_bytes"), num("memory.memsw.usage_in_bytes")
        # Hazard: the oom_kill line of memory.oom_control exists only since Linux 4.13.
        info = {"cgroup": d, "version": 1, "limit_bytes": limit("memory.limit_in_bytes"), "usage_bytes": usage,
                "peak_bytes": num("memory.max_usage_in_bytes"), "failcnt": num("memory.failcnt") or 0,
                "ooms": control.get("under_oom", 0), "oom_kills": control.get("oom_kill", 0),
                "under_oom": control.get("under_oom", 0), "memsw_limit_bytes": memsw_limit,
                "memsw_peak_bytes": num("memory.memsw.max_usage_in_bytes"), "memsw_failcnt": num("memory.memsw.failcnt"),
                "swap_bytes": memsw_usage - usage if memsw_usage is not None else None}
        limited = info["limit_bytes"] is not None or memsw_limit is not None
        if info["limit_bytes"] is None and memsw_limit is not None:
            info["limit_bytes"] = memsw_limit
        info["limit_hit"] = bool(limited and (info["oom_kills"] or info["under_oom"]))
        return info
    except (OSError, ValueError) as exc:
        return {"error": f"{d}: {exc}"}
