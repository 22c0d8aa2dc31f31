"""Memory cgroups of the app's services, v1 and v2 alike: their limits, the OOMs the kernel
counted at them or logged for them, and a cgroup thrashing at its limit.

Reads (through ``prodx.probes.cgroups``: ``/proc/self/mountinfo``, ``/proc/PID/cgroup`` of the
profile's services, every process's without a profile) each memory cgroup's files:

- v2: ``memory.max`` (``536870912`` or ``max``), ``memory.current``, ``memory.peak``,
  ``memory.events`` / ``memory.events.local`` (``max 12`` / ``oom 1`` / ``oom_kill 1``),
  ``memory.swap.max``, ``memory.swap.current``;
- v1: ``memory.limit_in_bytes`` (``9223372036854771712``: none), ``memory.usage_in_bytes``,
  ``memory.max_usage_in_bytes``, ``memory.failcnt``, ``memory.oom_control``
  (``oom_kill_disable 0`` / ``under_oom 0`` / ``oom_kill 1``, the last since Linux 4.13) and
  ``memory.memsw.*`` where swap is accounted;
- ``memory.stat`` twice ``CGROUP_SAMPLE_S`` apart (``pgmajfault``, v1 ``total_pgmajfault``)
  for a cgroup within 10 % of its limit;

and the kernel's memcg OOM lines that bear on now (``prodx.probes.oom``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from prodx.host.base import NotCaptured
from prodx.model import Finding, absent, present, unknown
from prodx.probes.base import Probe, ProbeContext
from prodx.probes.cgroups import cgroup_layout, cgroups_holding, parse_flat_keyed, parse_limit
from prodx.probes.oom import oom_kills
from prodx.probes.processes import runs_as
from prodx.units import fmt_bytes

#: A limited cgroup within this share of its limit is "at" it ...
CGROUP_FULL_SHARE = 0.9
#: ... and thrashes when its processes take this many major page faults a second (pages read
#: back from swap or re-read from files they were evicted from): 1 MiB/s with 4 KiB pages,
#: the threshold memory.swapping_in uses for the whole machine ...
CGROUP_MAJFAULTS_S = 256.0
#: ... over this sample.
CGROUP_SAMPLE_S = 0.4


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
