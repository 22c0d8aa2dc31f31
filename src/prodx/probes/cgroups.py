"""cgroups, v1 and v2 alike: where each controller's hierarchy is mounted, which cgroup each
process is in, and the flat files the memory and pids controllers keep.

Reads (through the host):

- ``/proc/self/mountinfo``: a v1 hierarchy per controller set
  (``35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory``) and the v2
  one (``41 31 0:38 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw``);
- ``cgroup.controllers`` at the root of the v2 hierarchy (``cpuset cpu io memory pids``): a
  controller bound to a v1 hierarchy is missing there;
- ``/proc/PID/cgroup`` of the processes examined: ``4:memory:/system.slice/php8.2-fpm.service``
  (v1), ``0::/system.slice/php8.2-fpm.service`` (v2).

A host can have both (a "hybrid" layout): each controller then lives in exactly one of them,
and a process's cgroup for it is read from that one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prodx.probes.base import ProbeContext

#: Hazard: cgroup v1 shows "no limit" as PAGE_COUNTER_MAX in bytes (9223372036854771712 on
#: x86-64) or pages, not as a word; anything this large is unlimited.
_V1_UNLIMITED = 1 << 60
#: Super options of a v1 cgroup mount that are not controllers (cgroups(7), cgroup-v1.rst).
_V1_MOUNT_OPTIONS = frozenset({"rw", "ro", "none", "noprefix", "xattr", "clone_children", "cpuset_v2_mode",
                               "favordynmods"})


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy: its version, mount point and the cgroup shown at that
    mount point (not "/" inside a cgroup namespace or a bind mount of a sub-tree)."""

    version: int
    mount: str
    root: str

    def dir_of(self, path: str) -> str:
        """The directory of cgroup ``path`` (as /proc/PID/cgroup or the kernel log name it).

        >>> Hierarchy(1, "/sys/fs/cgroup/memory", "/").dir_of("/system.slice/x.service")
        '/sys/fs/cgroup/memory/system.slice/x.service'
        >>> Hierarchy(2, "/sys/fs/cgroup", "/docker/e7b1").dir_of("/docker/e7b1/app")
        '/sys/fs/cgroup/app'
        >>> Hierarchy(2, "/sys/fs/cgroup", "/").dir_of("/")
        '/sys/fs/cgroup'
        """
        rel = path[len(self.root):] if self.root != "/" and path.startswith(self.root) else path
        return self.mount.rstrip("/") + "/" + rel.strip("/") if rel.strip("/") else self.mount


def parse_cgroup_mounts(mountinfo: str) -> dict[str, Hierarchy]:
    """The cgroup hierarchies in /proc/self/mountinfo: each v1 controller (``memory``,
    ``pids``, ``cpu`` ...) → its hierarchy, and ``""`` → the v2 hierarchy. Empty when no
    cgroup filesystem is mounted (a chroot, an old container).

    >>> m = parse_cgroup_mounts("35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\\n"
    ...                         "36 31 0:33 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\\n"
    ...                         "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\\n")
    >>> sorted(m), m["memory"], m[""].mount
    (['', 'cpu', 'cpuacct', 'memory'], Hierarchy(version=1, mount='/sys/fs/cgroup/memory', root='/'), '/sys/fs/cgroup/unified')
    """
    out: dict[str, Hierarchy] = {}
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        if tail[0] == "cgroup2":
            out.setdefault("", Hierarchy(2, fields[4], fields[3]))
        elif tail[0] == "cgroup":
            for option in tail[2].split(","):
                if option not in _V1_MOUNT_OPTIONS and "=" not in option:  # "name=systemd" has no controller
                    out.setdefault(option, Hierarchy(1, fields[4], fields[3]))
    return out


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


def parse_flat_keyed(text: str) -> dict[str, int]:
    """A cgroup "flat keyed" file (memory.events, memory.oom_control, pids.events).

    >>> parse_flat_keyed("low 0\\nhigh 0\\nmax 12\\noom 1\\noom_kill 1\\n")["oom_kill"]
    1
    """
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def parse_limit(text: str) -> int | None:
    """A cgroup limit (memory.max, pids.max, memory.limit_in_bytes): None for no limit
    ("max" in v2, PAGE_COUNTER_MAX in v1). ValueError when it is not a number.

    >>> parse_limit("max\\n"), parse_limit("33554432\\n"), parse_limit("9223372036854771712")
    (None, 33554432, None)
    """
    raw = text.strip()
    if raw == "max":
        return None
    value = int(raw)
    return None if value >= _V1_UNLIMITED else value


# ---- shared facts -------------------------------------------------------------------------


@dataclass(frozen=True)
class CgroupLayout:
    """The host's cgroup hierarchies and the controllers its v2 hierarchy offers."""

    hierarchies: dict[str, Hierarchy]
    v2_controllers: frozenset[str]

    def hierarchy_for(self, controller: str) -> Hierarchy | None:
        """Where ``controller`` lives: its v1 hierarchy, else the v2 one if it offers it."""
        if controller in self.hierarchies:
            return self.hierarchies[controller]
        if "" in self.hierarchies and controller in self.v2_controllers:
            return self.hierarchies[""]
        return None

    def dir_for(self, table: dict[str, str], controller: str) -> tuple[int, str] | None:
        """(version, directory) of the cgroup holding a process (its parsed /proc/PID/cgroup)
        for ``controller``; None when that controller is mounted nowhere or the table lacks it."""
        h = self.hierarchy_for(controller)
        key = "" if h is not None and h.version == 2 else controller
        if h is None or key not in table:
            return None
        return h.version, h.dir_of(table[key])


def cgroup_layout(ctx: ProbeContext) -> CgroupLayout:
    """The cgroup layout of the host, read once per run (OSError when mountinfo is unreadable)."""

    def compute() -> CgroupLayout:
        hierarchies = parse_cgroup_mounts(ctx.host.read_text("/proc/self/mountinfo"))
        offered: frozenset[str] = frozenset()
        if "" in hierarchies:
            try:
                offered = frozenset(ctx.host.read_text(hierarchies[""].mount.rstrip("/") + "/cgroup.controllers").split())
            except OSError:
                pass
        return CgroupLayout(hierarchies, offered)

    return ctx.fact("cgroup.layout", compute)


def process_cgroups(ctx: ProbeContext) -> dict[int, dict[str, str]]:
    """pid → parsed /proc/PID/cgroup for every process of the run's table that could be read
    (exited processes and, without root, hidden ones are left out), read once per run."""

    def compute() -> dict[int, dict[str, str]]:
        out = {}
        for p in ctx.processes():
            try:
                out[p.pid] = parse_proc_cgroup(ctx.host.read_text(f"/proc/{p.pid}/cgroup"))
            except OSError:
                continue
        return out

    return ctx.fact("cgroup.process_tables", compute)


def cgroups_holding(ctx: ProbeContext, procs: list[Any], controller: str) -> dict[tuple[int, str], list[str]]:
    """(version, cgroup directory) → names of the processes in it, for ``controller``, over
    ``procs`` (ProcessInfo). Empty when the controller is mounted nowhere or no process's
    /proc/PID/cgroup could be read."""
    layout = cgroup_layout(ctx)
    tables = process_cgroups(ctx)
    groups: dict[tuple[int, str], list[str]] = {}
    for p in procs:
        where = layout.dir_for(tables[p.pid], controller) if p.pid in tables else None
        if where is not None:
            names = groups.setdefault(where, [])
            if p.name not in names:
                names.append(p.name)
    return groups
