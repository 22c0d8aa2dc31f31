"""The cgroups the memory-area scenarios confine their workloads in: one controller (memory or
pids), cgroup v1 or v2, named after the sandbox and recorded in it, so teardown (and the next
staging, for a killed run) kills what is left inside and removes it.

Where: cgroup v2 at the root of the unified hierarchy when the controller is enabled for its
children (``cgroup.subtree_control``); else the v1 hierarchy of the controller, under this
process's own cgroup there (``/proc/self/cgroup``), so a delegated sub-tree works too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from prodx.lab.sandbox import BASE_DIR, PREFIX, LabError, Sandbox, remove_cgroup
from prodx.probes.cgroups import parse_cgroup_mounts, parse_flat_keyed, parse_proc_cgroup

#: How deep below a hierarchy's mount point a lab cgroup can sit (v1 under our own cgroup).
_SWEEP_DEPTH = 4


@dataclass
class LabCgroup:
    """One cgroup a scenario made, of one controller, v1 or v2."""

    path: Path
    version: int
    controller: str

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    def write(self, name: str, value: int | str) -> None:
        (self.path / name).write_text(str(value))

    def read(self, name: str) -> str:
        return (self.path / name).read_text()

    def has(self, name: str) -> bool:
        return (self.path / name).exists()

    def counters(self, name: str) -> dict[str, int]:
        """A flat keyed file (memory.events, memory.oom_control, pids.events)."""
        return parse_flat_keyed(self.read(name))

    def pids(self) -> list[int]:
        try:
            return [int(x) for x in self.read("cgroup.procs").split()]
        except OSError:
            return []

    def remove(self) -> None:
        remove_cgroup(self.path)


def cgroup_base(controller: str, version: int | None = None) -> tuple[Path | None, int, str]:
    """Where a child cgroup of ``controller`` can be made (v2 preferred unless ``version``
    says): (directory, version, "") or (None, 0, why not)."""
    try:
        mounts = parse_cgroup_mounts(Path("/proc/self/mountinfo").read_text())
        own = parse_proc_cgroup(Path("/proc/self/cgroup").read_text())
    except OSError as exc:
        return None, 0, f"cannot read the cgroup mounts ({exc})"
    if version in (None, 2) and "" in mounts:
        root = Path(mounts[""].mount)
        try:
            if controller in (root / "cgroup.subtree_control").read_text().split():
                return root, 2, ""
        except OSError:
            pass
    if version in (None, 1) and controller in mounts and controller in own:
        base = Path(mounts[controller].dir_of(own[controller]))
        if base.is_dir():
            return base, 1, ""
    why = []
    if version in (None, 2):
        why.append("cgroup v2 does not enable it for its children" if "" in mounts else "no cgroup v2 is mounted")
    if version in (None, 1):
        why.append(f"no v1 {controller} controller is mounted")
    return None, 0, f"needs a {controller} cgroup: " + "; ".join(why)


def cgroup_unmet(controller: str, version: int | None = None) -> str | None:
    """Why no ``controller`` cgroup (of ``version``) can be made here, or None."""
    base, _version, why = cgroup_base(controller, version)
    if base is None:
        return why
    if not os.access(base, os.W_OK):
        return f"cannot create cgroups under {base}"
    return None


def make_cgroup(sb: Sandbox, controller: str, version: int | None = None) -> LabCgroup:
    """A fresh ``controller`` cgroup named after the sandbox; LabError when none can be had."""
    base, got, why = cgroup_base(controller, version)
    if base is None:
        raise LabError(why)
    return LabCgroup(sb.make_cgroup(base), got, controller)


def remove_stale_cgroups() -> list[Path]:
    """Remove lab cgroups whose sandbox directory no longer exists, in every hierarchy (a run
    killed before its sandbox recorded them, or made under another session's cgroup); the
    ones removed."""
    try:
        mounts = parse_cgroup_mounts(Path("/proc/self/mountinfo").read_text())
    except OSError:
        return []
    removed = []
    for point in sorted({h.mount for h in mounts.values()}):
        for d in _lab_dirs(Path(point), _SWEEP_DEPTH):
            if not (BASE_DIR / d.name).exists():
                remove_cgroup(d)
                removed.append(d)
    return removed


def _lab_dirs(top: Path, depth: int) -> list[Path]:
    found = []
    try:
        children = [c for c in top.iterdir() if c.is_dir() and not c.is_symlink()]
    except OSError:
        return found
    for c in children:
        if c.name.startswith(PREFIX):
            found.append(c)
        elif depth > 1:
            found += _lab_dirs(c, depth - 1)
    return found
