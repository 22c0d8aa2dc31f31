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
- ``/proc/self/mountinfo`` (where the cgroup hierarchies are), ``/proc/PID/cgroup`` of the
  profile's services (every process without a profile) and their cgroups' ``memory.max`` /
  ``memory.events`` (v2) or ``memory.limit_in_bytes`` / ``memory.oom_control`` (v1)

A process whose memory only grows needs samples over hours: until watch mode keeps history,
``memory.growing_process`` is always unknown, with that reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from prodx.model import Finding, absent, present, unknown
from prodx.probes.base import Probe, ProbeContext
from prodx.probes.cpu import parse_pid_stat, proc_samples, read_psi, read_volatile
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
#: Hazard: cgroup v1 shows "no limit" as PAGE_COUNTER_MAX in bytes (9223372036854771712 on
#: x86-64), not as a word; anything this large is unlimited.
_V1_UNLIMITED = 1 << 60


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
    the whole machine) and ``memcg`` (the victim's cgroup).

    >>> v = oom_victims([KernelLine(5.0, "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,"
    ...     "mems_allowed=0,oom_memcg=/lab,task_memcg=/lab,task=php-fpm8.2,pid=4321,uid=33"),
    ...     KernelLine(5.0, "Memory cgroup out of memory: Killed process 4321 (php-fpm8.2) total-vm:9000kB, "
    ...     "anon-rss:8000kB, file-rss:0kB, shmem-rss:0kB, UID:33 pgtables:60kB oom_score_adj:0")])
    >>> v == [{"pid": 4321, "name": "php-fpm8.2", "when": 5.0, "constraint": "CONSTRAINT_MEMCG",
    ...        "memcg": "/lab", "anon_rss_bytes": 8192000}]
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


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/PID/cgroup as hierarchy → path: v1 lines by controller (``memory``), the v2
    line under ``""``.

    >>> parse_proc_cgroup("4:memory:/process_api/e7b1\\n2:cpu,cpuacct:/\\n0::/system.slice/php8.2-fpm.service\\n")
    {'memory': '/process_api/e7b1', 'cpu': '/', 'cpuacct': '/', '': '/system.slice/php8.2-fpm.service'}
    """
    out = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(",") if parts[1] else [""]:
            out[controller] = parts[2]
    return out


def cgroup_mounts(mountinfo: str) -> dict[str, tuple[str, str]]:
    """Where the memory cgroup hierarchies are mounted: ``"v1"`` and/or ``"v2"`` →
    (mount point, root of the hierarchy shown there).

    >>> cgroup_mounts("35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\\n"
    ...               "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\\n")
    {'v1': ('/sys/fs/cgroup/memory', '/'), 'v2': ('/sys/fs/cgroup/unified', '/')}
    """
    out: dict[str, tuple[str, str]] = {}
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        if tail[0] == "cgroup2":
            out.setdefault("v2", (fields[4], fields[3]))
        elif tail[0] == "cgroup" and "memory" in tail[2].split(","):
            out.setdefault("v1", (fields[4], fields[3]))
    return out


def parse_flat_keyed(text: str) -> dict[str, int]:
    """A cgroup "flat keyed" file (memory.events, memory.oom_control).

    >>> parse_flat_keyed("low 0\\nhigh 0\\nmax 12\\noom 1\\noom_kill 1\\n")["oom_kill"]
    1
    """
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


# ---- probes -------------------------------------------------------------------------------


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
            "needs history: a single look cannot tell a leak from a large steady process "
            "(watch mode will compare samples over hours); meanwhile compare `ps -o pid,rss,etime,comm` an hour apart",
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
    """Swap-in rate over two samples, and the process holding the most RAM."""

    name = "memory.activity"
    findings = ("memory.process_hog", "memory.swapping_in")
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
        yield from self._hog(ctx, second["pids"], mi.get("MemTotal", 0))

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


class OomKillerProbe(Probe):
    """OOM-killer victims in the kernel log of the last 24 hours."""

    name = "memory.oom_killer"
    findings = ("memory.oom_kill_recent",)
    cost = 1.0
    deadline_s = 2.0

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        now = ctx.host.now()
        lines, source, tried = _kernel_log(ctx, now)
        if lines is None:
            yield unknown("memory.oom_kill_recent", "cannot read the kernel log: " + "; ".join(tried)
                          + " (run as root, or add the user to the adm or systemd-journal group)")
            return
        victims = [v for v in oom_victims(lines) if v["when"] is None or now - v["when"] <= RECENT_S]
        victims = [v for v in victims if not _lab_history(ctx, v)]
        for v in victims:
            if v["when"] is not None:
                v["ago_s"] = round(now - v["when"])
                v["at"] = datetime.fromtimestamp(v["when"], timezone.utc).isoformat(timespec="seconds")
        if not victims:
            oldest = next((ln.when for ln in lines if ln.when is not None), None)
            covers = f", which goes back {(now - oldest) / 3600:.1f} h" if oldest else ""
            yield absent("memory.oom_kill_recent", f"no OOM kill in {source} in the last 24 h{covers}", source=source)
            return
        last = victims[-1]
        when = f" {last['ago_s'] // 60} min ago" if "ago_s" in last else ""
        scope = {"CONSTRAINT_MEMCG": " (a cgroup memory limit)", "CONSTRAINT_NONE": " (the whole machine ran out)"}.get(
            last.get("constraint", ""), "")
        names = sorted({v["name"] for v in victims})
        yield present(
            "memory.oom_kill_recent",
            f"the OOM killer killed {len(victims)} process(es) in 24 h ({', '.join(names)}); last {last['name']} "
            f"(pid {last['pid']}){when}{scope}",
            victims=victims[-10:],
            count=len(victims),
            source=source,
        )


#: The cgroups prodx's own lab makes (prodx.lab.sandbox.PREFIX) for its OOM scenario.
_LAB_CGROUP = "prodx-lab-"


def _lab_history(ctx: ProbeContext, victim: dict[str, Any]) -> bool:
    """Whether a kill happened in a cgroup prodx's lab made and has since removed: a drill
    on this machine, not its illness (the kernel log keeps it for days)."""
    memcg = victim.get("memcg", "")
    if not memcg.rsplit("/", 1)[-1].startswith(_LAB_CGROUP):
        return False
    try:
        mounts = cgroup_mounts(ctx.host.read_text("/proc/self/mountinfo"))
    except OSError:
        return False
    return not any(ctx.host.exists(point.rstrip("/") + memcg) for point, _root in mounts.values())


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
    """Memory limits of the services' cgroups (every process's without a profile) and the
    OOM kills the kernel counted in them."""

    name = "memory.cgroups"
    findings = ("memory.cgroup_limit_hit",)
    cost = 1.0
    deadline_s = 2.0

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        fid = "memory.cgroup_limit_hit"
        try:
            mounts = cgroup_mounts(ctx.host.read_text("/proc/self/mountinfo"))
        except OSError as exc:
            yield unknown(fid, f"cannot read /proc/self/mountinfo ({exc.strerror})")
            return
        if not mounts:
            yield unknown(fid, "no memory cgroup hierarchy is mounted (neither cgroup2 nor a v1 memory controller under /sys/fs/cgroup)")
            return
        procs = ctx.processes()
        wanted = set(ctx.target.services)
        chosen = [p for p in procs if p.name in wanted] if wanted else procs
        if wanted and not chosen:
            yield unknown(fid, f"none of the services {', '.join(sorted(wanted))} is running: no cgroup to examine")
            return
        groups = _memory_cgroups(ctx, chosen, mounts)
        if not groups and wanted:
            # The services' processes exited (a restart) between the listing and the read.
            groups = _memory_cgroups(ctx, procs, mounts)
        limited, hit, unreadable = [], [], []
        for (version, path), names in sorted(groups.items()):
            info = _cgroup_memory(ctx, version, mounts[version], path)
            if info is None:
                continue  # no memory controller in this cgroup (v2 without +memory)
            if "error" in info:
                unreadable.append(info["error"])
                continue
            info["processes"] = names[:10]
            if info["limit_bytes"] is not None:
                limited.append(info)
            if info["oom_kill"] > 0 or info.get("under_oom"):
                hit.append(info)
        if hit:
            top = max(hit, key=lambda i: i["oom_kill"])
            limit = fmt_bytes(top["limit_bytes"]) if top["limit_bytes"] is not None else "an ancestor's limit"
            yield present(
                fid,
                f"cgroup {top['cgroup']} ({', '.join(top['processes'][:3])}) hit its memory limit of {limit}: "
                f"{top['oom_kill']} OOM kill(s) counted, {fmt_bytes(top['usage_bytes'])} in use",
                cgroups=hit[:10],
            )
        elif limited:
            yield absent(fid, f"{len(limited)} cgroup(s) with a memory limit, none with an OOM kill", cgroups=limited[:10])
        elif unreadable and not groups:
            yield unknown(fid, "cannot read the cgroups' memory files: " + "; ".join(unreadable[:3]))
        elif groups:
            yield absent(fid, f"no memory limit on the {len(groups)} cgroup(s) of the examined processes; none counted an OOM kill")
        else:
            yield unknown(fid, "cannot read /proc/PID/cgroup of the examined processes (needs root for other users' processes?)")


def _memory_cgroups(ctx: ProbeContext, procs: list[Any], mounts: dict[str, tuple[str, str]]) -> dict[tuple[str, str], list[str]]:
    """(hierarchy, cgroup path) → names of the processes in it, for the processes whose
    /proc/PID/cgroup could be read."""
    groups: dict[tuple[str, str], list[str]] = {}
    for p in procs:
        try:
            table = parse_proc_cgroup(ctx.host.read_text(f"/proc/{p.pid}/cgroup"))
        except OSError:
            continue
        for version, key in (("v1", "memory"), ("v2", "")):
            if version in mounts and key in table:
                names = groups.setdefault((version, table[key]), [])
                if p.name not in names:
                    names.append(p.name)
    return groups


def _cgroup_memory(ctx: ProbeContext, version: str, mount: tuple[str, str], path: str) -> dict[str, Any] | None:
    """Limit, usage and OOM-kill count of one cgroup; None without a memory controller there;
    {"error": why} when its files cannot be read."""
    point, root = mount
    # A cgroup namespace shows paths relative to the mount's root; the host's relative to "/".
    rel = path[len(root):] if root != "/" and path.startswith(root) else path
    d = point.rstrip("/") + "/" + rel.strip("/") if rel.strip("/") else point
    try:
        if version == "v2":
            if not ctx.host.exists(f"{d}/memory.events"):
                return None
            events = parse_flat_keyed(ctx.host.read_text(f"{d}/memory.events"))
            raw = ctx.host.read_text(f"{d}/memory.max").strip()
            usage = int(ctx.host.read_text(f"{d}/memory.current").strip() or 0)
            return {"cgroup": d, "version": 2, "limit_bytes": None if raw == "max" else int(raw), "usage_bytes": usage,
                    "oom_kill": events.get("oom_kill", 0), "max_events": events.get("max", 0)}
        control = parse_flat_keyed(ctx.host.read_text(f"{d}/memory.oom_control"))
        limit = int(ctx.host.read_text(f"{d}/memory.limit_in_bytes").strip())
        usage = int(ctx.host.read_text(f"{d}/memory.usage_in_bytes").strip())
        failcnt = int(ctx.host.read_text(f"{d}/memory.failcnt").strip() or 0)
    except FileNotFoundError:
        return None if version == "v2" else {"error": f"{d}: memory files missing"}
    except (OSError, ValueError) as exc:
        return {"error": f"{d}: {exc}"}
    # Hazard: the oom_kill line of memory.oom_control exists only since Linux 4.13.
    return {"cgroup": d, "version": 1, "limit_bytes": None if limit >= _V1_UNLIMITED else limit, "usage_bytes": usage,
            "oom_kill": control.get("oom_kill", 0), "under_oom": control.get("under_oom", 0), "failcnt": failcnt}
