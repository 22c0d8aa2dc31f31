"""CPU: load against cores, PSI CPU and I/O pressure, utilisation, iowait, steal, and
runaway processes.

Reads:

- ``/proc/loadavg``: ``0.08 0.45 0.53 3/96 21733`` (1, 5, 15-minute load; runnable/total tasks)
- ``/sys/devices/system/cpu/online``: ``0-1,4-7`` (else the ``cpuN`` lines of /proc/stat)
- ``/proc/pressure/cpu`` and ``/proc/pressure/io`` (PSI, Linux >= 4.20 with CONFIG_PSI, and
  not switched off by ``psi=0``): ``some avg10=2.13 avg60=1.03 avg300=2.17 total=58644650``
- two samples ``SAMPLE_INTERVAL_S`` apart (:func:`proc_samples`, shared with the memory probes)
  of ``/proc/stat`` (``cpu  4705 356 584 3699 23 23 0 0 0 0``), ``/proc/vmstat``,
  ``/proc/uptime`` and ``/proc/PID/stat`` of every process. The pair is one host
  observation (``proc.samples``), so a capture replays the rates it measured.

Every finding is present, absent, or unknown with the reason (no PSI in this kernel, /proc
not readable); none is left out.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prodx.host.base import Host
from prodx.model import Finding, absent, present, unknown
from prodx.probes.base import Probe, ProbeContext

#: Seconds between the two samples rates are computed from.
SAMPLE_INTERVAL_S = 0.4
#: Hazard: /proc/PID/stat counts CPU time in USER_HZ ticks, which is 100 on every Linux ABI
#: whatever CONFIG_HZ the kernel runs at (sysconf(_SC_CLK_TCK), proc(5)).
USER_HZ = 100
#: 1-minute load per online CPU at or above which runnable (and D-state) tasks queue.
LOAD_PER_CORE_HIGH = 1.5
#: PSI thresholds, in % of wall time some task waited (avg10 reacts in seconds, avg60 is steadier).
PSI_CPU_SOME_AVG10_PCT = 25.0
PSI_CPU_SOME_AVG60_PCT = 15.0
PSI_IO_SOME_AVG10_PCT = 30.0
PSI_IO_FULL_AVG10_PCT = 10.0
#: Shares of all CPU time over the sample.
BUSY_HIGH_PCT = 90.0
IOWAIT_HIGH_PCT = 20.0
STEAL_HIGH_PCT = 10.0
#: A runaway has used at least this share of one core over its lifetime (healthy long-lived
#: services average a few %; 0.8, not 0.9, because a spinner on a busy box shares its core)...
RUNAWAY_SHARE = 0.8
#: ... still uses at least this much now (not 0.9: on a small machine the spinner shares its
#: core with whatever else runs during the sample, prodx included)...
RUNAWAY_SAMPLE_SHARE = 0.5
#: ... and has run at least this long: PHP's default max_execution_time is 30 s, so no healthy
#: request keeps a core busy longer.
RUNAWAY_MIN_AGE_S = 30.0


# ---- parsing (pure) -----------------------------------------------------------------------


def parse_loadavg(text: str) -> dict[str, float]:
    """The load averages and task counts of /proc/loadavg.

    >>> parse_loadavg("0.08 0.45 0.53 3/96 21733\\n")
    {'load1': 0.08, 'load5': 0.45, 'load15': 0.53, 'runnable': 3.0, 'tasks': 96.0}
    >>> parse_loadavg("0.08 0.45 0.53")  # as uptime prints them: the task counts are missing
    {'load1': 0.08, 'load5': 0.45, 'load15': 0.53}

    Raises ValueError for a text without three load averages.
    """
    fields = text.split()
    try:
        out = {"load1": float(fields[0]), "load5": float(fields[1]), "load15": float(fields[2])}
    except (IndexError, ValueError):
        raise ValueError(f"not a loadavg line: {text[:80]!r}") from None
    running, slash, total = fields[3].partition("/") if len(fields) > 3 else ("", "", "")
    if slash and running.isdigit() and total.isdigit():
        out |= {"runnable": float(running), "tasks": float(total)}
    return out


def parse_cpu_list(text: str) -> int:
    """How many CPUs a kernel CPU list (``/sys/devices/system/cpu/online``) names; 0 if empty.

    >>> parse_cpu_list("0-1,4-7\\n"), parse_cpu_list("0\\n"), parse_cpu_list("")
    (6, 1, 0)
    """
    count = 0
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


def parse_psi(text: str) -> dict[str, dict[str, float]]:
    """A /proc/pressure/* file: {"some"|"full": {"avg10", "avg60", "avg300" (in %), "total" (µs)}}.

    >>> parse_psi("some avg10=2.13 avg60=1.03 avg300=2.17 total=58644650\\n"
    ...           "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\\n")["some"]["avg10"]
    2.13
    """
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        kind, *pairs = line.split()
        out[kind] = {k: float(v) for k, _, v in (p.partition("=") for p in pairs)}
    return out


@dataclass(frozen=True)
class CpuTimes:
    """The aggregate ``cpu`` line of /proc/stat, in USER_HZ ticks (guest time is inside user)."""

    user: int
    nice: int
    system: int
    idle: int
    iowait: int
    irq: int
    softirq: int
    steal: int

    @property
    def total(self) -> int:
        return self.user + self.nice + self.system + self.idle + self.iowait + self.irq + self.softirq + self.steal

    @property
    def busy(self) -> int:
        return self.user + self.nice + self.system + self.irq + self.softirq


def parse_proc_stat(text: str) -> tuple[CpuTimes, int]:
    """The aggregate CPU times of /proc/stat and how many ``cpuN`` lines it has.

    >>> t, n = parse_proc_stat("cpu  4705 356 584 3699 23 23 0 0 0 0\\ncpu0 2350 178 292 1849 11 11 0 0 0 0\\n"
    ...                        "cpu1 2355 178 292 1850 12 12 0 0 0 0\\nintr 1\\n")
    >>> t.busy, t.total, n
    (5668, 9390, 2)
    """
    times: CpuTimes | None = None
    cpus = 0
    for line in text.splitlines():
        if line.startswith("cpu "):
            values = [int(x) for x in line.split()[1:9]]
            values += [0] * (8 - len(values))  # iowait/irq/softirq/steal are missing on 2.4-era kernels
            times = CpuTimes(*values)
        elif line.startswith("cpu") and line[3:4].isdigit():
            cpus += 1
    if times is None:
        raise ValueError("no aggregate cpu line in /proc/stat")
    return times, cpus


@dataclass(frozen=True)
class PidStat:
    """What probes use of one /proc/PID/stat line."""

    pid: int
    comm: str
    state: str
    cpu_ticks: int
    start_ticks: int
    rss_pages: int


def parse_pid_stat(text: str) -> PidStat:
    """One /proc/PID/stat line (proc(5)); ``comm`` may hold spaces and parentheses.

    >>> parse_pid_stat("4321 (php-fpm: pool (www)) R 1 4321 4321 0 -1 4194560 1 0 0 0 "
    ...                "2950 50 0 0 20 0 1 0 12000 200000000 5000 18446744073709551615")
    PidStat(pid=4321, comm='php-fpm: pool (www)', state='R', cpu_ticks=3000, start_ticks=12000, rss_pages=5000)
    """
    head, _, rest = text.rpartition(")")
    pid, _, comm = head.partition(" (")
    f = rest.split()
    # f[0] is field 3 (state): utime is field 14, stime 15, starttime 22, rss 24.
    return PidStat(int(pid), comm, f[0], int(f[11]) + int(f[12]), int(f[19]), int(f[21]))


def cpu_shares(first: CpuTimes, second: CpuTimes, own_ticks: int = 0) -> dict[str, float]:
    """Busy, iowait and steal as % of the CPU time between two samples; {} when no tick passed.
    ``own_ticks`` (prodx's own CPU time in the window) are taken out of the window altogether:
    the shares are of the time the examination left to the host, so a host saturated without
    it still reads as saturated, and one spinner on two cores does not read as a full machine.

    >>> cpu_shares(CpuTimes(100, 0, 50, 800, 50, 0, 0, 0), CpuTimes(150, 0, 60, 820, 60, 0, 0, 10))
    {'busy_pct': 60.0, 'iowait_pct': 10.0, 'steal_pct': 10.0, 'idle_pct': 20.0}
    >>> cpu_shares(CpuTimes(100, 0, 50, 800, 50, 0, 0, 0), CpuTimes(150, 0, 60, 820, 60, 0, 0, 10), own_ticks=20)
    {'busy_pct': 50.0, 'iowait_pct': 12.5, 'steal_pct': 12.5, 'idle_pct': 25.0}
    """
    own = max(0, min(own_ticks, second.busy - first.busy))
    total = second.total - first.total - own
    if total <= 0:
        return {}

    def pct(delta: int) -> float:
        return round(100.0 * delta / total, 1)

    return {
        "busy_pct": pct(second.busy - first.busy - own),
        "iowait_pct": pct(second.iowait - first.iowait),
        "steal_pct": pct(second.steal - first.steal),
        "idle_pct": pct(second.idle - first.idle),
    }


def own_ticks(sample: dict[str, Any]) -> int:
    """The CPU ticks prodx itself used between two samples of ``proc_samples`` (0 for a sample
    recorded without its ``self_pid``, or when the process could not be read twice)."""
    pid = sample.get("self_pid")
    first, second = sample["first"]["pids"].get(pid), sample["second"]["pids"].get(pid)
    if not (pid and first and second):
        return 0
    try:
        return max(0, parse_pid_stat(second).cpu_ticks - parse_pid_stat(first).cpu_ticks)
    except (ValueError, IndexError):
        return 0


def runaways(first: dict[str, str], second: dict[str, str], elapsed_s: float, uptime_s: float) -> list[dict[str, Any]]:
    """Processes that used at least RUNAWAY_SHARE of a core over a lifetime of at least
    RUNAWAY_MIN_AGE_S and still use RUNAWAY_SAMPLE_SHARE over the sample, busiest first;
    empty when none.

    ``first`` and ``second`` map pid → /proc/PID/stat text; a pid whose start time changed
    between them is a new process and is skipped.

    >>> a = {"7": "7 (spin) R 1 7 7 0 -1 0 0 0 0 0 5900 0 0 0 20 0 1 0 1000 0 100 0"}
    >>> b = {"7": "7 (spin) R 1 7 7 0 -1 0 0 0 0 0 5940 0 0 0 20 0 1 0 1000 0 100 0"}
    >>> runaways(a, b, 0.4, 70.0)[0]["sample_core_pct"]
    100.0
    """
    out = []
    for pid, text in second.items():
        if pid not in first:
            continue
        try:
            a, b = parse_pid_stat(first[pid]), parse_pid_stat(text)
        except (ValueError, IndexError):
            continue
        if a.start_ticks != b.start_ticks or elapsed_s <= 0:
            continue
        age_s = uptime_s - b.start_ticks / USER_HZ
        if age_s < RUNAWAY_MIN_AGE_S:
            continue
        sample = (b.cpu_ticks - a.cpu_ticks) / USER_HZ / elapsed_s
        lifetime = b.cpu_ticks / USER_HZ / age_s
        if sample >= RUNAWAY_SAMPLE_SHARE and lifetime >= RUNAWAY_SHARE:
            out.append({
                "pid": b.pid,
                "name": b.comm,
                "state": b.state,
                "sample_core_pct": round(100 * sample, 1),
                "lifetime_core_pct": round(100 * lifetime, 1),
                "cpu_s": round(b.cpu_ticks / USER_HZ, 1),
                "age_s": round(age_s),
            })
    out.sort(key=lambda r: (-r["sample_core_pct"], r["pid"]))
    return out


# ---- reading the host ---------------------------------------------------------------------


def _snapshot(host: Host) -> dict[str, Any]:
    snap: dict[str, Any] = {"monotonic_s": time.monotonic()}
    for key, path in (("stat", "/proc/stat"), ("vmstat", "/proc/vmstat"), ("uptime", "/proc/uptime")):
        try:
            snap[key] = host.read_text(path)
        except OSError:
            snap[key] = None
    pids: dict[str, str] = {}
    try:
        names = host.listdir("/proc")
    except OSError:
        names = []
    for name in names:
        if name.isdigit():
            try:
                pids[name] = host.read_text(f"/proc/{name}/stat", 4096)
            except OSError:
                continue  # the process exited between listdir and read
    snap["pids"] = pids
    return snap


def _sample_twice(host: Host) -> dict[str, Any]:
    first = _snapshot(host)
    time.sleep(SAMPLE_INTERVAL_S)
    second = _snapshot(host)
    elapsed = second.pop("monotonic_s") - first.pop("monotonic_s")
    # The examination's own CPU time is in /proc/stat too: on a small host a probe run beside a
    # single spinning process would read as a saturated machine.
    return {"elapsed_s": round(elapsed, 4), "first": first, "second": second, "self_pid": str(os.getpid())}


def proc_samples(ctx: ProbeContext) -> dict[str, Any]:
    """Two snapshots of /proc/stat, /proc/vmstat, /proc/uptime and every /proc/PID/stat,
    SAMPLE_INTERVAL_S apart, taken once per run: {"elapsed_s", "first", "second", "self_pid"}
    (prodx's own pid; absent from captures made before it was recorded).

    A snapshot's entry is None for a file that could not be read. A replayed host raises
    NotCaptured when its capture holds no samples (the runner reports the probe skipped).
    """
    return ctx.fact(
        "proc.samples",
        lambda: ctx.host.observe("proc.samples", {"interval_s": SAMPLE_INTERVAL_S}, lambda: _sample_twice(ctx.host)),
    )


def read_volatile(ctx: ProbeContext, path: str, max_bytes: int = 1 << 16) -> str:
    """A /proc file that changes by the moment (load, PSI, meminfo), read through a host
    observation (``proc.read``) so that a capture replays exactly what the probe saw: a
    recorded file is saved at the end of the capture, by when these have moved on.
    Raises OSError as reading the file would (NotCaptured on a capture without it).
    """

    def compute() -> dict[str, Any]:
        try:
            return {"text": ctx.host.read_text(path, max_bytes)}
        except OSError as exc:
            return {"errno": exc.errno or 0, "strerror": exc.strerror or str(exc)}

    got = ctx.host.observe("proc.read", path, compute)
    if "text" in got:
        return got["text"]
    raise OSError(got["errno"], got["strerror"], path)


def online_cpus(ctx: ProbeContext) -> int:
    """Online CPUs of the host (not of the machine running prodx); 0 when unknown."""
    try:
        count = parse_cpu_list(ctx.host.read_text("/sys/devices/system/cpu/online"))
        if count:
            return count
    except (OSError, ValueError):
        pass
    try:
        return parse_proc_stat(ctx.host.read_text("/proc/stat"))[1]
    except (OSError, ValueError):
        return 0


def read_psi(ctx: ProbeContext, resource: str) -> tuple[dict[str, dict[str, float]] | None, str]:
    """PSI of ``resource`` (cpu, io, memory) and, when None, why it cannot be had."""
    path = f"/proc/pressure/{resource}"
    try:
        return parse_psi(read_volatile(ctx, path)), ""
    except FileNotFoundError:
        return None, f"{path} is missing: the kernel has no pressure stall information (needs Linux >= 4.20 with CONFIG_PSI, not booted with psi=0)"
    except OSError as exc:
        # Kernels built with CONFIG_PSI_DEFAULT_DISABLED have the file but refuse to read it.
        return None, f"cannot read {path} ({exc.strerror}): PSI may be disabled (boot with psi=1)"
    except ValueError:
        return None, f"{path} has an unexpected format"


def _cmdline(ctx: ProbeContext, pid: int) -> str:
    """The process's command line, redacted: arguments carry passwords (``mysql -pSECRET``)."""
    from prodx.redact import redact

    try:
        return redact(ctx.host.read_text(f"/proc/{pid}/cmdline", 4096).replace("\0", " ").strip())
    except OSError:
        return ""


# ---- probes -------------------------------------------------------------------------------


class CpuLoadProbe(Probe):
    """Load against online CPUs, and PSI CPU and I/O pressure."""

    name = "cpu.load"
    findings = ("cpu.io_pressure", "cpu.load_high", "cpu.pressure")
    cost = 1.0
    deadline_s = 1.0

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        cores = online_cpus(ctx)
        try:
            load = parse_loadavg(read_volatile(ctx, "/proc/loadavg"))
        except OSError as exc:
            yield unknown("cpu.load_high", f"cannot read /proc/loadavg ({exc.strerror or exc})")
        except ValueError as exc:
            yield unknown("cpu.load_high", f"/proc/loadavg: {exc}")
        else:
            if not cores:
                yield unknown("cpu.load_high", "cannot tell how many CPUs are online (/sys/devices/system/cpu/online and /proc/stat unreadable)")
            else:
                per_core = load["load1"] / cores
                ev = load | {"cpus": cores, "load1_per_cpu": round(per_core, 2)}
                text = f"load {load['load1']:.2f} / {load['load5']:.2f} / {load['load15']:.2f} on {cores} CPU(s) ({per_core:.2f} per CPU over 1 min)"
                if per_core >= LOAD_PER_CORE_HIGH:
                    yield present("cpu.load_high", text, **ev)
                else:
                    yield absent("cpu.load_high", text, **ev)
        psi, why = read_psi(ctx, "cpu")
        if psi is None:
            yield unknown("cpu.pressure", why)
        else:
            some = psi.get("some", {})
            text = f"tasks waited for a CPU {some.get('avg10', 0):.1f} % of the last 10 s, {some.get('avg60', 0):.1f} % of the last minute (PSI)"
            high = some.get("avg10", 0) >= PSI_CPU_SOME_AVG10_PCT or some.get("avg60", 0) >= PSI_CPU_SOME_AVG60_PCT
            yield (present if high else absent)("cpu.pressure", text, psi=psi)
        psi, why = read_psi(ctx, "io")
        if psi is None:
            yield unknown("cpu.io_pressure", why)
        else:
            some, full = psi.get("some", {}), psi.get("full", {})
            text = (f"tasks waited for I/O {some.get('avg10', 0):.1f} % of the last 10 s; all tasks stalled on I/O "
                    f"{full.get('avg10', 0):.1f} % (PSI)")
            high = some.get("avg10", 0) >= PSI_IO_SOME_AVG10_PCT or full.get("avg10", 0) >= PSI_IO_FULL_AVG10_PCT
            yield (present if high else absent)("cpu.io_pressure", text, psi=psi)


class CpuUsageProbe(Probe):
    """Where CPU time went over two samples: busy, iowait, steal; and processes that have
    kept a core busy for their whole (long) life."""

    name = "cpu.usage"
    findings = ("cpu.iowait_high", "cpu.runaway_process", "cpu.steal_high", "cpu.utilization_high")
    cost = 1.0
    deadline_s = 2.0

    def run(self, ctx: ProbeContext) -> Iterable[Finding]:
        s = proc_samples(ctx)
        first, second = s["first"], s["second"]
        shares: dict[str, float] = {}
        if first["stat"] and second["stat"]:
            shares = cpu_shares(parse_proc_stat(first["stat"])[0], parse_proc_stat(second["stat"])[0], own_ticks(s))
        if not shares:
            why = "cannot read /proc/stat twice" if not (first["stat"] and second["stat"]) else "no CPU tick passed between the samples"
            for fid in ("cpu.iowait_high", "cpu.steal_high", "cpu.utilization_high"):
                yield unknown(fid, why)
        else:
            over = f"over {s['elapsed_s']:.1f} s"
            ev = shares | {"interval_s": s["elapsed_s"]}
            for fid, key, limit, what in (
                ("cpu.utilization_high", "busy_pct", BUSY_HIGH_PCT, "busy (user + system + irq)"),
                ("cpu.iowait_high", "iowait_pct", IOWAIT_HIGH_PCT, "idle waiting for I/O (iowait)"),
                ("cpu.steal_high", "steal_pct", STEAL_HIGH_PCT, "stolen by the hypervisor (steal)"),
            ):
                text = f"CPUs {what} {shares[key]:.1f} % of the time {over}"
                yield (present if shares[key] >= limit else absent)(fid, text, **ev)
        if not second["pids"] or second["uptime"] is None:
            yield unknown("cpu.runaway_process", "cannot read /proc/PID/stat or /proc/uptime")
            return
        uptime_s = float(second["uptime"].split()[0])
        found = runaways(first["pids"], second["pids"], s["elapsed_s"], uptime_s)
        if found:
            for r in found[:5]:
                r["cmdline"] = _cmdline(ctx, r["pid"])[:200]
            text = "; ".join(
                f"{r['name']} (pid {r['pid']}) used {r['sample_core_pct']:.0f} % of a core now and "
                f"{r['lifetime_core_pct']:.0f} % over its {r['age_s']} s life"
                for r in found[:3]
            )
            yield present("cpu.runaway_process", text, processes=found[:5], count=len(found))
        else:
            yield absent(
                "cpu.runaway_process",
                f"no process older than {RUNAWAY_MIN_AGE_S:.0f} s kept {RUNAWAY_SHARE:.0%} of a core busy over its life "
                f"and {RUNAWAY_SAMPLE_SHARE:.0%} now",
                processes_seen=len(second["pids"]),
            )
