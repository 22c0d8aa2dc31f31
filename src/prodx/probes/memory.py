"""Memory: what is available, swap use and swap-in rate, PSI memory pressure, the largest
process, a process growing now and a worker far larger than its siblings. The OOM killer's
victims are in ``prodx.probes.oom``, the memory cgroups in ``prodx.probes.memcg``.

Reads:

- ``/proc/meminfo``: ``MemTotal:  24684084 kB`` / ``MemAvailable: 24092860 kB`` / ``SwapTotal`` ...
- ``/proc/pressure/memory`` (PSI): ``some avg10=0.00 avg60=0.00 avg300=0.00 total=0``
- ``pswpin`` of ``/proc/vmstat`` and ``/proc/PID/stat`` from the two samples the CPU probes
  take (``prodx.probes.cpu.proc_samples``), then ``VmRSS`` of ``/proc/PID/status`` for the largest
- for growth: ``/proc/PID/stat`` of the processes that grew between the two CPU samples, read
  once more ``GROWTH_RECHECK_S`` later with ``VmRSS``/``VmHWM``/``RssAnon`` of
  ``/proc/PID/status``

A slow leak needs samples hours apart: until watch mode keeps history,
``memory.growing_process`` is always unknown, with that reason. What one look can see is a
process growing fast right now (``memory.process_growing_now``) and a worker far larger than
its siblings (``memory.worker_outgrown``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from prodx.host.base import NotCaptured
from prodx.model import Finding, absent, present, unknown
from prodx.probes.base import Probe, ProbeContext
from prodx.probes.cpu import USER_HZ, parse_pid_stat, proc_samples, read_psi, read_volatile
from prodx.units import fmt_bytes, fmt_duration

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


# ---- probes -------------------------------------------------------------------------------


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


def memory_pressure_high(psi: dict[str, dict[str, float]], margin: float = 1.0) -> bool:
    """Whether PSI memory figures (``prodx.probes.cpu.parse_psi``) cross the thresholds
    (each multiplied by ``margin``, for a caller who wants to be clear of them).

    >>> memory_pressure_high({"some": {"avg10": 4.0, "avg60": 1.0}, "full": {"avg10": 5.5}})
    True
    >>> memory_pressure_high({"some": {"avg10": 11.0, "avg60": 3.0}, "full": {"avg10": 1.0}}, margin=1.2)
    False
    """
    some, full = psi.get("some", {}), psi.get("full", {})
    return (some.get("avg10", 0) >= PSI_MEM_SOME_AVG10_PCT * margin or some.get("avg60", 0) >= PSI_MEM_SOME_AVG60_PCT * margin
            or full.get("avg10", 0) >= PSI_MEM_FULL_AVG10_PCT * margin)


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
            yield (present if memory_pressure_high(psi) else absent)("memory.pressure", text, psi=psi)
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
            except (OSError, NotCaptured):  # gone since, or not in the capture: that process only
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
    except (OSError, NotCaptured):  # the process is gone, or the capture lacks its status
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
                  f"{fmt_bytes(g['rss_bytes'])} (its peak) after {fmt_duration(g['age_s'])}: as if it had grown so all its life"
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
            except (OSError, NotCaptured):
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
