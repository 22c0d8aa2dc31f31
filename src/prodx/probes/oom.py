"""The OOM killer's victims of the last 24 hours, each judged as an SRE would without
history: does it belong to something running or expected now, and did it come before the
failure at hand began?

Reads:

- the kernel log: ``dmesg`` (``[ 5934.105855] Out of memory: Killed process 4321 (php-fpm8.2) ...``,
  ``oom-kill:constraint=CONSTRAINT_MEMCG,...,task=php-fpm8.2,pid=4321,uid=33``), else
  ``journalctl -k``, else kern.log (``kb/data/locations.yaml``); ``/proc/uptime`` to date dmesg
- for each victim: whether its cgroup (``task_memcg``) still exists under the memory
  hierarchy (``prodx.probes.cgroups``), the running processes' names, the app's services,
  and the first error in the app's logs (``prodx.probes.logs.first_error``)

Kills that bear on what fails now are ``memory.oom_kill_recent``; the others (a drill long
over, a container since removed, a one-off job) are ``memory.oom_kill_unrelated``. No name is
special: a kill is history by the same rule whoever caused it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from prodx.host.base import ProcessInfo
from prodx.model import Finding, absent, present, unknown
from prodx.probes.base import Probe, ProbeContext
from prodx.probes.cgroups import cgroup_layout
from prodx.probes.processes import is_interpreter, runs_as
from prodx.units import fmt_duration

_KIB = 1024
#: OOM kills older than this are history.
RECENT_S = 24 * 3600
#: A kill more than this long before the first error in the app's logs did not start the
#: failure at hand: what a kill breaks (a 502, a reset connection, a database restarting)
#: shows in the logs within seconds, and 10 min covers a log that only notices on its next use.
KILL_LEAD_S = 600.0


# ---- parsing (pure) -----------------------------------------------------------------------


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
            return False, f"{belongs[0]}, but it came {fmt_duration(lead)} before the first error in the app's logs ({first_error[1]})"
        order = (f"the first error in the app's logs followed {fmt_duration(lead)} later" if lead >= 0
                 else f"it came {fmt_duration(-lead)} after the first error in the app's logs")
        return True, "; ".join(belongs) + "; " + order
    return True, "; ".join(belongs)


# ---- probe -------------------------------------------------------------------------------


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
    when = f" {fmt_duration(last['ago_s'])} ago" if "ago_s" in last else ""
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
